"""`ccm build` and `ccm flash` through the real esptool into the virtual ESP32 ROM, and the built .mpy
firmware loaded on real MicroPython."""

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_micropython import run_on_micropython

from pc.fwimage import FS_OFFSET, Partition, module_filesystem, pack_partition_table, read_littlefs
from sim.esp32_rom import VirtualEsp32Rom

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def ccm(*args):
    """`ccm ARGS` (absolute paths) from a scratch folder: `ccm flash` keeps the passwords it gives in
    ./ccm-devices.csv."""
    return subprocess.run(
        [sys.executable, "-m", "bundle.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        cwd=tempfile.gettempdir(),
    )


# MicroPython's ESP32 partition tables (ports/esp32/partitions-*.csv): ESP32_GENERIC and ESP32_GENERIC-OTA
STOCK = [Partition("nvs", 1, 2, 0x9000, 0x6000), Partition("phy_init", 1, 1, 0xF000, 0x1000)]
STOCK += [Partition("factory", 0, 0, 0x10000, 0x1F0000)]
OTA = [Partition("nvs", 1, 2, 0x9000, 0x4000), Partition("otadata", 1, 0, 0xD000, 0x2000)]
OTA += [Partition("phy_init", 1, 1, 0xF000, 0x1000), Partition("ota_0", 0, 0x10, 0x10000, 0x180000)]
OTA += [Partition("ota_1", 0, 0x11, 0x190000, 0x180000)]


def fake_micropython(path, size=300_000, table=STOCK):
    """An ESP32 image as MicroPython ships it for 0x1000 (header 0xE9, its banner, its partition table at
    0x8000); the other bytes are filler: the real one cannot be downloaded here, and the flasher only
    needs to recognise it, read its layout and move it."""
    header = bytes([0xE9, 3, 2, 0x20]) + struct.pack("<I", 0x40080000) + bytes([0xEE]) + bytes(15)
    banner = b"MicroPython v1.26.1 on 2025-09-11; Generic ESP32 module with ESP32\x00"
    body = bytearray(header + banner + os.urandom(size - len(header) - len(banner)))
    body[0x7000:0x7C00] = pack_partition_table(table)
    path.write_bytes(bytes(body))
    return path.read_bytes()


def test_build_packs_every_module_as_mpy_with_the_factory_config(tmp_path):
    out = ccm(
        "build",
        "-o",
        str(tmp_path / "fs.bin"),
        "--config",
        "device.id=lamp-0042",
        "--config",
        "mqtt.server=b:1883",
        "--config",
        "mqtt.enable=true",
    )
    assert out.returncode == 0, out.stderr
    files = read_littlefs((tmp_path / "fs.bin").read_bytes())
    modules = {
        str(p.relative_to(ROOT).with_suffix(".mpy")) for p in (ROOT / "ccm").rglob("*.py") if p.name != "virtual.py"
    }
    assert modules <= set(files)
    assert {"boot.py", "main.py", "ccm/http.mpy"} <= set(files)
    assert all(files[m][:1] == b"M" for m in modules)  # .mpy magic
    conf = json.loads(files["conf0.json"])
    password = conf["rpc"]["auth"].pop("password")  # its own /rpc password (issue 22, item 1)
    assert conf.pop("ota") == {"pubkey": "ota.pub.pem", "require_signature": True}  # signed updates only (item 3)
    assert files["ota.pub.pem"].startswith(b"-----BEGIN PUBLIC KEY-----")
    assert conf == {"device": {"id": "lamp-0042"}, "mqtt": {"server": "b:1883", "enable": True}, "rpc": {"auth": {}}}
    assert len(password) == 16 and password in out.stdout  # printed for the label
    assert f"lamp-0042,admin,{password}," in (tmp_path / "ccm-devices.csv").read_text()  # and kept
    again = ccm(
        "build", "-o", str(tmp_path / "fs2.bin"), "--config", "device.id=lamp-0043", "--config", "wifi.ap.pass=auto"
    )
    conf2 = json.loads(read_littlefs((tmp_path / "fs2.bin").read_bytes())["conf0.json"])
    assert again.returncode == 0 and conf2["rpc"]["auth"]["password"] != password  # each module its own
    ap = conf2["wifi"]["ap"]["pass"]  # and with wifi.ap.pass=auto its own WPA2 password for the AP
    assert len(ap) == 12 and f"access point password (wifi.ap.pass): {ap}" in again.stdout
    assert len((tmp_path / "ccm-devices.csv").read_text().splitlines()) == 3  # the header and both
    opened = ccm("build", "-o", str(tmp_path / "fs3.bin"), "--config", "rpc.auth.open=true", "--unsigned")
    files3 = read_littlefs((tmp_path / "fs3.bin").read_bytes())
    assert "password" not in json.loads(files3["conf0.json"])["rpc"]["auth"] and "ota.pub.pem" not in files3
    assert opened.returncode == 0 and "/rpc password" not in opened.stdout and "WARNING: --unsigned" in opened.stderr
    nowhere = ccm("keys", "new", "-o", "/proc/no/key.pem")  # a user mistake: one line, what to do
    assert nowhere.returncode != 0 and nowhere.stderr.strip().endswith("Pick a writable path (-o)"), nowhere.stderr
    assert ccm("keys", "new", "-o", str(tmp_path / "k.pem")).returncode == 0
    again = ccm("keys", "new", "-o", str(tmp_path / "k.pem"))  # a key is never replaced
    assert again.returncode != 0 and "is not replaced" in again.stderr and "Traceback" not in again.stderr
    bad = ccm("build", "-o", str(tmp_path / "x.bin"), "--config", "mqtt.keep_alive=soon")
    assert bad.returncode != 0 and "mqtt.keep_alive must be a number" in bad.stderr
    bad = ccm("build", "-o", str(tmp_path / "x.bin"), "--config", "mqtt.nope=1")
    assert bad.returncode != 0 and "unknown key mqtt.nope" in bad.stderr


def test_the_built_firmware_runs_on_micropython(tmp_path):
    """The .mpy files from the image (not the source tree) load on MicroPython 1.27 and read conf0.json."""
    assert ccm("build", "-o", str(tmp_path / "fs.bin"), "--config", "device.id=from-flash").returncode == 0
    root = tmp_path / "flash"
    for name, data in read_littlefs((tmp_path / "fs.bin").read_bytes()).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (tmp_path / "probe.py").write_text(
        "import sys\nsys.path[:0] = ['/flash', '/flash/lib']\n"
        "import ccm.rpc, ccm.config, ccm.main\n"
        "assert ccm.rpc.__file__.endswith('.mpy'), ccm.rpc.__file__\n"
        "cfg = ccm.config.Config(ccm.main.factory_config('/flash/conf0.json'))\n"
        "d = ccm.rpc.Dispatcher()\n"
        "d.add('Sys.GetInfo', lambda p, c: {'device_id': cfg.get('device.id')})\n"
        "out = []\n"
        'for m in ccm.rpc.Framer().feed(b\'{"id":1,"method":"Sys.GetInfo"}\\n\'):\n'
        "    d.dispatch(m, out.append)\n"
        "print(out[0].decode())\n"
    )
    out = run_on_micropython("--no-ccm", "--dir", f"{root}=/flash", str(tmp_path / "probe.py"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith('{"id":1,"result":{"device_id":"from-flash"}}')


@pytest.fixture
def rom(tmp_path):
    with VirtualEsp32Rom(str(tmp_path / "flash.bin")) as r:
        yield r


def esptool(port, *args):
    cmd = [
        sys.executable,
        "-m",
        "esptool",
        "--port",
        port,
        "--before",
        "no-reset",
        "--after",
        "no-reset",
        "--no-stub",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_ccm_flash_writes_micropython_and_the_filesystem_and_esptool_agrees(rom, tmp_path):
    fw = fake_micropython(tmp_path / "micropython.bin")
    out = ccm(
        "--port",
        rom.path,
        "flash",
        "--no-reset",
        "--no-stub",
        "--firmware",
        str(tmp_path / "micropython.bin"),
        "--config",
        "device.id=lamp-7",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "written and verified" in out.stdout
    assert bytes(rom.flash[0x1000 : 0x1000 + len(fw)]) == fw
    fs = bytes(rom.flash[FS_OFFSET:])
    (tmp_path / "fs.bin").write_bytes(fs)
    v = esptool(
        rom.path, "verify-flash", "0x1000", str(tmp_path / "micropython.bin"), hex(FS_OFFSET), str(tmp_path / "fs.bin")
    )
    assert v.returncode == 0 and v.stdout.count("Verification successful") == 2, v.stdout[-1500:]
    r = esptool(rom.path, "read-flash", hex(FS_OFFSET), "8192", str(tmp_path / "head.bin"))
    assert r.returncode == 0 and (tmp_path / "head.bin").read_bytes() == fs[:8192]
    files = read_littlefs(fs)
    conf = json.loads(files["conf0.json"])
    assert conf["device"] == {"id": "lamp-7"} and len(conf["rpc"]["auth"]["password"]) == 16  # its own
    assert "ccm/main.mpy" in files


def test_ccm_flash_reports_bad_input_clearly(rom, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "notes.txt"))
    assert out.returncode != 0 and "not an ESP32 firmware image" in out.stderr
    out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "missing.bin"))
    assert out.returncode != 0 and "no such file" in out.stderr
    big = fake_micropython(tmp_path / "huge.bin", size=0x200000)
    out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "huge.bin"))
    assert out.returncode != 0 and "runs into the filesystem" in out.stderr
    assert bytes(rom.flash[0x1000:0x1010]) != big[:16]  # refused before writing anything
    out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--fs-only", "--erase")
    assert out.returncode != 0 and "needs esptool's flasher stub" in out.stderr


def test_a_rom_that_nacks_and_a_module_without_micropython_are_reported(tmp_path):
    from bundle.build import BuildError, build_fs, flash

    with VirtualEsp32Rom(str(tmp_path / "flash.bin")) as rom:  # blank: no partition table to find the fs by
        with pytest.raises(BuildError, match="no partition table on the module at 0x8000"):
            flash(rom.path, None, lambda size: build_fs(fs_size=size), reset=False, stub=False)
    with VirtualEsp32Rom(str(tmp_path / "flash2.bin"), nack=True) as rom:
        out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--fs-only", "--connect-attempts", "1")
        assert out.returncode != 0 and "no ESP32 answers on" in out.stderr


def test_build_merge_writes_one_full_image(tmp_path):
    fw = fake_micropython(tmp_path / "micropython.bin")
    out = ccm("build", "-o", str(tmp_path / "lamp.bin"), "--merge", str(tmp_path / "micropython.bin"))
    assert out.returncode == 0, out.stderr
    merged = (tmp_path / "lamp.merged.bin").read_bytes()
    assert merged[0x1000 : 0x1000 + len(fw)] == fw
    assert merged[FS_OFFSET:] == (tmp_path / "lamp.bin").read_bytes()


def test_two_commands_from_firmware_file_to_a_ccm_answering_on_its_uart(rom, tmp_path):
    """`ccm flash` into the virtual ESP32, then the module boots from that flash: the .mpy firmware on
    MicroPython, its UART on a pty, its identity from the factory config."""
    from host_lib import Host
    from sim.mpy_ccm import FlashBootedCcm

    fake_micropython(tmp_path / "micropython.bin")
    out = ccm(
        "--port",
        rom.path,
        "flash",
        "--no-reset",
        "--no-stub",
        "--firmware",
        str(tmp_path / "micropython.bin"),
        "--config",
        "device.id=lamp-0042",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rom.save()
    inits = []
    with FlashBootedCcm(rom.flash_path) as module, Host(module.path) as host:
        host.on("Sys.Init")(inits.append)
        assert "Sys.GetInfo" in host.call("RPC.List")
        info = host.call("Sys.GetInfo")
        assert (info["device_id"], info["arch"], info["mac"]) == ("lamp-0042", "wasm", "24:0A:C4:12:34:56")
        assert host.call("Sys.Reboot", {"delay_ms": 0}) is True
        import time

        deadline = time.monotonic() + 10
        while not inits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert inits and inits[0]["device_id"] == "lamp-0042"  # booted again, from the same flash


def call(module, method, params=None):
    """A call on a flash-booted module's UART, or None while it resets."""
    from host_lib import Host

    try:
        with Host(module.path) as h:
            return h.call(method, params, 5)
    except Exception:  # resetting
        return None


def test_a_self_update_runs_on_micropython_is_kept_by_a_commit_and_rolled_back_without_one(rom, tmp_path):
    """The module booted from its flash on MicroPython (a reset is a fresh interpreter on the files as they
    are then): an fs bundle changes what runs, OTA.Commit keeps it across reboots, and an update nobody
    commits is rolled back at its commit timeout — the old files run again and OTA.Status says so
    (issue 25, item 2)."""
    import time

    from bundle.build import fs_bundle
    from sim.mpy_ccm import FlashBootedCcm

    fake_micropython(tmp_path / "micropython.bin")
    key = str(tmp_path / "vendor.pem")
    assert ccm("keys", "new", "-o", key).returncode == 0
    args = ["--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "micropython.bin")]
    out = ccm(*args, "--config", "device.id=self-1", "--sign-key", key)
    assert out.returncode == 0 and "Updates must be signed with" in out.stdout, out.stderr
    rom.save()
    fs_bundle(str(tmp_path / "v2.zip"), "0.2.0", sign_key=key)
    fs_bundle(str(tmp_path / "v3.zip"), "0.3.0", sign_key=key)
    fs_bundle(str(tmp_path / "unsigned.zip"), "6.6.6")  # anyone's

    def runs(module, version, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = call(module, "Sys.GetInfo")
            if info and info["fw_version"] == version:
                return info
            time.sleep(0.2)
        raise AssertionError(f"{version} does not run: {call(module, 'Sys.GetInfo')}")

    with FlashBootedCcm(rom.flash_path) as module:
        runs(module, "0.1.0")
        out = ccm("--port", module.path, "ota", str(tmp_path / "unsigned.zip"))  # signed updates by default
        assert out.returncode != 0 and "signature" in out.stderr, out.stderr
        assert call(module, "Sys.GetInfo")["fw_version"] == "0.1.0" and module.resets == 0
        out = ccm("--port", module.path, "ota", str(tmp_path / "v2.zip"), "--commit-timeout", "60")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        runs(module, "0.2.0")  # the swapped-in files run, after a reset
        assert module.resets >= 1
        assert call(module, "OTA.Commit") is True
        resets = module.resets
        assert call(module, "Sys.Reboot", {"delay_ms": 0}) is True
        while module.resets == resets:
            time.sleep(0.05)
        runs(module, "0.2.0")  # kept
        out = ccm("--port", module.path, "ota", str(tmp_path / "v3.zip"), "--commit-timeout", "3")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        runs(module, "0.3.0")
        runs(module, "0.2.0")  # no OTA.Commit within 3 s: the 0.2.0 files are back and run
        st = call(module, "OTA.Status")
        assert st["installed"]["esp32"] == "0.2.0" and "rolled back: no OTA.Commit within 3 s" in st["message"], st


@pytest.mark.parametrize("table", ["ota", "stock"])
def test_an_app_update_is_switched_by_otadata_and_rolled_back_by_the_bootloader(rom, tmp_path, table):
    """MicroPython itself (an `app` part) on the module `ccm flash` made (issue 25, item 4). With
    ESP32_GENERIC-OTA's table the image goes into the next OTA slot and otadata selects it as NEW; the
    bootloader (the virtual ESP32's, reading otadata as ESP-IDF's does) boots it pending verification; no
    OTA.Commit in time -> the CCM boots the slot it came from, which is then marked valid; a committed one
    stays. With the stock table the bundle is refused before a byte is written, naming the build that can."""
    import time

    from ccm.board import otadata
    from pc import fwbundle
    from sim.mpy_ccm import FlashBootedCcm

    fake_micropython(tmp_path / "micropython.bin", table=OTA if table == "ota" else STOCK)
    key = str(tmp_path / "vendor.pem")
    assert ccm("keys", "new", "-o", key).returncode == 0
    args = ["--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "micropython.bin")]
    assert ccm(*args, "--config", "device.id=app-1", "--sign-key", key).returncode == 0
    rom.save()
    app = os.urandom(20000)
    (tmp_path / "app.bin").write_bytes(app)
    for v in ("1.27.0", "1.27.1"):
        fwbundle.create(
            str(tmp_path / f"{v}.zip"),
            "mp",
            "esp32",
            ["app:type=app,src=app.bin"],
            v,
            sign_keys=[key],
            src_dir=str(tmp_path),
        )

    def wait(cond, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    with FlashBootedCcm(rom.flash_path) as m:
        wait(lambda: call(m, "Sys.GetInfo"), "the first boot")
        out = ccm("--port", m.path, "ota", str(tmp_path / "1.27.0.zip"), "--commit-timeout", "4")
        if table == "stock":
            assert out.returncode != 0 and "no free OTA app slot" in out.stderr and "ESP32_GENERIC-OTA" in out.stderr
            assert m.app == "factory" and m.resets == 0
            return
        assert m.app == "ota_0" and out.returncode == 0, out.stderr
        wait(lambda: m.app == "ota_1" and call(m, "Sys.GetInfo"), "the boot into the new app")
        assert (m.parts_dir / "ota_1.bin").read_bytes()[: len(app)] == app  # written whole, in its slot
        assert max(e for e in m.otadata() if e)[1] == otadata.PENDING_VERIFY
        wait(lambda: m.app == "ota_0" and call(m, "Sys.GetInfo"), "no OTA.Commit: back to the old app")
        wait(
            lambda: [e for e in m.otadata() if e and e[1] == otadata.VALID],
            f"the old app marked valid: {m.otadata()} {m.output[-15:]}",
        )
        st = call(m, "OTA.Status")
        assert "rolled back" in st["message"] and "no OTA.Commit within 4 s" in st["message"], st
        out = ccm("--port", m.path, "ota", str(tmp_path / "1.27.1.zip"), "--commit-timeout", "30")
        assert out.returncode == 0, out.stderr
        wait(lambda: m.app == "ota_1" and call(m, "Sys.GetInfo"), "the boot into 1.27.1")
        assert call(m, "OTA.Commit") is True
        assert max(e for e in m.otadata() if e)[1] == otadata.VALID
        resets = m.resets
        assert call(m, "Sys.Reboot", {"delay_ms": 0}) is True
        wait(lambda: m.resets > resets and call(m, "Sys.GetInfo"), "a reboot")
        assert m.app == "ota_1"  # kept


def test_ccm_flash_takes_the_filesystem_ccm_build_made_with_its_settings(rom, tmp_path):
    """One ESP32 story (issue 27): the settings given to `ccm build` reach the module — `ccm flash --fs`
    writes that very image (password, keys, mqtt.server in it) instead of building another; one the
    module would not mount (another size) is refused in one line before anything is written."""
    fake_micropython(tmp_path / "micropython.bin")
    out = ccm(
        "build", "-o", str(tmp_path / "fs.bin"), "--config", "device.id=carried-1", "--config", "mqtt.server=b:1883"
    )
    assert out.returncode == 0, out.stderr
    small = ccm("build", "-o", str(tmp_path / "small.bin"), "--fs-size", "0x100000", "--unsigned")
    assert small.returncode == 0, small.stderr
    args = ["--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "micropython.bin")]
    bad = ccm(*args, "--fs", str(tmp_path / "small.bin"))
    assert bad.returncode != 0 and "this module mounts 2048 KiB there" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    both = ccm(*args, "--fs", str(tmp_path / "fs.bin"), "--config", "device.id=x")
    assert both.returncode != 0 and "leave out --config" in both.stderr
    out = ccm(*args, "--fs", str(tmp_path / "fs.bin"))
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) < 40, out.stdout  # a progress line, not esptool's thousands
    # read while the virtual ESP32 still runs: it writes its flash file once esptool verified the write
    _, _, files = module_filesystem(Path(rom.flash_path).read_bytes())
    conf = json.loads(files["conf0.json"])
    assert conf["device"]["id"] == "carried-1" and conf["mqtt"]["server"] == "b:1883"
    assert files == read_littlefs((tmp_path / "fs.bin").read_bytes())  # byte for byte what ccm build made


def test_booting_a_flash_without_the_firmware_is_explained(tmp_path):
    from sim.mpy_ccm import FlashBootedCcm

    (tmp_path / "blank.bin").write_bytes(b"\xff" * 0x400000)
    with pytest.raises(RuntimeError, match="no partition table at 0x8000"):
        FlashBootedCcm(str(tmp_path / "blank.bin"))


def test_wrong_chip_and_no_port_are_refused(tmp_path):
    with VirtualEsp32Rom(str(tmp_path / "s2.bin"), magic=0x000007C6) as rom:  # an ESP32-S2's chip magic
        out = ccm("--port", rom.path, "flash", "--no-reset", "--no-stub", "--fs-only", "--connect-attempts", "1")
        assert out.returncode != 0 and "has an ESP32-S2; the CCM firmware is built for the ESP32" in out.stderr
        assert bytes(rom.flash[FS_OFFSET : FS_OFFSET + 16]) == b"\xff" * 16
    out = ccm("flash", "--fs-only")
    assert out.returncode != 0 and "no port" in out.stderr


def test_build_frozen_writes_a_manifest_naming_real_packages_and_a_romfs_that_runs(tmp_path):
    """`ccm build --frozen`: the manifest is MicroPython's manifest language (include/package); each
    package it names is a real package under its base path. The romfs image holds the same code and runs
    on MicroPython's unix port from /rom, as a module runs it from its romfs partition."""
    out = ccm("build", "-o", str(tmp_path / "fs.bin"), "--frozen", str(tmp_path / "frozen"))
    assert out.returncode == 0, out.stderr
    frozen = tmp_path / "frozen"
    assert "manifest.py" in out.stdout and "romfs" in out.stdout
    seen = []

    def package(name, files=None, base_path=".", opt=None):
        assert (Path(base_path) / name / "__init__.py").exists(), (name, base_path)
        assert opt == 3
        seen.append(name)

    exec((frozen / "manifest.py").read_text(), {"include": lambda path: seen.append(path), "package": package})
    assert seen == ["$(PORT_DIR)/boards/manifest.py", "ccm"]
    assert not (frozen / "src/ccm/board/virtual.py").exists() and (frozen / "src/ccm/board/esp32.py").exists()

    from sim.mpy_unix import micropython_cmd

    code = "import ccm.main, ccm.http\nprint(ccm.main.__file__, ccm.http.__file__)\n"
    r = subprocess.run(micropython_cmd("192K", [], code, frozen / "ccm.romfs"), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["/rom/ccm/main.mpy", "/rom/ccm/http.mpy"]


def test_build_output_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    for args in (
        ["-o", str(tmp_path / "no/such/dir/fs.bin")],
        ["-o", str(tmp_path / "fs.bin"), "--frozen", str(tmp_path / "afile")],
    ):
        out = ccm("build", *args)
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("Error: cannot write ") and "writable" in out.stderr


def test_an_fs_bundle_s_files_report_its_version(tmp_path):
    """`ccm build --bundle … --version 0.2.0`: the files it carries say 0.2.0 in Sys.GetInfo once they
    run, not the source tree's FW_VERSION (issue 25)."""
    import zipfile

    from bundle.build import fs_bundle
    from ccm.ota import fsarchive
    from sim.mpy_unix import micropython_cmd

    fs_bundle(str(tmp_path / "fw.zip"), "0.2.0")
    with zipfile.ZipFile(tmp_path / "fw.zip") as z:
        assert json.loads(z.read("manifest.json"))["version"] == "0.2.0"
        fs = z.read("fs.bin")
    fsarchive.unpack(io.BytesIO(fs).read, lambda name: _create(tmp_path / "fs" / name))
    code = "import ccm\nprint(ccm.FW_VERSION)\n"
    r = subprocess.run(micropython_cmd("192K", [str(tmp_path / "fs")], code), capture_output=True, text=True)
    assert r.stdout.strip() == "0.2.0", r.stdout + r.stderr


def _create(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


@pytest.mark.parametrize(
    "mb,table,offset",
    [(8, STOCK, 0x200000), (16, STOCK, 0x200000), (4, OTA, 0x310000)],
    ids=["8MB", "16MB", "4MB-ota"],
)
def test_ccm_flash_puts_the_filesystem_where_micropython_mounts_it(tmp_path, mb, table, offset):
    """MicroPython >= 1.26 gives the filesystem everything after the last partition, to the end of the
    chip, and LittleFS refuses a superblock of any other size: a fixed 2 MiB at 0x200000 never booted on
    an 8 or 16 MB module, and lay inside ota_1 on the OTA layout (issue 26, item 1). `ccm flash` reads the
    layout from the image and the size from the chip; the virtual ESP32 mounts it as the module does."""
    from sim.mpy_ccm import FlashBootedCcm

    flash_bytes = mb << 20
    fake_micropython(tmp_path / "micropython.bin", table=table)
    with VirtualEsp32Rom(str(tmp_path / "flash.bin"), size=flash_bytes) as rom:
        args = ["--port", rom.path, "flash", "--no-reset", "--no-stub", "--firmware", str(tmp_path / "micropython.bin")]
        out = ccm(*args, "--config", "device.id=big-1")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        size = flash_bytes - offset
        assert f"{mb} MB flash, filesystem {size // 1024} KiB at {offset:#x}" in out.stdout
        rom.save()
    at, got, files = module_filesystem((tmp_path / "flash.bin").read_bytes())
    assert (at, got) == (offset, size) and json.loads(files["conf0.json"])["device"] == {"id": "big-1"}
    FlashBootedCcm(str(tmp_path / "flash.bin")).stop()  # found and mounted as the module would


def test_a_filesystem_of_the_wrong_size_is_refused_as_the_module_refuses_it(tmp_path):
    """What `ccm flash` wrote before: 2 MiB at 0x200000 on an 8 MB chip, where MicroPython mounts 6 MiB."""
    from bundle.build import build_fs
    from sim.mpy_ccm import FlashBootedCcm

    flash = bytearray(b"\xff" * (8 << 20))
    fw = fake_micropython(tmp_path / "micropython.bin")
    flash[0x1000 : 0x1000 + len(fw)] = fw
    fs = build_fs(fs_size=0x200000)
    flash[0x200000 : 0x200000 + len(fs)] = fs
    (tmp_path / "old.bin").write_bytes(flash)
    with pytest.raises(RuntimeError, match="it mounts 6144 KiB there on this 8 MB chip, and LittleFS refuses"):
        FlashBootedCcm(str(tmp_path / "old.bin"))


def test_build_merge_for_another_flash_size_and_a_mismatched_fs_size(tmp_path):
    fake_micropython(tmp_path / "micropython.bin", table=OTA)
    out = ccm(
        "build", "-o", str(tmp_path / "m.bin"), "--merge", str(tmp_path / "micropython.bin"), "--flash-size", "8MB"
    )
    assert out.returncode == 0, out.stderr
    assert "filesystem at 0x310000" in out.stdout and "for 8 MB of flash" in out.stdout
    merged = (tmp_path / "m.merged.bin").read_bytes()
    assert merged[0x310000:] == (tmp_path / "m.bin").read_bytes() and len(merged) == 8 << 20
    args = [
        "build",
        "-o",
        str(tmp_path / "n.bin"),
        "--merge",
        str(tmp_path / "micropython.bin"),
        "--fs-size",
        "0x200000",
    ]
    out = ccm(*args)
    assert (
        out.returncode != 0 and "LittleFS refuses any other size there" in out.stderr and "Traceback" not in out.stderr
    )
    fw = (tmp_path / "micropython.bin").read_bytes()
    (tmp_path / "app-only.bin").write_bytes(fw[:0x7000] + b"\xff" * 0xC00 + fw[0x7C00:])
    out = ccm("build", "-o", str(tmp_path / "a.bin"), "--merge", str(tmp_path / "app-only.bin"))
    assert out.returncode != 0 and "no partition table at 0x8000" in out.stderr
