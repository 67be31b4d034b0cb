"""The virtual ESP32 ROM loader against the real esptool (--no-stub: the ROM's own protocol)."""

import os
import subprocess
import sys

import pytest

from sim.esp32_rom import VirtualEsp32Rom


def esptool(port, *args, attempts=7):
    cmd = [sys.executable, "-m", "esptool", "--port", port, "--baud", "115200", "--before", "no-reset"]
    cmd += ["--after", "no-reset", "--no-stub", "--connect-attempts", str(attempts), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def rom(tmp_path):
    with VirtualEsp32Rom(str(tmp_path / "flash.bin")) as r:
        yield r


def test_esptool_flash_id_write_verify_and_read(rom, tmp_path):
    data = os.urandom(150_000)
    (tmp_path / "blob.bin").write_bytes(data)
    ident = esptool(rom.path, "flash-id")
    assert ident.returncode == 0, ident.stderr
    assert "Detecting chip type... ESP32" in ident.stdout and "4MB" in ident.stdout
    assert "24:0a:c4:12:34:56" in ident.stdout
    w = esptool(rom.path, "write-flash", "0x10000", str(tmp_path / "blob.bin"))
    assert w.returncode == 0, w.stderr
    assert "Hash of data verified" in w.stdout  # esptool's own MD5 check through SPI_FLASH_MD5
    assert bytes(rom.flash[0x10000 : 0x10000 + len(data)]) == data
    v = esptool(rom.path, "verify-flash", "0x10000", str(tmp_path / "blob.bin"))
    assert v.returncode == 0 and "Verification successful" in v.stdout
    r = esptool(rom.path, "read-flash", "0x10000", "5000", str(tmp_path / "back.bin"))
    assert r.returncode == 0 and (tmp_path / "back.bin").read_bytes() == data[:5000]
    u = esptool(rom.path, "write-flash", "--no-compress", "0x300000", str(tmp_path / "blob.bin"))
    assert u.returncode == 0 and bytes(rom.flash[0x300000 : 0x300000 + len(data)]) == data  # FLASH_DATA path too


def test_a_rom_that_refuses_everything_is_reported(tmp_path):
    with VirtualEsp32Rom(str(tmp_path / "flash.bin"), nack=True) as rom:
        out = esptool(rom.path, "flash-id", attempts=1)
        assert out.returncode != 0
        assert "Failed to connect to Espressif device" in out.stdout + out.stderr


def test_bad_checksums_and_out_of_order_blocks_are_refused():
    import struct

    from sim.esp32_rom import FLASH_BEGIN, FLASH_DATA, RomCore

    core = RomCore(bytearray(b"\xff" * 65536))

    def call(op, data, chk=0):
        resp = core.handle(struct.pack("<BBHI", 0, op, len(data), chk) + data)[0]
        return resp[8 + len(resp) - 12 :][-4:]

    assert call(FLASH_DATA, struct.pack("<IIII", 4, 0, 0, 0) + b"abcd")[:2] == b"\x01\x06"  # no FLASH_BEGIN
    assert call(FLASH_BEGIN, struct.pack("<IIII", 1024, 1, 1024, 0))[:2] == b"\x00\x00"
    assert call(FLASH_DATA, struct.pack("<IIII", 4, 0, 0, 0) + b"abcd", 0x00)[:2] == b"\x01\x07"  # checksum
    good = 0xEF ^ ord("a") ^ ord("b") ^ ord("c") ^ ord("d")
    assert call(FLASH_DATA, struct.pack("<IIII", 4, 1, 0, 0) + b"abcd", good)[:2] == b"\x01\x06"  # sequence
    assert call(FLASH_DATA, struct.pack("<IIII", 4, 0, 0, 0) + b"abcd", good)[:2] == b"\x00\x00"
    assert bytes(core.flash[:4]) == b"abcd"
