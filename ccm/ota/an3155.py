"""The STM32 system bootloader's USART protocol (ST AN3155), client side, sans-I/O.

Each operation is a generator that yields what it needs from the wire — `(WRITE, bytes)` or
`(READ, n, timeout_ms)` — and is sent back the bytes read. `AsyncDriver` runs one over an asyncio-style
stream, the CCM's UART; `ccm stm32` on a PC runs them blocking on its own port (bundle/stm32_tool.py,
`PortDriver`). The protocol lives here once.
"""

ACK = 0x79
NACK = 0x1F
SYNC = 0x7F

# AN3155 §2: command codes
GET = 0x00
GET_VERSION = 0x01
GET_ID = 0x02
READ_MEMORY = 0x11
GO = 0x21
WRITE_MEMORY = 0x31
ERASE = 0x43
EXTENDED_ERASE = 0x44
WRITE_PROTECT = 0x63
WRITE_UNPROTECT = 0x73
READOUT_PROTECT = 0x82
READOUT_UNPROTECT = 0x92
GET_CHECKSUM = 0xA1

WRITE = 0
READ = 1

ACK_MS = 1000  # a plain command's ACK
ERASE_PAGE_MS = 100  # per page: F1 datasheets give 40 ms max; sectors of F4 take up to 2 s each
MASS_ERASE_MS = 35000
WRITE_MS = 1000


class BootloaderError(Exception):
    pass


class Nack(BootloaderError):
    """The bootloader refused: bad address, bad checksum, protection, or an unknown command."""


class Timeout(BootloaderError):
    pass


def _addr(address):
    b = bytes([(address >> 24) & 0xFF, (address >> 16) & 0xFF, (address >> 8) & 0xFF, address & 0xFF])
    return b + bytes([b[0] ^ b[1] ^ b[2] ^ b[3]])


def _xor(data, seed=0):
    x = seed
    for b in data:
        x ^= b
    return x


def _ack(what, timeout_ms=ACK_MS):
    r = yield READ, 1, timeout_ms
    if r[0] == ACK:
        return
    if r[0] == NACK:
        raise Nack("NACK: %s" % what)
    raise BootloaderError("0x%02X instead of ACK: %s" % (r[0], what))


def _command(code, name):
    yield WRITE, bytes([code, code ^ 0xFF])
    yield from _ack("%s (0x%02X) refused" % (name, code))


_CRC_HI = None  # the CRC-32 byte table (poly 0x04C11DB7, MSB first) as 16-bit halves
_CRC_LO = None


def _crc_tables():
    """On the ESP32 a small int holds 31 bits: 32-bit CRC values would be heap-allocated longs at every
    step. Kept as two 16-bit halves, every value in the loop stays a small int."""
    global _CRC_HI, _CRC_LO
    if _CRC_HI is None:
        from array import array

        hi = array("H", bytes(512))
        lo = array("H", bytes(512))
        for i in range(256):
            h, l = i << 8, 0  # noqa: E741
            for _ in range(8):
                carry = h & 0x8000
                h = ((h << 1) & 0xFFFF) | (l >> 15)
                l = (l << 1) & 0xFFFF  # noqa: E741
                if carry:
                    h ^= 0x04C1
                    l ^= 0x1DB7  # noqa: E741
            hi[i] = h
            lo[i] = l
        _CRC_HI, _CRC_LO = hi, lo
    return _CRC_HI, _CRC_LO


def stm32_crc(data, crc=0xFFFFFFFF):
    """The STM32 CRC unit's CRC-32 (poly 0x04C11DB7, init all ones, MSB first) over little-endian
    32-bit words: what Get Checksum (0xA1) answers. Table-driven on 16-bit halves (see _crc_tables)."""
    th, tl = _crc_tables()
    h = (crc >> 16) & 0xFFFF
    l = crc & 0xFFFF  # noqa: E741
    for i in range(0, len(data) - 3, 4):
        for j in (3, 2, 1, 0):  # each word's most significant byte first
            x = (h >> 8) ^ data[i + j]
            h = (((h & 0xFF) << 8) | (l >> 8)) ^ th[x]
            l = ((l & 0xFF) << 8) ^ tl[x]  # noqa: E741
    return (h << 16) | l


class Info:
    """What Get / Get Version / Get ID told us."""

    def __init__(self):
        self.version = 0
        self.commands = b""
        self.pid = 0
        self.option = b""

    def has(self, code):
        return code in self.commands

    def erase_command(self):
        return EXTENDED_ERASE if self.has(EXTENDED_ERASE) else ERASE


def op_sync(retries=3, timeout_ms=500):
    """0x7F lets the bootloader measure the baud rate (AN3155 §2). A NACK means it already had it."""
    for _ in range(retries):
        yield WRITE, bytes([SYNC])
        try:
            r = yield READ, 1, timeout_ms
        except Timeout:
            continue
        if r[0] in (ACK, NACK):
            return
    raise Timeout("no answer to 0x7F after %d tries: is the host in its bootloader (BOOT0 high, reset)?" % retries)


def op_get(info):
    yield from _command(GET, "Get")
    n = (yield READ, 1, ACK_MS)[0]
    body = yield READ, n + 1, ACK_MS
    info.version = body[0]
    info.commands = bytes(body[1:])
    yield from _ack("Get end")


def op_get_version(info):
    yield from _command(GET_VERSION, "Get Version")
    body = yield READ, 3, ACK_MS
    info.option = bytes(body[1:])
    yield from _ack("Get Version end")


def op_get_id(info):
    yield from _command(GET_ID, "Get ID")
    n = (yield READ, 1, ACK_MS)[0]
    body = yield READ, n + 1, ACK_MS
    info.pid = body[0] << 8 | body[1]
    yield from _ack("Get ID end")


def op_read(address, n):
    """Read Memory (AN3155 §3.4): up to 256 bytes."""
    yield from _command(READ_MEMORY, "Read Memory")
    yield WRITE, _addr(address)
    yield from _ack("read address 0x%08X" % address)
    yield WRITE, bytes([n - 1, (n - 1) ^ 0xFF])
    yield from _ack("read length %d" % n)
    data = yield READ, n, ACK_MS
    return data


def op_write(address, data):
    """Write Memory (AN3155 §3.6): up to 256 bytes, padded with 0xFF to a multiple of 4."""
    if len(data) % 4:
        data = bytes(data) + b"\xff" * (4 - len(data) % 4)
    yield WRITE, bytes([WRITE_MEMORY, WRITE_MEMORY ^ 0xFF])
    # the frame is made while the command crosses the wire, not after its ACK: the XOR over 256 bytes is
    # the most a turnaround would do, and a flash is ~1,500 turnarounds
    n = len(data) - 1
    frame = bytes([n]) + bytes(data) + bytes([_xor(data, n)])
    yield from _ack("Write Memory (0x31) refused")
    yield WRITE, _addr(address)
    yield from _ack("write address 0x%08X" % address)
    yield WRITE, frame
    yield from _ack("write of %d bytes at 0x%08X" % (len(data), address), WRITE_MS)


def op_erase(info, pages):
    """Erase (0x43) or Extended Erase (0x44), whichever the bootloader lists; pages=None: mass erase."""
    code = info.erase_command()
    yield from _command(code, "Erase")
    if code == ERASE:
        if pages is None:
            yield WRITE, b"\xff\x00"
            yield from _ack("mass erase", MASS_ERASE_MS)
            return
        body = bytes([len(pages) - 1] + list(pages))
    else:
        if pages is None:
            yield WRITE, b"\xff\xff\x00"
            yield from _ack("mass erase", MASS_ERASE_MS)
            return
        n = len(pages) - 1
        body = bytes([n >> 8, n & 0xFF])
        for p in pages:
            body += bytes([p >> 8, p & 0xFF])
    yield WRITE, body + bytes([_xor(body)])
    yield from _ack("erase of %d pages" % len(pages), ERASE_PAGE_MS * len(pages) + ACK_MS)


def op_go(address):
    yield from _command(GO, "Go")
    yield WRITE, _addr(address)
    yield from _ack("go 0x%08X" % address)


def op_checksum(address, size):
    """Get Checksum (0xA1): the CRC the chip computes over [address, address+size)."""
    yield from _command(GET_CHECKSUM, "Get Checksum")
    yield WRITE, _addr(address)
    yield from _ack("checksum address")
    yield WRITE, _addr(size)
    yield from _ack("checksum size")
    yield from _ack("checksum computed", ERASE_PAGE_MS * 10)
    r = yield READ, 5, ACK_MS
    if _xor(r[:4]) != r[4]:
        raise BootloaderError("checksum reply corrupted")
    return r[0] << 24 | r[1] << 16 | r[2] << 8 | r[3]


def op_readout_unprotect():
    """Readout Unprotect: the chip mass-erases itself, ACKs twice, and resets."""
    yield from _command(READOUT_UNPROTECT, "Readout Unprotect")
    yield from _ack("readout unprotect", MASS_ERASE_MS)


def op_connect(info):
    """Sync, then Get, Get Version and Get ID into `info`."""
    yield from op_sync()
    yield from op_get(info)
    yield from op_get_version(info)
    yield from op_get_id(info)


def advance(op, value=None, error=None):
    """Move an operation on by one step: (True, its next request) or (False, its result).
    `value` answers its last READ; `error` (a Timeout) is raised inside it instead."""
    try:
        return True, (op.throw(error) if error else op.send(value))
    except StopIteration as e:
        return False, e.value


class AsyncDriver:
    """Runs operations over an asyncio stream (CCM side): read(n), write(b), drain()."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = b""

    async def run(self, op):
        value = error = None
        while True:
            more, step = advance(op, value, error)
            if not more:
                return step
            value = error = None
            if step[0] == WRITE:
                self.stream.write(step[1])
                await self.stream.drain()
            else:
                try:
                    value = await self._read(step[1], step[2])
                except Timeout as e:
                    error = e

    async def _read(self, n, timeout_ms):
        from ccm.compat import ticks_diff, ticks_ms

        t0 = ticks_ms()
        while len(self.buf) < n:
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise Timeout("the bootloader sent %d of %d bytes within %d ms" % (len(self.buf), n, timeout_ms))
            chunk = await _read_ms(self.stream, n - len(self.buf), left)
            if chunk:
                self.buf += chunk
        data = self.buf[:n]
        self.buf = self.buf[n:]
        return data

    async def discard_input(self, quiet_ms=20, limit_ms=1000):
        """Drop what is already on its way in until the line has been quiet for `quiet_ms`: after a reset
        the bootloader says nothing until it is synced, so any byte now is left from an earlier session
        (a reply still in flight when the CCM rebooted) and would be taken for the ACK of the sync."""
        from ccm.compat import ticks_diff, ticks_ms

        self.buf = b""
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < limit_ms:
            if not await _read_ms(self.stream, 256, quiet_ms):
                return


async def _read_ms(stream, n, ms):
    import asyncio

    try:
        if hasattr(asyncio, "timeout"):  # CPython 3.11: no task per read (a flash is ~1000 reads)
            async with asyncio.timeout(ms / 1000):
                return await stream.read(n)
        if hasattr(asyncio, "wait_for_ms"):
            return await asyncio.wait_for_ms(stream.read(n), ms)
        return await asyncio.wait_for(stream.read(n), ms / 1000)
    except asyncio.TimeoutError:
        return b""
