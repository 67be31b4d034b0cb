"""The wall clock from SNTP (RFC 4330), for TLS: an ESP32 starts at 2000-01-01 after power-up and
MicroPython (since 1.22) checks certificate dates against it, so TLS cannot connect until it is set.

`await query("pool.ntp.org")` → seconds since 1970 (UTC). Non-blocking UDP polled from asyncio, so the
UART link is served while the answer is awaited.
"""

import struct

from ccm.compat import sleep_ms_async, ticks_diff, ticks_ms

NTP_TO_UNIX = 2208988800  # seconds from 1900-01-01 to 1970-01-01
VALID_AFTER = 1704067200  # 2024-01-01: a clock before this has not been set


class SntpError(Exception):
    pass


def request():
    """A client request: LI 0, version 4, mode 3; the rest zero."""
    return b"\x23" + b"\0" * 47


def parse(packet):
    """Seconds since 1970 from a server's answer (its transmit timestamp), or SntpError."""
    if len(packet) < 48:
        raise SntpError("short answer (%d bytes)" % len(packet))
    mode = packet[0] & 7
    stratum = packet[1]
    if mode not in (4, 5):
        raise SntpError("not a server answer (mode %d)" % mode)
    if stratum == 0:
        raise SntpError("the server refused (kiss-o'-death %s)" % packet[12:16])
    seconds = struct.unpack("!I", packet[40:44])[0]
    if seconds == 0:
        raise SntpError("the server sent no time")
    return seconds - NTP_TO_UNIX


async def query(server, timeout_ms=2000, dns=None):
    """Ask `server` ("host" or "host:port") for the time; seconds since 1970, or SntpError. `dns`: the
    DNS server to resolve the name through without blocking (ccm/dns.py)."""
    import socket

    host, _, port = server.rpartition(":") if ":" in server else (server, "", "123")
    if dns is not None:
        from ccm.dns import DnsError, resolve

        try:
            host = await resolve(host, dns)
        except DnsError as e:
            raise SntpError(str(e)) from None
    try:
        addr = socket.getaddrinfo(host, int(port or 123), 0, socket.SOCK_DGRAM)[0][-1]
    except (OSError, ValueError, IndexError) as e:
        raise SntpError("cannot resolve %s: %s" % (host, e)) from None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.sendto(request(), addr)
        t0 = ticks_ms()
        while True:
            try:
                return parse(s.recv(64))
            except OSError:  # nothing yet (EAGAIN), or ICMP port unreachable
                pass
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                raise SntpError("no answer from %s within %d ms" % (server, timeout_ms))
            await sleep_ms_async(20)
    finally:
        s.close()


async def set_clock(ccm, tries=0):
    """The CCM's clock over SNTP (Ccm.set_clock), retrying with back-off and saying why it waits: in
    Sys.GetInfo `faults` and, while the cloud waits for it, Cloud.Status to the host."""
    server = ccm.config.get("sntp.server")
    if not ccm.config.get("sntp.enable"):
        ccm.faults["clock"] = "time unknown and sntp.enable is false: TLS will refuse certificates"
        return False
    delay = 2000
    while True:
        try:
            ccm.board.set_clock(await query(server, dns=ccm.board.dns_server()))
            ccm.faults.pop("clock", None)
            return True
        except SntpError as e:
            why = "time unknown: SNTP %s: %s; TLS waits for the clock" % (server, e)
            if ccm.faults.get("clock") != why:
                ccm.faults["clock"] = why
                if ccm.mqtt is not None:
                    ccm.mqtt.last_error = why
                    ccm.link.notify("Cloud.Status", {"connected": False, "reason": why})
        tries -= 1
        if tries == 0:
            return False
        await sleep_ms_async(delay)
        delay = min(delay * 2, 60000)
