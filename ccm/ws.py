"""WebSocket `/rpc` (RFC 6455; docs/protocol.md): one session, after ccm/http.py answered the upgrade.

Frames come in mos's envelope `{id, src, dst, method, params, tag}`; answers echo id and tag. This module
is all the server a module holds while a WebSocket client is connected: ccm/listener.py drops the HTTP
and Digest code meanwhile, so an OTA pushed over WebSocket (the longest session) has their heap on a
plain ESP32. Messages are bounded by `rpc.max_frame_size`; a frame, once started, must come within
`rpc.http.timeout_ms`.
"""

import asyncio
import struct

from ccm import rpc
from ccm.compat import wait_ms


async def session(reader, writer, router, caller, device_id, limit, timeout):
    """Serve the connection's messages until the client closes it or breaks the rules; then close it."""
    try:
        await _serve(reader, writer, router, caller, device_id, limit, timeout)
    except (OSError, EOFError, ValueError, IndexError, MemoryError):
        pass  # the client went away, or no heap for its connection: the link and the server go on
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass


async def _serve(reader, writer, router, caller, device_id, limit, timeout):
    while True:
        data = None
        try:
            data = await _receive(reader, writer, limit, timeout)
            if data is None:
                return
            msg = rpc.parse(data)
        except rpc.NoHeap as e:  # answered under its id, so the client can try again (smaller)
            rid = rpc.request_id(e.head or data)
            data = None
            await _send(writer, rpc.encode_error(rid, e.code, str(e))[:-1])
            continue
        except rpc.ParseError as e:
            await _send(writer, rpc.encode_error(None, rpc.PARSE_ERROR, str(e))[:-1])
            continue
        except MemoryError:  # no room elsewhere in this message: the connection stays, the sender is told
            rid = rpc.request_id(data)
            data = None
            await _send(writer, rpc.encode_error(rid, rpc.INTERNAL_ERROR, "out of memory for this message")[:-1])
            continue
        data = None  # an OTA chunk: not held while it is written
        if type(msg) is not dict:
            await _send(writer, rpc.encode_error(None, rpc.INVALID_REQUEST, "invalid request: expected an object")[:-1])
            continue
        reply = await router.answer(msg, caller, device_id)  # mos's envelope
        if reply is not None:
            await _send(writer, reply)


async def _receive(reader, writer, limit, timeout):
    """The next whole message (fragments joined), or None once the peer closed or broke the rules.
    Pings are answered here."""
    buf = b""
    while True:
        h = await reader.readexactly(2)  # a frame may be long in coming: WebSocket clients idle
        op = h[0] & 0x0F
        try:  # once it has started, the rest must come in time: a stalled frame holds a slot
            data = await wait_ms(_frame(reader, h, limit - len(buf)), timeout)
        except asyncio.TimeoutError:
            await _send(writer, struct.pack(">H", 1008), 8)  # close: policy violation
            return None
        if data is None:
            await _send(writer, struct.pack(">H", 1009), 8)  # too big: close, message too big
            return None
        if op == 8:  # close: answer it, and end
            await _send(writer, bytes(data[:2]), 8)
            return None
        if op == 9:
            await _send(writer, bytes(data), 10)
        elif op in (0, 1, 2):
            if h[0] & 0x80 and not buf:
                return data  # a whole message in one frame, as clients send them: no copy
            buf += data
            if h[0] & 0x80:
                return bytes(buf)
        elif op != 10:
            await _send(writer, struct.pack(">H", 1002), 8)  # an opcode RFC 6455 does not define
            return None


async def _frame(reader, h, room):
    """The payload of the frame whose first two bytes are `h`, unmasked in place (an OTA chunk is the
    largest thing held here); None when it is longer than `room`."""
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if h[1] & 0x80 else None
    if n > room:
        return None
    try:
        data = await _read(reader, n)
    except MemoryError:
        head = None
        while n:  # read past it in small pieces, so the next frame is found where it starts
            piece = await reader.readexactly(min(n, 64))
            if head is None:  # its first bytes name the request's id: the error goes back under it
                head = bytearray(piece)
                for i in range(len(head) if mask is not None else 0):
                    head[i] ^= mask[i & 3]
            n -= len(piece)
        raise rpc.NoHeap(head) from None
    if mask is not None:
        for i in range(n):
            data[i] ^= mask[i & 3]
    return data


async def _read(reader, n):
    """n bytes in one bytearray, read into place: MicroPython's readexactly joins the pieces as they
    come (each join a copy, all of them live at once)."""
    buf = bytearray(n)
    if not hasattr(reader, "readinto"):  # CPython's StreamReader
        buf[:] = await reader.readexactly(n)
        return buf
    mv = memoryview(buf)
    got = 0
    while got < n:
        k = await reader.readinto(mv[got:])
        if k == 0:
            raise EOFError
        got += k or 0  # None: nothing after all (a non-blocking socket)
    return buf


async def _send(writer, data, op=1):
    """One unmasked frame (a server's frames are never masked): text by default."""
    if type(data) is str:
        data = data.encode()
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | op, 127, n)
    writer.write(head + data)
    await writer.drain()
