"""The AN3155 client core and the chip table, with scripted bootloader replies. Portable (CPython + MicroPython)."""

from fwtest import raises

from ccm.ota import an3155 as bl
from ccm.ota.stm32_chips import FLASH_BASE, chip


def drive(op, replies):
    """Run an operation against canned replies; returns (bytes it wrote, its result)."""
    wrote = b""
    value = error = None
    while True:
        more, step = bl.advance(op, value, error)
        if not more:
            return wrote, step
        value = error = None
        if step[0] == bl.WRITE:
            wrote += step[1]
        elif len(replies) < step[1]:
            error = bl.Timeout("silence")
        else:
            value, replies = replies[: step[1]], replies[step[1] :]


A = bytes([bl.ACK])
N = bytes([bl.NACK])


def test_connect_reads_version_commands_and_pid():
    info = bl.Info()
    replies = A + A + bytes([11, 0x22, 0, 1, 2, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92]) + A
    replies += A + b"\x22\x00\x00" + A + A + b"\x01\x04\x10" + A
    wrote, _ = drive(bl.op_connect(info), replies)
    assert wrote == b"\x7f\x00\xff\x01\xfe\x02\xfd"
    assert (info.version, info.pid, info.erase_command()) == (0x22, 0x410, bl.ERASE)
    assert not info.has(bl.GET_CHECKSUM)


def test_sync_retries_on_silence_and_gives_up():
    wrote, _ = drive(bl.op_sync(), N)  # a NACK: already synced, fine
    assert wrote == b"\x7f"
    raises(bl.Timeout, drive, bl.op_sync(retries=2), b"")


def test_write_pads_to_four_and_checksums():
    wrote, _ = drive(bl.op_write(FLASH_BASE, b"\x01\x02\x03"), A + A + A)
    assert wrote == b"\x31\xce" + b"\x08\x00\x00\x00\x08" + b"\x03\x01\x02\x03\xff" + bytes([3 ^ 1 ^ 2 ^ 3 ^ 0xFF])
    e = raises(bl.Nack, drive, bl.op_write(FLASH_BASE, b"abcd"), A + N)
    assert "0x08000000" in str(e)


def test_erase_and_extended_erase_frames():
    info = bl.Info()
    info.commands = bytes([bl.ERASE])
    wrote, _ = drive(bl.op_erase(info, [0, 1, 2]), A + A)
    assert wrote == b"\x43\xbc" + b"\x02\x00\x01\x02" + bytes([2 ^ 0 ^ 1 ^ 2])
    wrote, _ = drive(bl.op_erase(info, None), A + A)
    assert wrote == b"\x43\xbc\xff\x00"
    info.commands = bytes([bl.EXTENDED_ERASE])
    wrote, _ = drive(bl.op_erase(info, [1, 0x102]), A + A)
    assert wrote == b"\x44\xbb" + b"\x00\x01\x00\x01\x01\x02" + bytes([0 ^ 1 ^ 0 ^ 1 ^ 1 ^ 2])


def test_read_and_checksum():
    wrote, data = drive(bl.op_read(0x1FFFF7E0, 2), A + A + A + b"\x80\x00")
    assert wrote == b"\x11\xee\x1f\xff\xf7\xe0\xf7\x01\xfe" and data == b"\x80\x00"
    crc = bytes([0xC7, 0x04, 0xDD, 0x7B])
    wrote, got = drive(bl.op_checksum(FLASH_BASE, 4), A + A + A + A + crc + bytes([crc[0] ^ crc[1] ^ crc[2] ^ crc[3]]))
    assert got == 0xC704DD7B


def test_stm32_crc_matches_the_crc_unit():
    assert bl.stm32_crc(b"\x00\x00\x00\x00") == 0xC704DD7B  # CRC unit reset value fed one zero word
    assert bl.stm32_crc(bytes(range(16))) == 0x081B46CA  # checked against stm32flash's own CRC (tests/test_stm32.py)
    assert bl.stm32_crc(bytes(range(8, 16)), bl.stm32_crc(bytes(range(8)))) == 0x081B46CA


def test_chip_table_layouts():
    f103 = chip(0x410)
    assert f103.flash_size == 128 * 1024 and f103.pages_covering(FLASH_BASE + 100, FLASH_BASE + 2049) == [0, 1, 2]
    f411 = chip(0x431)
    assert f411.flash_size == 512 * 1024
    assert f411.page_bounds(4) == (FLASH_BASE + 64 * 1024, 64 * 1024)
    assert f411.pages_covering(FLASH_BASE, FLASH_BASE + 70 * 1024) == [0, 1, 2, 3, 4]
    assert not f103.fits(FLASH_BASE, 129 * 1024) and f103.fits(FLASH_BASE + 1024, 127 * 1024)
    raises(KeyError, chip, 0x999)


async def test_async_driver_times_out_on_a_silent_bootloader_and_syncs_on_a_nack():
    from fwtest import uart_pair

    ccm_end, chip_end = uart_pair()
    drv = bl.AsyncDriver(ccm_end)
    try:
        await drv.run(bl.op_sync(retries=2, timeout_ms=30))
        raise AssertionError("no timeout")
    except bl.Timeout as e:
        assert "0x7F" in str(e)
    assert chip_end.rx.buf == b"\x7f\x7f"
    chip_end.write(bytes([bl.NACK]))  # already synced: a NACK is fine
    await drv.run(bl.op_sync(retries=1, timeout_ms=200))


async def test_input_left_from_an_earlier_session_is_discarded_before_the_sync():
    """A reboot mid-flash leaves replies in flight; taken for the sync's ACK they failed every retry."""
    from fwtest import uart_pair

    from ccm.compat import asyncio, sleep_ms_async

    ccm_end, chip_end = uart_pair()
    drv = bl.AsyncDriver(ccm_end)
    drv.buf = N * 3  # the old session's NACKs: some read already,
    chip_end.write(N * 20)  # some waiting in the UART,

    async def trickle():  # and some still on the wire
        for _ in range(3):
            await sleep_ms_async(5)
            chip_end.write(N * 4)

    asyncio.create_task(trickle())
    await drv.discard_input(quiet_ms=30)
    assert drv.buf == b"" and ccm_end.rx.buf == b""
    chip_end.write(A + A + bytes([1, 0x22, 0x00]) + A)  # sync ACK; Get: ACK, N=1, version 2.2, command 0x00
    await drv.run(bl.op_sync(retries=1, timeout_ms=200))
    info = bl.Info()
    await drv.run(bl.op_get(info))
    assert info.version == 0x22


def test_stm32_crc_allocates_nothing_per_word_on_micropython():
    """On the ESP32 a 32-bit CRC value is a heap long: 4 KiB hashed bit by bit allocated ~100 KB. Now
    nothing grows with the data (on a 32-bit MicroPython; CPython has no gc.mem_alloc to ask)."""
    import gc

    if not hasattr(gc, "mem_alloc"):
        return
    data = bytes(range(256)) * 16
    bl.stm32_crc(data[:4])  # the tables, once
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        bl.stm32_crc(data)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used < 256, used
