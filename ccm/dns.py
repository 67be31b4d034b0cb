"""Names to addresses without blocking the event loop: a DNS query (RFC 1035, one A question) over
non-blocking UDP, polled from asyncio like SNTP. The port's getaddrinfo() blocks the whole loop while the
resolver waits — seconds with a slow or absent DNS server, while the UART's 2 KiB RX buffer fills in
180 ms at 115200 baud and the host's bytes are lost.

    ip = await resolve("broker.example.com", "192.168.1.1")     # Board.connect() does this first
"""

import struct

from ccm.board import is_address
from ccm.compat import random_bytes, sleep_ms_async, ticks_add, ticks_diff, ticks_ms

MAX_TTL_S = 300  # answers are kept this long at most (less when the record says so)
_cache = {}  # name -> (address, expiry in ticks_ms)


class DnsError(OSError):
    pass


def query(name, qid):
    """A recursive query for the A record of `name`."""
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        b = label.encode()
        if not 0 < len(b) < 64:
            raise DnsError("bad name: %s" % name)
        q += bytes((len(b),)) + b
    return q + b"\0" + struct.pack("!HH", 1, 1)


def _skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:  # a pointer ends the name
            return i + 2
        i += n + 1


def parse(msg, qid):
    """(address, ttl) from an answer to query `qid`; DnsError when it has none."""
    if len(msg) < 12:
        raise DnsError("short DNS answer")
    rid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    if rid != qid:
        raise DnsError("not our answer")
    rcode = flags & 15
    if rcode:
        raise DnsError("name not found" if rcode == 3 else "DNS server error %d" % rcode)
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    for _ in range(an):
        i = _skip_name(msg, i)
        rtype, _cls, ttl, n = struct.unpack("!HHIH", msg[i : i + 10])
        i += 10
        if rtype == 1 and n == 4:
            return "%d.%d.%d.%d" % tuple(msg[i : i + 4]), ttl
        i += n  # a CNAME: its A record follows
    raise DnsError("no address in the answer")


async def resolve(name, server, timeout_ms=3000, tries=2):
    """The IPv4 address of `name`, asking `server` ("ip" or "ip:port"); DnsError saying why not."""
    if is_address(name):
        return name
    hit = _cache.get(name)
    if hit is not None and ticks_diff(hit[1], ticks_ms()) > 0:
        return hit[0]
    import socket

    host, _, port = server.partition(":")
    addr = socket.getaddrinfo(host, int(port or 53), 0, socket.SOCK_DGRAM)[0][-1]  # an address: no lookup
    why = "no answer from %s" % server
    for _ in range(tries):
        qid = int.from_bytes(random_bytes(2), "big")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.sendto(query(name, qid), addr)
            t0 = ticks_ms()
            while ticks_diff(ticks_ms(), t0) < timeout_ms:
                try:
                    msg = s.recv(512)
                except OSError:  # nothing yet
                    await sleep_ms_async(20)
                    continue
                try:
                    ip, ttl = parse(msg, qid)
                except DnsError as e:
                    if str(e) == "not our answer":
                        continue
                    raise DnsError("%s: %s" % (name, e)) from None
                _cache[name] = (ip, ticks_add(ticks_ms(), min(ttl, MAX_TTL_S) * 1000))
                return ip
        finally:
            s.close()
    raise DnsError("cannot resolve %s: %s" % (name, why))
