"""The `fs` part of an `esp32` bundle: the CCM's firmware files in a minimal archive, packed on the PC
(`ccm build --bundle`) and unpacked on the CCM as a stream.

    b"CCMFS1\\n", then per file: u16 name length, name (UTF-8, '/'-separated, relative), u32 size,
    the bytes; a name length of 0 ends it. Little-endian.
"""

import struct

from ccm.ota.steps import drain

MAGIC = b"CCMFS1\n"


class ArchiveError(Exception):
    pass


def pack(files):
    """bytes of an archive of {relative path: bytes}."""
    out = [MAGIC]
    for name in sorted(files):
        n = name.encode()
        out.append(struct.pack("<H", len(n)) + n + struct.pack("<I", len(files[name])))
        out.append(files[name])
    out.append(b"\0\0")
    return b"".join(out)


def _exact(read, n):
    data = read(n)  # whole at the first read, as a rule: no copy then
    while len(data) < n:
        chunk = read(n - len(data)) if data else None
        if not chunk:
            raise ArchiveError("the fs archive ends early")
        data += chunk
    return data


def unpack(read, open_out, chunk=512):
    """Read an archive through `read(n)`; `open_out(name)` gives a file to write each one to.
    Returns the names, in order."""
    return drain(unpack_steps(read, open_out, chunk))


def unpack_steps(read, open_out, chunk=512, readinto=None):
    """unpack() a chunk at a time: a generator that returns the names (the CCM paces it). `readinto(buf)`,
    when the source has it, reads the files' bytes into one buffer instead of a new piece each chunk."""
    buf = bytearray(chunk) if readinto is not None else None
    if _exact(read, len(MAGIC)) != MAGIC:
        raise ArchiveError("not a CCM fs archive")
    names = []
    while True:
        n = struct.unpack("<H", _exact(read, 2))[0]
        if not n:
            return names
        name = _exact(read, n).decode()
        if name.startswith("/") or ".." in name.split("/"):
            raise ArchiveError("unsafe path in the fs archive: %s" % name)
        size = struct.unpack("<I", _exact(read, 4))[0]
        with open_out(name) as f:
            while size:
                if buf is not None:
                    n = readinto(memoryview(buf)[: min(chunk, size)])
                    if not n:
                        raise ArchiveError("the fs archive ends early")
                    f.write(memoryview(buf)[:n])
                    size -= n
                else:
                    data = _exact(read, min(chunk, size))
                    f.write(data)
                    size -= len(data)
                yield
        names.append(name)
