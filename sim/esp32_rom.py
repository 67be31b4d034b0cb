"""A virtual ESP32 in its ROM serial bootloader ("download mode"), enough for esptool `--no-stub`.

    with VirtualEsp32Rom("flash.bin") as rom:    # a 4 MiB flash file; rom.path is the pty
        esptool --port {rom.path} --before no-reset --no-stub write-flash 0x1000 firmware.bin

`RomCore` is the protocol, sans-I/O: SLIP frames in, SLIP frames out. Request: `00 op len(2) chk(4)
data`; response: `01 op len(2) value(4) data status(4)` where the ESP32 ROM's status is (0|1, error,
0, 0) — error 0x05 for an unknown command, 0x06 for a message out of sequence, 0x07 for a bad
checksum. Registers esptool reads (chip magic 0x00F01D83 at 0x40001000, the eFuse MAC and
revision words, the UART divider it derives the crystal from) answer like an ESP32-D0WD v1; the SPI
peripheral runs the "user command" esptool uses for the flash JEDEC ID (a 4 MiB Winbond, EF 40 16).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

from sim.ptydevice import PtyDevice

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

# esptool loader.py ESP_CMDS
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13

ERR_INVALID, ERR_FAILED, ERR_CHECKSUM, ERR_DEFLATE = 0x05, 0x06, 0x07, 0x0B

CHIP_MAGIC_ADDR, ESP32_MAGIC = 0x40001000, 0x00F01D83
EFUSE_BASE = 0x3FF5A000
UART_CLKDIV_REG = 0x3FF40014
SPI_BASE = 0x3FF42000
SPI_CMD_USR = 1 << 18
JEDEC_4MB = 0x1640EF  # Winbond (EF), 0x40 memory type, 0x16 = 2^22 bytes (RomCore.jedec: from the size)


def slip_encode(packet: bytes) -> bytes:
    return bytes([END]) + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + bytes([END])


class SlipDecoder:
    """Bytes in, whole packets out (frames between 0xC0 delimiters, escapes undone)."""

    def __init__(self, limit: int = 0x4000 + 64):
        self.buf = bytearray()
        self.inside = False
        self.esc = False
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        for b in data:
            if b == END:
                if self.inside and self.buf:
                    out.append(bytes(self.buf))
                self.buf.clear()
                self.inside = True
                self.esc = False
            elif not self.inside:
                continue  # noise between frames
            elif self.esc:
                self.buf.append(END if b == ESC_END else ESC if b == ESC_ESC else b)
                self.esc = False
            elif b == ESC:
                self.esc = True
            else:
                self.buf.append(b)
                if len(self.buf) > self.limit:
                    self.buf.clear()
                    self.inside = False
        return out


class RomCore:
    def __init__(self, flash: bytearray, mac: bytes = b"\x24\x0a\xc4\x12\x34\x56", magic: int = ESP32_MAGIC):
        self.flash = flash
        self.magic = magic  # another chip's magic makes esptool see that chip (wrong-chip tests)
        self.mac = mac
        # the flash chip's JEDEC id, as SPI RDID answers it: Winbond (EF), type 0x40, capacity 2^n bytes
        self.jedec = (len(flash).bit_length() - 1) << 16 | 0x40EF
        self.regs: dict[int, int] = {}
        self.slip = SlipDecoder()
        self.write: dict | None = None  # the FLASH_BEGIN/FLASH_DEFL_BEGIN in progress
        self.log: list[str] = []
        self.written = lambda: None  # told when a write is complete (esptool asks its MD5, or ends it)

    def feed(self, data: bytes) -> bytes:
        out = b""
        for pkt in self.slip.feed(data):
            for resp in self.handle(pkt):
                out += slip_encode(resp)
        return out

    def _reply(self, op, value=0, data=b"", error=0):
        status = bytes([1 if error else 0, error, 0, 0])
        body = data + status
        return struct.pack("<BBHI", 1, op, len(body), value) + body

    def handle(self, pkt: bytes) -> list[bytes]:
        if len(pkt) < 8 or pkt[0] != 0:
            return []
        _, op, size, chk = struct.unpack("<BBHI", pkt[:8])
        data = pkt[8:]
        if len(data) != size:
            return [self._reply(op, error=ERR_INVALID)]
        if op == SYNC:
            if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
                return [self._reply(op, error=ERR_INVALID)]
            return [self._reply(op, 0x20120707) for _ in range(8)]  # the ROM answers a SYNC eight times
        handler = {
            READ_REG: self._read_reg,
            WRITE_REG: self._write_reg,
            SPI_ATTACH: lambda d, c: 0,
            SPI_SET_PARAMS: lambda d, c: 0,
            FLASH_BEGIN: self._flash_begin,
            FLASH_DEFL_BEGIN: lambda d, c: self._flash_begin(d, c, deflate=True),
            FLASH_DATA: self._flash_data,
            FLASH_DEFL_DATA: self._flash_data,
            FLASH_END: self._flash_end,
            FLASH_DEFL_END: self._flash_end,
            SPI_FLASH_MD5: self._md5,
            READ_FLASH_SLOW: self._read_slow,
        }.get(op)
        if handler is None:
            self.log.append("unsupported 0x%02X" % op)
            return [self._reply(op, error=ERR_INVALID)]
        try:
            result = handler(data, chk)
        except RomError as e:
            self.log.append("error 0x%02X on 0x%02X: %s" % (e.code, op, e))
            return [self._reply(op, error=e.code)]
        if isinstance(result, bytes):
            return [self._reply(op, 0, result)]
        return [self._reply(op, result or 0)]

    # -- registers ------------------------------------------------------------------------------
    def _read_reg(self, data, chk):
        (addr,) = struct.unpack("<I", data[:4])
        if addr == CHIP_MAGIC_ADDR:
            return self.magic
        if addr == EFUSE_BASE + 4:  # MAC low 4 bytes
            return struct.unpack(">I", self.mac[2:6])[0]
        if addr == EFUSE_BASE + 8:  # CRC byte, MAC high 2 bytes
            return struct.unpack(">I", b"\x00\x00" + self.mac[0:2])[0]
        if addr == UART_CLKDIV_REG:
            return 40_000_000 // 115200  # esptool estimates the crystal from this: 40 MHz
        return self.regs.get(addr, 0)

    def _write_reg(self, data, chk):
        addr, value, mask, _delay = struct.unpack("<IIII", data[:16])
        self.regs[addr] = (self.regs.get(addr, 0) & ~mask) | (value & mask) if mask != 0xFFFFFFFF else value
        if addr == SPI_BASE and value & SPI_CMD_USR:
            self._spi_user_command()
        return 0

    def _spi_user_command(self):
        command = self.regs.get(SPI_BASE + 0x24, 0) & 0xFFFF
        w0 = SPI_BASE + 0x80
        if command == 0x9F:  # RDID
            self.regs[w0] = self.jedec
        elif command in (0x05, 0x35, 0x15):  # status registers: idle, not protected
            self.regs[w0] = 0
        self.regs[SPI_BASE] = self.regs[SPI_BASE] & ~SPI_CMD_USR  # done at once

    # -- flash ----------------------------------------------------------------------------------
    def _flash_begin(self, data, chk, deflate=False):
        erase_size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        if offset + erase_size > len(self.flash) or block_size == 0 or block_size > 0x4000:
            raise RomError(ERR_FAILED, "region beyond the flash")
        if erase_size:
            self.flash[offset : offset + erase_size] = b"\xff" * erase_size  # the ROM erases up front
        z = zlib.decompressobj() if deflate else None
        self.write = {"offset": offset, "blocks": blocks, "size": block_size, "seq": 0, "pos": offset, "z": z}
        self.log.append("begin 0x%X erase %d" % (offset, erase_size))
        return 0

    def _flash_data(self, data, chk):
        if self.write is None:
            raise RomError(ERR_FAILED, "data without a begin")
        size, seq = struct.unpack("<II", data[:8])
        payload = data[16:]
        if len(payload) != size:
            raise RomError(ERR_INVALID, "length")
        x = 0xEF
        for b in payload:
            x ^= b
        if x != chk:
            raise RomError(ERR_CHECKSUM, "checksum 0x%02X, expected 0x%02X" % (chk, x))
        w = self.write
        if seq != w["seq"]:
            raise RomError(ERR_FAILED, "block %d out of sequence (%d expected)" % (seq, w["seq"]))
        if w["z"] is not None:
            try:
                payload = w["z"].decompress(payload)
            except zlib.error as e:
                raise RomError(ERR_DEFLATE, str(e)) from None
        else:
            payload = payload[: w["size"]]
        if w["pos"] + len(payload) > len(self.flash):
            raise RomError(ERR_FAILED, "write beyond the flash")
        self.flash[w["pos"] : w["pos"] + len(payload)] = payload
        w["pos"] += len(payload)
        w["seq"] += 1
        return 0

    def _flash_end(self, data, chk):
        self.write = None
        self.written()
        return 0

    def _md5(self, data, chk):
        self.written()  # esptool verifies what it wrote: it is on the flash file from now on
        addr, size = struct.unpack("<II", data[:8])
        if addr + size > len(self.flash):
            raise RomError(ERR_FAILED, "beyond the flash")
        return hashlib.md5(self.flash[addr : addr + size]).hexdigest().encode()

    def _read_slow(self, data, chk):
        addr, size = struct.unpack("<II", data[:8])
        if size > 64 or addr + size > len(self.flash):
            raise RomError(ERR_FAILED, "read beyond the flash")
        return bytes(self.flash[addr : addr + size]).ljust(64, b"\xff")


class RomError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class VirtualEsp32Rom(PtyDevice):
    """The ROM loader on a pty, over a flash file (created `size` bytes of 0xFF when missing: 4, 8 or 16 MB;
    esptool reads the size from the chip's JEDEC id, as MicroPython >= 1.26 does at boot)."""

    name = "virtual ESP32 ROM"

    def __init__(self, flash_path: str, size: int = 4 * 1024 * 1024, nack: bool = False, magic: int = ESP32_MAGIC):
        super().__init__()
        self.flash_path = flash_path
        if not os.path.exists(flash_path):
            with open(flash_path, "wb") as f:
                f.write(b"\xff" * size)
        with open(flash_path, "rb") as f:
            self.flash = bytearray(f.read())
        self.core = RomCore(self.flash, magic=magic)
        self.core.written = self.save  # the file holds what was flashed as soon as it is: `ccm sim ccm
        # --flash FILE` can boot it while this ROM still runs (it used to be written only at stop)
        self.nack = nack  # a broken ROM: every command fails "failed to act"

    def on_bytes(self, data: bytes) -> None:
        if self.nack:
            out = b""
            for pkt in self.core.slip.feed(data):
                if len(pkt) >= 8:
                    out += slip_encode(self.core._reply(pkt[1], error=ERR_FAILED))
        else:
            out = self.core.feed(data)
        self.send(out)

    def save(self) -> None:
        with open(self.flash_path + ".tmp", "wb") as f:
            f.write(self.flash)
        os.replace(self.flash_path + ".tmp", self.flash_path)

    def stop(self) -> None:
        super().stop()
        self.save()
