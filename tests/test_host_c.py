"""host_lib/c, the C host library, and the lamp firmware built on it (issue 12).

On the PC: unit tests and a fuzz run under ASan/UBSan, strict builds for the PC and for Cortex-M3, the
same bytes on the wire as host_lib (Python), and the Linux lamp against a virtual CCM on real mosquitto.
On the virtual STM32: the firmware built with arm-none-eabi-gcc is flashed by stm32flash and by the
CCM's host OTA from a bundle, and the emulated Cortex-M3 runs it."""

import json
import os
import select
import shutil
import subprocess
import threading
import time

import pytest
import serial
from conftest import cloud_config, lamp_follows_the_cloud, unique_device, wait_until

from host_lib import Host
from sim import lamp_fw
from sim.ccm import VirtualCcm
from sim.stm32 import VirtualStm32

ROOT = os.getcwd()
LIB = os.path.join(ROOT, "host_lib", "c")
TESTS = os.path.join(ROOT, "tests", "c")
LAMP = str(lamp_fw.LAMP_DIR)
STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes"]
SANITIZE = ["-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def cc(out, *sources, flags=(), compiler="gcc"):
    cmd = [compiler, *STRICT, *flags, f"-I{LIB}", f"-I{LAMP}", *sources, "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr
    return str(out)


def needs_arm():
    assert shutil.which("arm-none-eabi-gcc"), "arm-none-eabi-gcc is missing: apt-get install gcc-arm-none-eabi"


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    lib = os.path.join(LIB, "ccm.c")
    return {
        "unit": cc(d / "test_ccm", lib, os.path.join(TESTS, "test_ccm.c"), flags=SANITIZE),
        "fuzz": cc(d / "fuzz_ccm", lib, os.path.join(TESTS, "fuzz_ccm.c"), flags=SANITIZE),
        "wire": cc(d / "wire_host", lib, os.path.join(TESTS, "wire_host.c"), flags=["-D_DEFAULT_SOURCE"]),
        "lamp": cc(
            d / "lamp-linux", lib, os.path.join(LAMP, "lamp.c"), os.path.join(LAMP, "main_linux.c"), flags=SANITIZE
        ),
    }


def test_unit_tests_pass_under_asan_and_ubsan(bins):
    r = subprocess.run([bins["unit"]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "all passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_input_never_crashes_or_stops_the_link(bins, seed):
    """Random, mutated, truncated, deeply nested, oversize and invalid UTF-8 input, split anyhow, into an
    exactly sized frame buffer: no ASan/UBSan report, every line written is valid JSON, and the link still
    answers a probe call after every case."""
    r = subprocess.run([bins["fuzz"], "60000", str(seed)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "60000 cases" in r.stdout


@pytest.mark.parametrize("flags", [[], ["-DCCM_ENABLE_DOUBLE=1"], ["-DCCM_MAX_METHODS=2", "-DCCM_OUT_CHUNK=1"]])
def test_builds_without_warnings_for_cortex_m3_and_as_cpp(tmp_path, flags):
    needs_arm()
    arm = ["-mcpu=cortex-m3", "-mthumb", "-Os", "-ffreestanding", "-c", *flags]
    cc(tmp_path / "ccm.o", os.path.join(LIB, "ccm.c"), flags=arm, compiler="arm-none-eabi-gcc")
    r = subprocess.run(  # the header is usable from C++ (Arduino sketches are C++)
        ["g++", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++", "-I", LIB, "-"],
        input='#include "ccm.h"\nint main() { struct ccm c; ccm_init(&c, 0, 0, 0, 0); return 0; }\n',
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_without_double_support_g_writes_null_and_ccm_arg_double_says_how_to_turn_it_on(tmp_path):
    """The default on an FPU-less core: %g still takes its argument (the next ones print right) and writes
    valid JSON; a call to ccm_arg_double stops the build with what to do."""
    prog = tmp_path / "nodbl.c"
    prog.write_text(
        '#include <stdio.h>\n#include "ccm.h"\n'
        "static int w(const char *b, int l, void *u) { (void)u; return (int)fwrite(b, 1, (size_t)l, stdout); }\n"
        "int main(void) { static char f[64]; static struct ccm c; ccm_init(&c, f, sizeof f, w, 0);\n"
        '  ccm_printf(&c, "[%g,%d,%Q]", 2.5, 7, "x"); return 0; }\n'
    )
    exe = cc(tmp_path / "nodbl", os.path.join(LIB, "ccm.c"), str(prog), flags=["-DCCM_ENABLE_DOUBLE=0"])
    assert subprocess.run([exe], capture_output=True, text=True).stdout == '[null,7,"x"]'
    call = tmp_path / "call.c"
    call.write_text(
        '#include "ccm.h"\nint f(const struct ccm_req *r, double *d) { return ccm_arg_double(r, "$", d); }\n'
    )
    r = subprocess.run(
        ["gcc", "-DCCM_ENABLE_DOUBLE=0", f"-I{LIB}", "-c", str(call), "-o", str(tmp_path / "call.o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "build with -DCCM_ENABLE_DOUBLE=1" in r.stderr, r.stderr


# -- the same bytes as host_lib (Python) and mjson -------------------------------------------------

SCRIPT = [
    '{"id":1,"method":"Sum","params":[2,3]}\n',  # the manual's frame, and its answer
    '{"id": 2, "method": "Sum", "params": [20, 22]}\r\n',
    '{"id":"x","method":"Echo","params":{"a":[1,2,{"b":null}],"s":"q\\"\\\\","t":true}}\n',
    '{"id":3,"method":"This_Function_Does_Not_Exist","params":true}\n',
    '{"id":4,"method":"RPC.List"}\n',
    '{"id":5,"method":"Sys.Info"}\n',
    '{"method":"Shadow.Delta","params":{"on":true}}\n',
    '{"method":"Nope"}\n',
    '{"id":6,"method":"Sum","params":[1,2]}{"id":7,"method":"Sum","params":[3,4]}\n',
    '{"id":8,"method":5}\n',
    '{"id":null,"method":"Sum","params":[0,0]}\n',
    "!pub t1 hello\n",
    '!report {"on":false,"level":3}\n',
    "!getinfo\n",
    "!sub cmd/+\n",
]


def run_python_host(script):
    """The script through host_lib on a pty: the bytes it sends back."""
    master, slave = os.openpty()
    host = Host(os.ttyname(slave), fw_version="1.0", arch="test", app="wire")
    host.export("Sum", lambda p: p[0] + p[1])
    host.export("Echo", lambda p: p)
    host.on("Shadow.Delta")(lambda p: host.shadow_report(p))
    got = bytearray()
    with host:
        for line in script:
            if line.startswith("!pub "):
                _, topic, message = line.split(maxsplit=2)
                host.mqtt_pub(topic, message.strip())
            elif line.startswith("!report "):
                host.shadow_report(json.loads(line[8:]))
            elif line.startswith("!getinfo"):  # no answer comes: only the request's bytes matter
                threading.Thread(target=_quiet, args=(host.call, "Sys.GetInfo", None, 0.3)).start()
            elif line.startswith("!sub "):
                threading.Thread(target=_quiet, args=(host.mqtt_sub, line[5:].strip())).start()
            else:
                os.write(master, line.encode())
            n = len(got)
            deadline = time.monotonic() + (0.3 if line.startswith('{"method":"Nope"') else 2)
            while time.monotonic() < deadline:
                if select.select([master], [], [], 0.05)[0]:
                    got += os.read(master, 4096)
                elif len(got) > n and got.endswith(b"\n"):
                    break
    os.close(master)
    return bytes(got)


def _quiet(fn, *args):
    """fn(*args), or None when it raises (a call nobody answers, a host still booting)."""
    try:
        return fn(*args)
    except Exception:
        return None


def test_c_host_sends_the_same_bytes_as_host_lib_and_the_manual(bins):
    c = subprocess.run([bins["wire"]], input="".join(SCRIPT), capture_output=True, text=True, timeout=30).stdout
    py = run_python_host(SCRIPT).decode()
    assert c.splitlines() == py.splitlines()
    # what the manual and mjson print for these frames
    assert c.startswith('{"id":1,"result":5}\n{"id":2,"result":42}\n')
    assert '{"id":3,"error":{"code":-32601,"message":"method not found"}}\n' in c
    assert '{"method":"Shadow.Report","params":{"on":true}}\n' in c
    assert '{"method":"MQTT.Pub","params":{"topic":"t1","message":"hello"}}\n' in c
    assert '{"id":8,"error":{"code":-32600,"message":"invalid request"}}\n' in c


# -- the Linux lamp against a virtual CCM and real mosquitto ---------------------------------------


class Lines:
    """A process's stdout lines, collected by a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, text, timeout=10):
        return wait_until(lambda: any(text in line for line in self.lines), timeout, f"{text!r} from the lamp")


def test_linux_lamp_on_host_lib_c_against_the_virtual_ccm(bins, mosquitto, shadow_service, cloud):
    device = unique_device()
    v = VirtualCcm(cloud_config(mosquitto.port, device)).start()
    p = subprocess.Popen([bins["lamp"], v.path, "1.4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = Lines(p)
        out.wait(f"talking to CCM {device}")
        wait_until(lambda: v.ccm.mqtt.state == 2, what="the CCM to connect to mosquitto")
        # the cloud calls the host's Sum (manual §6) and reads what it runs
        assert cloud.call(device, "Sum", [2, 3]) == 5
        assert v.host_call("Sys.Info") == {"fw_version": "1.4", "arch": "linux", "fw_id": "", "app": "lamp"}
        # the shadow and MQTT (the lamp subscribed to lamp/cmd at start)
        lamp_follows_the_cloud(cloud, v, device, out.wait, led_off="lamp: off (mqtt)")
    finally:
        p.terminate()
        p.wait(10)
        v.stop()
    assert p.returncode == 0, p.stderr.read()  # ASan/UBSan found nothing on the way


# -- the firmware on the virtual STM32 -------------------------------------------------------------


def build_lamp(tmp_path, version):
    needs_arm()
    return lamp_fw.build(version, tmp_path)


def test_prebuilt_images_are_what_the_sources_build(tmp_path):
    """`ccm demo` uses prebuilt/ where no ARM toolchain is installed: they must be these sources."""
    for version in ("1.0", "2.0"):
        built = build_lamp(tmp_path / version, version).read_bytes()
        assert built == (lamp_fw.PREBUILT / f"lamp-{version}.bin").read_bytes(), (
            f"examples/stm32-lamp/prebuilt/lamp-{version}.bin is stale: run `make -C examples/stm32-lamp prebuilt`"
        )


def test_stm32flash_writes_the_firmware_and_the_chip_runs_it(tmp_path):
    image = build_lamp(tmp_path, "1.7")
    with VirtualStm32("f103") as mcu:
        mcu.reset(boot0=True)
        w = subprocess.run(
            ["stm32flash", "-m", "8n1", "-w", str(image), "-v", mcu.path], capture_output=True, text=True, timeout=120
        )
        assert w.returncode == 0, w.stdout + w.stderr
        # the port is open before the firmware boots: pyserial flushes what arrived before it opened, and
        # under load the whole hello could come and go first
        port = serial.Serial(mcu.path, 115200, timeout=0.2)
        mcu.reset(boot0=False)  # the firmware boots: it asks the CCM who it is, then serves
        try:
            hello = b""
            deadline = time.monotonic() + 30  # a liveness bound, not a speed check
            while b"MQTT.Sub" not in hello:
                chunk = port.read(256)
                assert time.monotonic() < deadline and (chunk or len(hello) < 1000), hello
                hello += chunk
            assert hello.startswith(b'{"id":1,"method":"Sys.GetInfo"}\n')
            port.write(b'{"id":1,"method":"Sys.Info"}\n{"id":2,"method":"Sum","params":[40,2]}\n')
            got = b""
            while got.count(b"\n") < 2:
                got += port.read(256) or b""
            from pc import fwid

            stamped = fwid.fw_id(image.read_bytes())  # the build stamped it; the firmware reports it
            assert stamped and got == (
                b'{"id":1,"result":{"fw_version":"1.7","arch":"stm32","fw_id":"%s","app":"lamp"}}\n'
                b'{"id":2,"result":42}\n' % stamped.encode()
            )
            assert mcu.led is False
            port.write(b'{"method":"Shadow.Delta","params":{"on":true}}\n')
            assert port.readline() == b'{"method":"Shadow.Report","params":{"on":true,"brightness":100}}\n'
            assert mcu.led is True  # PC13 driven low
            assert mcu.cpu.sysclk() == 72_000_000  # its clock set-up ran: HSE x 9 through the PLL
        finally:
            port.close()


def test_an_image_that_faults_is_silent_and_the_bootloader_still_recovers_it(tmp_path):
    import struct

    good = build_lamp(tmp_path, "1.0").read_bytes()
    bad = struct.pack("<II", 0x20005000, 0x08000101) + b"\xff\xde" * 200  # reset vector into udf instructions
    with VirtualStm32("f103") as mcu:
        mcu.core.flash[: len(bad)] = bad
        mcu.reset(boot0=False)
        wait_until(lambda: mcu.cpu.crashed, what="the core to fault")
        port = serial.Serial(mcu.path, 115200, timeout=0.3)
        port.write(b'{"id":1,"method":"Sys.Info"}\n')
        assert port.read(100) == b""  # a faulted chip says nothing
        port.close()
        mcu.core.flash[: len(good)] = good  # as the bootloader would write it
        mcu.reset(boot0=False)
        assert mcu.cpu.crashed is None and mcu.mode == "app"


def test_ccm_host_ota_from_a_bundle_boots_the_new_firmware(tmp_path):
    """The product story on real code: v1 runs; v2 is built, bundled with the manual's command, pushed over
    WebSocket; the CCM flashes it through AN3155 and v2 boots and reports itself."""
    from test_ota import MANUAL, PROVISIONED, ccm

    (tmp_path / "FIRMWARE.BIN").write_bytes(build_lamp(tmp_path / "v2", "2.0").read_bytes())
    out = ccm("create-fw-bundle", *MANUAL, "--version", "2.0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    mcu = VirtualStm32("f103").start()
    v1 = build_lamp(tmp_path / "v1", "1.0").read_bytes()
    mcu.core.flash[: len(v1)] = v1
    mcu.reset(boot0=False)
    fs = tmp_path / "ccm-fs"
    fs.mkdir()
    v = VirtualCcm({"device": {"id": "ccm-ota"}, **PROVISIONED}, uart=mcu.path, fs_dir=str(fs))
    v.board.wires[14] = mcu.set_boot0
    v.board.wires[27] = lambda level: mcu.set_reset(not level)
    v.start()
    try:
        assert wait_until(lambda: _quiet(v.host_call, "Sys.Info"), what="v1 to answer")["fw_version"] == "1.0"
        ws = v.rpc_url()
        r = ccm("--port", ws, "ota", str(tmp_path / "fw.zip"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "host updated: it runs 2.0" in r.stdout
        assert v.host_call("Sys.Info")["fw_version"] == "2.0"
        assert mcu.cpu is not None and mcu.cpu.crashed is None
        v.notify_host("Shadow.Delta", {"on": True})
        wait_until(lambda: mcu.led is True, what="v2 to switch the LED on")

        # firmware ids (issue 24, item 2): the build stamped one into each image; the lamp reports it, and
        # the CCM, which flashed v2 and reads the id from the image, rewrites only the pages v1 changes
        from pc import fwid

        v2_id = fwid.fw_id((tmp_path / "FIRMWARE.BIN").read_bytes())
        assert v2_id and v.host_call("Sys.Info")["fw_id"] == v2_id and v2_id != fwid.fw_id(v1)
        (tmp_path / "v1.bin").write_bytes(v1)
        back = v.run_coro(v.ccm.host_update.flash(str(tmp_path / "v1.bin"), 0x08000000, len(v1)), 120)
        assert back["incremental"] and back["host"]["fw_version"] == "1.0" and back["host"]["fw_id"] == fwid.fw_id(v1)
        pages = (len(v1) + 1023) // 1024
        assert back["pages_erased"] <= pages * 0.2, (back["pages_erased"], pages)  # ≤ 0.2x of a full flash
        assert bytes(mcu.core.flash[: len(v1)]) == v1
    finally:
        v.stop()
        mcu.stop()


def test_without_an_arm_toolchain_the_prebuilt_images_are_used(monkeypatch):
    monkeypatch.setattr(lamp_fw, "toolchain", lambda: False)
    image, how = lamp_fw.lamp_image("2.0")
    assert image == (lamp_fw.PREBUILT / "lamp-2.0.bin").read_bytes() and "prebuilt" in how
    with pytest.raises(lamp_fw.FirmwareUnavailable) as e:
        lamp_fw.lamp_image("9.9")
    assert "prebuilt: 1.0, 2.0" in str(e.value) and "apt-get install gcc-arm-none-eabi" in str(e.value)


def test_sim_stm32_refuses_an_image_larger_than_its_flash_in_one_line(tmp_path):
    from test_ota import ccm

    (tmp_path / "big.bin").write_bytes(b"\0" * 200_000)
    r = ccm("sim", "stm32", "--image", str(tmp_path / "big.bin"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'big.bin'} is 200000 bytes; the f103's flash holds 131072. Pick another --profile."
    ]
