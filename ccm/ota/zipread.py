"""Reading a zip archive from a file, one entry at a time, never whole in RAM (APPNOTE 6.3.6).

`entries(f, size)` lists the entries from the central directory (so entries written with a data
descriptor work too), each with its local header checked and its local extra field read (mos puts the
bundle signature there). `EntryReader(f, entry)` streams one entry's bytes: stored, or raw deflate
through MicroPython's `deflate` module (zlib on CPython), with the CRC-32 checked at the end.
"""

import binascii
import io
import struct

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
EOCD_SIG = b"PK\x05\x06"
STORED = 0
DEFLATED = 8
MAX_ENTRIES = 32  # a bundle has a manifest and a few parts; more is not a bundle


class ZipError(Exception):
    pass


class ZipEntry:
    def __init__(self, name, method, crc, csize, usize, offset):
        self.name = name
        self.method = method
        self.crc = crc
        self.csize = csize
        self.usize = usize
        self.offset = offset  # of the local header
        self.data_offset = 0
        self.extra = b""  # the local header's extra field

    def __repr__(self):
        return "ZipEntry(%r, method=%d, size=%d)" % (self.name, self.method, self.usize)


def _read_at(f, offset, n):
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise ZipError("truncated: %d bytes wanted at offset %d" % (n, offset))
    return data


def entries(f, size):
    """The archive's entries in local-header order (the first one is what the archive starts with)."""
    if size < 22:
        raise ZipError("not a zip file: %d bytes" % size)
    tail = _read_at(f, size - 22, 22)  # the EOCD of an archive without a comment (a bundle's)
    i = 0 if tail[:4] == EOCD_SIG else -1
    if i < 0:  # a comment follows it: look further back (a 1 KiB piece of heap, only then)
        tail_n = min(size, 22 + 1024)
        tail = _read_at(f, size - tail_n, tail_n)
        i = tail.rfind(EOCD_SIG)
    if i < 0:
        raise ZipError("not a zip file (no end of central directory): truncated?")
    count, cd_size, cd_offset = struct.unpack("<HII", tail[i + 10 : i + 20])
    if count > MAX_ENTRIES:
        raise ZipError("%d entries: more than a bundle has (%d)" % (count, MAX_ENTRIES))
    if cd_offset + cd_size > size:
        raise ZipError("central directory beyond the end of the file: truncated?")
    out = []
    pos = cd_offset
    for _ in range(count):
        h = _read_at(f, pos, 46)
        if h[:4] != CENTRAL_SIG:
            raise ZipError("bad central directory entry at offset %d" % pos)
        flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen = struct.unpack("<HHHHIIIHHH", h[8:34])
        offset = struct.unpack("<I", h[42:46])[0]
        if flags & 1:
            raise ZipError("encrypted entries are not supported")
        name = _read_at(f, pos + 46, nlen).decode()
        out.append(ZipEntry(name, method, crc, csize, usize, offset))
        pos += 46 + nlen + xlen + clen
    out.sort(key=lambda e: e.offset)
    for e in out:
        h = _read_at(f, e.offset, 30)
        if h[:4] != LOCAL_SIG:
            raise ZipError("%s: bad local header at offset %d" % (e.name, e.offset))
        nlen, xlen = struct.unpack("<HH", h[26:30])
        e.extra = _read_at(f, e.offset + 30 + nlen, xlen) if xlen else b""
        e.data_offset = e.offset + 30 + nlen + xlen
        if e.data_offset + e.csize > size:
            raise ZipError("%s: data beyond the end of the file: truncated?" % e.name)
        if e.method not in (STORED, DEFLATED):
            raise ZipError("%s: compression method %d is not supported (stored or deflate only)" % (e.name, e.method))
    return out


def extra_field(extra, header_id):
    """The data of one header id in a zip extra field (APPNOTE 4.5), or None."""
    i = 0
    while i + 4 <= len(extra):
        hid, n = struct.unpack("<HH", extra[i : i + 4])
        if hid == header_id:
            return extra[i + 4 : i + 4 + n]
        i += 4 + n
    return None


class _Slice(io.IOBase):
    """`n` bytes of `f` from `offset`, as a stream (what the inflater reads from)."""

    def __init__(self, f, offset, n):
        self.f = f
        self.pos = offset
        self.left = n

    def readinto(self, buf):
        n = min(len(buf), self.left)
        if n <= 0:
            return 0
        self.f.seek(self.pos)
        k = self.f.readinto(memoryview(buf)[:n]) or 0  # into place: no piece of heap per read
        self.pos += k
        self.left -= k
        return k

    def read(self, n):  # the file's own bytes object: one piece of heap a read, not three copies
        n = min(n, self.left)
        if n <= 0:
            return b""
        self.f.seek(self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        self.left -= len(data)
        return data


def _deflate():
    try:
        import deflate  # MicroPython >= 1.21

        return deflate
    except ImportError:
        return None


class _ZlibReader:
    def __init__(self, src, d):
        self.src = src
        self.d = d
        self.buf = b""

    def read(self, n):
        while len(self.buf) < n and not self.d.eof:
            chunk = self.src.read(1024)
            if not chunk:
                break
            self.buf += self.d.decompress(chunk)
        data = self.buf[:n]
        self.buf = self.buf[n:]
        return data


class EntryReader:
    """An entry's uncompressed bytes: `read(n)` until b"". The CRC-32 and the size are checked when the
    entry ends; a mismatch raises ZipError naming the entry."""

    def __init__(self, f, entry, wbits=15):
        self.entry = entry
        self.f = None
        d = _deflate() if entry.method == DEFLATED else None
        if d is not None:
            # MicroPython's inflater takes its input a byte at a time: from the file itself that is a
            # call in C; through _Slice it was a Python call, a seek and a read per byte. The file is
            # shared, so its position is kept here and set again before every read.
            self.f = f
            self.pos = entry.data_offset
            self.src = d.DeflateIO(f, d.RAW, wbits)
        else:
            src = _Slice(f, entry.data_offset, entry.csize)
            if entry.method == DEFLATED:
                import zlib

                src = _ZlibReader(src, zlib.decompressobj(-wbits))
            self.src = src
        self.crc = 0
        self.done = 0

    def readinto(self, buf):
        """read() into `buf` (a bytearray): the number of bytes, 0 at the end. A stored entry is read into
        place — checking and copying a part then takes no new piece of heap per chunk."""
        if self.f is not None or not isinstance(self.src, _Slice):  # deflated: the inflater makes its bytes
            data = self.read(len(buf))
            buf[: len(data)] = data
            return len(data)
        left = self.entry.usize - self.done
        if left <= 0:
            return 0
        mv = memoryview(buf)[: min(len(buf), left)]
        k = self.src.readinto(mv)
        if not k:
            raise ZipError("%s: ends at %d of %d bytes" % (self.entry.name, self.done, self.entry.usize))
        self._count(mv[:k])
        return k

    def _count(self, data):
        self.crc = binascii.crc32(data, self.crc)
        self.done += len(data)
        if self.done == self.entry.usize and (self.crc & 0xFFFFFFFF) != self.entry.crc:
            raise ZipError("%s: CRC-32 mismatch: the archive is corrupt" % self.entry.name)

    def read(self, n):
        left = self.entry.usize - self.done
        if left <= 0:
            return b""
        try:
            if self.f is not None:
                self.f.seek(self.pos)
                data = self.src.read(min(n, left))
                self.pos = self.f.tell()
            else:
                data = self.src.read(min(n, left))
        except (OSError, ValueError) as e:
            raise ZipError("%s: corrupt compressed data (%s)" % (self.entry.name, e)) from None
        if not data:
            raise ZipError("%s: ends at %d of %d bytes" % (self.entry.name, self.done, self.entry.usize))
        self._count(data)
        return data
