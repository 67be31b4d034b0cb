"""The virtual STM32 against the real tools (stm32flash, stm32loader), and the CCM re-flashing it end to end."""

import asyncio
import re
import subprocess

import pytest
import serial
from conftest import wait_until
from stm32loader.bootloader import Stm32Bootloader

from bundle.stm32_tool import PortDriver
from ccm.ota import an3155 as bl
from ccm.ota.stm32 import ImageDoesNotFit
from ccm.ota.stm32_chips import FLASH_BASE
from sim.ccm import VirtualCcm
from sim.stm32 import VirtualStm32, make_app_image

PROFILES = ["f103", "f411", "g071"]


def stm32flash(*args):
    return subprocess.run(["stm32flash", "-m", "8n1", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(params=PROFILES)
def mcu(request):
    with VirtualStm32(request.param) as m:
        m.reset(boot0=True)
        yield m


def test_stm32flash_writes_verifies_and_reads_back(mcu, tmp_path):
    image = make_app_image("2.0", 20 * 1024 + 100)
    (tmp_path / "fw.bin").write_bytes(image)
    w = stm32flash("-w", str(tmp_path / "fw.bin"), "-v", mcu.path)
    assert w.returncode == 0, w.stdout[-2000:] + w.stderr[-2000:]
    assert "Wrote and verified address" in w.stdout
    assert f"Device ID    : 0x{mcu.core.chip.pid:04x}" in w.stdout
    assert bytes(mcu.core.flash[: len(image)]) == image
    r = stm32flash("-r", str(tmp_path / "back.bin"), "-S", f"0x08000000:{len(image)}", mcu.path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.bin").read_bytes() == image
    erased = [e for e in mcu.core.events if e.startswith("erase ")]
    assert erased and "mass erase" not in mcu.core.events  # only the pages the image covers


def test_stm32flash_crc_matches_ours(tmp_path):
    """stm32flash computes the CRC itself on a chip without 0xA1: an independent check of stm32_crc."""
    with VirtualStm32("f103") as m:
        m.reset(boot0=True)
        image = make_app_image("1.0", 4096)
        m.core.flash[:4096] = image
        out = stm32flash("-C", "-S", "0x08000000:4096", m.path)
        assert out.returncode == 0, out.stderr
        crc = int(re.search(r"CRC\(0x08000000-0x08001000\) = 0x([0-9a-f]{8})", out.stdout + out.stderr).group(1), 16)
        assert crc == bl.stm32_crc(image)


def test_stm32flash_is_refused_by_a_readout_protected_chip(tmp_path):
    (tmp_path / "fw.bin").write_bytes(make_app_image("2.0", 2048))
    with VirtualStm32("f103", readout_protected=True) as m:
        m.reset(boot0=True)
        w = stm32flash("-w", str(tmp_path / "fw.bin"), m.path)
        assert w.returncode != 0
        assert bytes(m.core.flash[:16]) == b"\xff" * 16


def test_stm32loader_erases_writes_and_verifies(mcu):
    port = serial.Serial(mcu.path, 115200, timeout=5)
    loader = Stm32Bootloader(port, device_family=mcu.core.chip.family, verbosity=0)
    loader.reset_from_system_memory()
    loader.get()
    assert loader.get_id() == mcu.core.chip.pid
    image = make_app_image("3.0", 6 * 1024)
    if loader.extended_erase:
        loader.extended_erase_memory(mcu.core.chip.pages_covering(FLASH_BASE, FLASH_BASE + len(image)))
    else:
        loader.erase_memory(list(range(6)))
    loader.write_memory_data(FLASH_BASE, image)
    back = loader.read_memory_data(FLASH_BASE, len(image))
    loader.verify_data(back, image)
    assert bytes(back) == image
    port.close()


def test_nack_paths_of_the_virtual_bootloader():
    with VirtualStm32("f103") as m:
        m.reset(boot0=True)
        p = serial.Serial(m.path, 115200, timeout=2)
        d = PortDriver(p.fileno())
        info = bl.Info()
        d.run_blocking(bl.op_connect(info))
        p.write(b"\x11\x11")  # bad complement
        assert p.read(1) == bytes([bl.NACK])
        with pytest.raises(bl.Nack):
            d.run_blocking(bl.op_read(0x40000000, 4))  # no memory there
        with pytest.raises(bl.Nack):
            d.run_blocking(bl.op_write(FLASH_BASE + 2, b"abcd"))  # not aligned
        p.write(bytes([bl.WRITE_MEMORY, bl.WRITE_MEMORY ^ 0xFF]) + bl._addr(FLASH_BASE))
        assert p.read(2) == bytes([bl.ACK, bl.ACK])
        p.write(b"\x03abcd\x00")  # bad checksum
        assert p.read(1) == bytes([bl.NACK])
        d.run_blocking(bl.op_write(FLASH_BASE, b"\x00\x01\x02\x03"))
        with pytest.raises(bl.Nack):
            d.run_blocking(bl.op_write(FLASH_BASE, b"\xff\x00\xff\xff"))  # not erased: flash bits do not come back
        assert bytes(d.run_blocking(bl.op_read(0x1FFFF7E0, 2))) == b"\x80\x00"  # the flash size register: 128 KiB
        p.close()


# -- the CCM re-flashes the host ----------------------------------------------------------------

V1 = make_app_image("1.0", 64 * 1024, seed=1)
V2 = make_app_image("2.0", 64 * 1024, seed=2)


@pytest.fixture
def product(tmp_path):
    """A virtual STM32 running v1, wired to a virtual CCM: UART to USART, IO14 to BOOT0, IO27 to NRST."""
    mcu = VirtualStm32("f103").start()
    mcu.core.flash[: len(V1)] = V1
    mcu.reset(boot0=False)
    v = VirtualCcm({"device": {"id": "ccm-ota"}}, uart=mcu.path, fs_dir=str(tmp_path))
    v.board.wires[14] = mcu.set_boot0
    v.board.wires[27] = lambda level: mcu.set_reset(not level)  # NRST is active low
    v.start()
    (tmp_path / "v2.bin").write_bytes(V2)
    yield v, mcu, str(tmp_path / "v2.bin")
    v.stop()
    mcu.stop()


def update(v, path, size=None, progress=None, timeout=120):
    return v.run_coro(v.ccm.host_update.flash(path, FLASH_BASE, size or len(V2), progress), timeout)


def test_the_bootloader_runs_at_its_own_baud_rate_and_the_link_returns_to_its_own(product):
    """host.ota.stm32.uart.baud_rate was ignored: the bootloader ran at the JSON-RPC rate."""
    v, mcu, path = product
    v.config.set({"host": {"ota": {"stm32": {"uart": {"baud_rate": 57600}}}}})
    update(v, path)
    assert v.board.parity_log == ["E@57600", "N@115200"]


def test_boot0_is_held_low_from_boot_and_nrst_is_pulled_open_drain(product):
    """BOOT0 was left floating until the first update, and NRST driven push-pull against the host's
    own reset circuit."""
    v, mcu, path = product
    assert v.board.pins[14] == 0 and v.board.pin_modes[14] == "push-pull"
    update(v, path)
    assert v.board.pin_modes[27] == "open-drain" and v.board.pins[14] == 0


def test_ccm_reflashes_the_host_and_the_new_version_answers(product):
    v, mcu, path = product
    assert v.host_call("Sys.Info")["fw_version"] == "1.0"
    stages = []
    summary = update(v, path, progress=lambda stage, done, total: stages.append(stage))
    assert summary["host"]["fw_version"] == "2.0" and summary["host"]["arch"] == "stm32"
    assert summary["verified_by"] == "read-back" and summary["pages_erased"] == 64
    assert {"erase", "write", "verify"} <= set(stages)
    assert v.board.parity_log == ["E@115200", "N@115200"]
    assert bytes(mcu.core.flash[: len(V2)]) == V2 and mcu.boots[-1] == "app"
    info = v.call("Sys.GetInfo")
    assert info["host"]["info"]["fw_version"] == "2.0"


def test_blocks_of_ff_are_skipped_and_only_covered_pages_erased(product, tmp_path):
    v, mcu, _ = product
    sparse = bytearray(make_app_image("2.1", 8 * 1024))
    sparse[2048:6144] = b"\xff" * 4096
    (tmp_path / "sparse.bin").write_bytes(sparse)
    summary = update(v, str(tmp_path / "sparse.bin"), len(sparse))
    assert summary["pages_erased"] == 8 and summary["blocks_skipped"] == 16
    assert summary["host"]["fw_version"] == "2.1"
    assert mcu.core.flash[8 * 1024 : 9 * 1024] == V1[8 * 1024 : 9 * 1024]  # beyond the image: untouched


def test_host_reset_mid_write_is_retried_to_success(product):
    v, mcu, path = product
    hits = []

    def progress(stage, done, total):
        if stage == "write" and done >= total // 3 and not hits:
            hits.append(done)
            mcu.set_reset(True)  # someone presses the host's reset button; BOOT0 is still high
            mcu.set_reset(False)
        hits.append(stage) if stage == "retry" else None

    summary = update(v, path, progress=progress)
    assert "retry" in hits and summary["host"]["fw_version"] == "2.0"


def test_ccm_reboot_mid_flash_resumes_at_the_next_boot(product):
    v, mcu, path = product
    fired = []

    def progress(stage, done, total):
        if stage == "write" and done >= total // 2 and not fired:
            fired.append(done)
            v.ccm._schedule_reboot(0)  # the CCM loses power halfway through

    with pytest.raises(BaseException):  # noqa: B017 - the update is cut short by the reboot
        update(v, path, progress=progress, timeout=60)
    assert fired
    # the next boot flashes first, then reboots: the boot after it starts the network on a fresh heap
    done = lambda: v.board.boots >= 3 and bytes(mcu.core.flash[: len(V2)]) == V2  # noqa: E731
    wait_until(done, timeout=120, what="the resumed flash, and the boot after it")
    wait_until(lambda: v.host_call("Sys.Info")["fw_version"] == "2.0", what="the host running 2.0")


def test_image_larger_than_the_chip_is_refused_before_erasing(product, tmp_path):
    v, mcu, _ = product
    big = make_app_image("9.9", 200 * 1024)
    (tmp_path / "big.bin").write_bytes(big)
    with pytest.raises(ImageDoesNotFit, match="does not fit STM32F10xxx medium-density"):
        update(v, str(tmp_path / "big.bin"), len(big))
    assert not [e for e in mcu.core.events if e.startswith("erase")]
    wait_until(lambda: mcu.mode == "app")
    assert v.host_call("Sys.Info")["fw_version"] == "1.0"  # back to the old firmware, untouched


def test_garbage_image_boots_to_silence_and_the_bootloader_recovers_it(product, tmp_path):
    v, mcu, path = product
    junk = bytes((i * 7) & 0xFF for i in range(4096))
    (tmp_path / "junk.bin").write_bytes(junk)
    summary = update(v, str(tmp_path / "junk.bin"), len(junk))
    assert summary["host"] is None and mcu.mode == "silent"
    assert update(v, path)["host"]["fw_version"] == "2.0"


def test_calls_for_the_host_get_busy_while_it_is_flashed(product):
    v, mcu, path = product

    async def both():
        job = asyncio.ensure_future(v.ccm.host_update.flash(path, FLASH_BASE, len(V2)))
        while not v.ccm.router.host.busy and not job.done():  # the flash has the UART (not a fixed delay:
            await asyncio.sleep(0.005)  # on a loaded machine 0.3 s was sometimes before that)
        err = None
        try:
            await v.ccm.router.call("Sum", [1, 2])
        except Exception as e:  # noqa: BLE001
            err = e
        await job
        return err

    err = v.run_coro(both(), 120)
    assert getattr(err, "code", None) == -32004


# -- ccm stm32: the same flasher from a PC ---------------------------------------------------------


def ccm_stm32(port, *args):
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "bundle.cli", "--port", port, "stm32", *args, "--mode", "8n1", "--lines", "none"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_ccm_stm32_info_flash_read_erase(mcu, tmp_path):
    image = make_app_image("4.0", 12 * 1024 + 8)
    (tmp_path / "fw.bin").write_bytes(image)
    info = ccm_stm32(mcu.path, "info")
    assert info.returncode == 0 and f"0x{mcu.core.chip.pid:03X} {mcu.core.chip.name}" in info.stdout
    out = ccm_stm32(mcu.path, "flash", str(tmp_path / "fw.bin"))
    assert out.returncode == 0, out.stderr
    assert bytes(mcu.core.flash[: len(image)]) == image
    verified = "checksum" if mcu.core.p.crc else "read-back"
    assert f"verified by {verified}" in out.stdout
    back = ccm_stm32(mcu.path, "read", str(tmp_path / "back.bin"), "--size", str(len(image)))
    assert back.returncode == 0 and (tmp_path / "back.bin").read_bytes() == image
    assert ccm_stm32(mcu.path, "erase", "--pages", "0").returncode == 0
    assert bytes(mcu.core.flash[:16]) == b"\xff" * 16


def test_ccm_stm32_explains_a_silent_chip(tmp_path):
    with VirtualStm32("f103") as m:
        m.reset(boot0=False)  # running (no) application: the bootloader is not listening
        out = ccm_stm32(m.path, "info")
        assert out.returncode != 0
        assert "no answer to 0x7F" in out.stderr and "BOOT0" in out.stderr


def test_rts_dtr_wiring_and_polarity():
    from bundle.stm32_tool import RtsDtrLines

    class Port:
        rts = dtr = False

    p = Port()
    lines = RtsDtrLines(p)
    lines.boot0(True)
    lines.reset(False)
    assert (p.rts, p.dtr) == (False, True)  # pyserial's True drives the pin low
    swapped = RtsDtrLines(p, reset_line="rts", boot0_line="dtr")
    swapped.boot0(False)
    assert p.dtr is True


def test_only_changed_pages_are_rewritten_when_the_host_runs_what_we_flashed(product, tmp_path):
    v, mcu, path = product
    first = update(v, path)
    assert not first["incremental"]  # nothing recorded yet: the whole image
    v3 = bytearray(V2)
    for page in (5, 17, 40):
        v3[page * 1024 + 100 : page * 1024 + 104] = b"CCM!"
    (tmp_path / "v3.bin").write_bytes(v3)
    summary = update(v, str(tmp_path / "v3.bin"))
    assert summary["incremental"] and summary["pages_erased"] == 3 and summary["blocks_written"] == 12
    assert bytes(mcu.core.flash[: len(v3)]) == bytes(v3)
    assert summary["host"]["fw_id"] == __import__("hashlib").sha256(bytes(v3)).hexdigest()

    mcu.core.flash[2048:2052] = b"\x00\x00\x00\x00"  # someone else touched the chip: fw_id no longer ours
    mcu.reset(boot0=False)
    again = update(v, path)
    assert not again["incremental"] and again["pages_erased"] == 64
    assert bytes(mcu.core.flash[: len(V2)]) == V2
