"""Listening sockets on 127.0.0.1 for servers that run on the PC.

A server we write binds port 0 and reports the port it got. A program that cannot (mosquitto has no
port 0) is given a port outside the kernel's ephemeral range — where outgoing connections never take
one — and is started again on another when that port turns out to be taken: `listening_ports(pid)`
tells whether the port is really the process's own.
"""

from __future__ import annotations

import os
import random
import socket
import time


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def pick_port() -> int:
    """A port nothing listens on now, outside the ephemeral range (so no client socket takes it before
    the server binds it). Another server may still bind it first: start it with `listening_ports`."""
    lo, hi = _ephemeral_range()
    ranges = [(r0, r1) for r0, r1 in ((10000, lo - 1), (hi + 1, 65535)) if r1 - r0 > 100]
    for _ in range(200):
        r0, r1 = random.choice(ranges or [(lo, hi)])
        port = random.randint(r0, r1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise OSError("no free TCP port on 127.0.0.1")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes among /proc/net/tcp's LISTEN rows)."""
    inodes = set()
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return set()
    for fd in fds:
        try:
            link = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[3] == "0A" and p[9] in inodes:  # 0A: LISTEN
                        ports.add(int(p[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s") from None
            time.sleep(0.02)


def url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without USER:PASSWORD@, user, password) — None for what it does not carry. How the CLI,
    the sims and the cloud's clients are given a module's /rpc password or a broker's user."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url if "://" in url else "mqtt://" + url)
    if "@" not in parts.netloc:
        return url, None, None
    cred, _, host = parts.netloc.rpartition("@")
    user, sep, password = cred.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user) or None, unquote(password) if sep else None


def mqtt_settings(url: str) -> dict:
    """The CCM's mqtt.* for a broker URL: [mqtt://][USER:PASSWORD@]HOST:PORT (`ccm cloud add-device`
    prints one with the device's own user and password)."""
    from urllib.parse import urlsplit

    bare, user, password = url_credentials(url)
    out = {"enable": True, "server": urlsplit(bare if "://" in bare else "mqtt://" + bare).netloc}
    if user:
        out["user"] = user
        out["pass"] = password or ""
    return out
