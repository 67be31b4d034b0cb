"""The CCM's heap on real MicroPython, against a plain ESP32's 111,936-byte heap (docs/architecture.md).

    .venv/bin/python bench/memory.py                                   # live heap per step + cap search
    .venv/bin/python bench/memory.py --caps-only --micropython PATH    # the cap search on a 32-bit build
    .venv/bin/python bench/memory.py --caps-only --micropython PATH --frozen FROZEN_PATH   # + the frozen row

1. The live heap per step on the WebAssembly port (32-bit, the ESP32's word size): the firmware boots
   as on a module — Ccm on a board whose UART is in memory, its MQTT session on a broker double with
   MicroPython's stream semantics — and the live heap (after gc.collect()) is sampled at each step.
   Bytecode is in the heap here as it is on a module running .mpy files.
2. The smallest heap cap at which the whole firmware works on the unix port (works_at: link, MQTT (over
   mutual TLS where the build has ssl), a cloud call, Shadow.Report, HTTP and WebSocket /rpc, a signed
   bundle OTA over WebSocket, a broker outage; then a product's module — its UART and BOOT0/NRST wired to
   a virtual STM32 — flashing the host from a signed bundle), for .mpy files (the stock image) and for code in ROM (frozen /
   romfs). Only a 32-bit build's figures are a module's: bytecode does not halve from a 64-bit one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from ota import run_micropython  # noqa: E402

CAP = 111936  # a plain ESP32's MicroPython heap after one growth (MicroPython PR #13219)
AIM = 104 * 1024  # the budget: every flow at this cap on 32-bit, with .mpy files (a stock image)
FROZEN_AIM = 56 * 1024  # and with the code frozen into the image

SCRIPT = r"""
import asyncio, gc, json, sys
sys.path.insert(0, "/fw")
from heap import live_heap as live  # sleeps before it collects: see tests/firmware/heap.py
rows = []
peak = [0]
async def mark(name):
    h = await live()
    peak[0] = max(peak[0], h)
    rows.append((name, h))
await mark("MicroPython, nothing imported")
from ccm.main import Ccm
from ccm import shadow, mqtt, link, router, config, rpc, compat
from ccm.ota import receiver
await mark("firmware imported (main, link, rpc, config, mqtt, shadow, OTA receiver)")
from fwtest import FakeHost, uart_pair  # the test doubles: the host, the broker, a board
from test_boot import Board
from test_mqtt_session import Broker
broker = Broker()
asyncio.open_connection = broker.open_connection  # what MqttClient opens, as the module's socket would be
await mark("+ the test doubles (host on the UART, MQTT broker)")

ccm_end, host_end = uart_pair()
c = Ccm(Board("benchfs", ccm_end), {"device": {"id": "bench"}, "mqtt": {"enable": True, "server": "broker:1883"}})
task = asyncio.create_task(c.run())
host = FakeHost(host_end)
await host.frame()
while c.mqtt is None or c.mqtt.state != mqtt.CONNECTED:
    await asyncio.sleep_ms(5)
await host.frame()  # Cloud.Status
await mark("booted: link, Config, OTA receiver, MQTT connected, shadow")
for i in range(100):
    host.write(b'{"id":%d,"method":"Sys.GetInfo"}\n' % i)
    await host.frame()
    if i % 25 == 0:
        await mark("host calls (Sys.GetInfo) #%d" % i)
for i in range(50):
    host.write(b'{"id":%d,"method":"MQTT.Pub","params":{"topic":"t","message":"%s","qos":1}}\n' % (i, b"x" * 200))
    await host.frame()
    if i % 25 == 0:
        await mark("MQTT.Pub QoS 1, 200 bytes #%d" % i)
host.write(b'{"id":1,"method":"Shadow.Report","params":{"on":true,"level":40}}\n')
await host.frame()
await mark("Shadow.Report acknowledged")
import binascii
size = 64 * 1024
host.write(b'{"id":1,"method":"OTA.Begin","params":{"size":%d}}\n' % size)
await host.frame()
chunk = binascii.b2a_base64(bytes(range(256)) * 2).strip()
for off in range(0, size, 512):
    host.write(b'{"id":2,"method":"OTA.Write","params":{"offset":%d,"data":"%s"}}\n' % (off, chunk))
    await host.frame()
    if off % 16384 == 0:
        await mark("OTA.Write over the UART, at %d KiB" % (off // 1024))
host.write(b'{"id":3,"method":"OTA.End"}\n')
await host.frame()  # not a bundle: refused, and the space freed
await mark("OTA.End (a bad bundle refused)")
task.cancel()
print(json.dumps({"rows": rows, "peak": peak[0]}))
"""


class Flows:
    """What the cap search runs the firmware through: a mosquitto (wanting TLS with a client certificate,
    the CA checked, when the build has ssl), a cloud client, and an esp32 bundle of the firmware's own
    files for the OTA step, signed: a module built by `ccm build` takes signed bundles only, so its OTA
    runs the P-256 check (ccm/ota/p256.py) and so does this one."""

    def __init__(self, workdir: Path, tls: bool):
        from netutil import make_pki

        from bundle.build import fs_bundle
        from cloud.broker import Mosquitto

        self.tls = tls
        self.pki = make_pki(workdir)
        files = {"cafile": "ca.pem", "certfile": "server.pem", "keyfile": "server.key"}
        conf = {k: str(self.pki / v) for k, v in files.items()} | {"require_certificate": True}
        self.broker = Mosquitto(tls=conf if tls else None).start()
        from pc.fwbundle import new_signing_key

        self.pubkey = new_signing_key(str(workdir / "ccm-signing.pem"))
        self.bundle = workdir / "ccm-fw.zip"
        self.version = "0.2.0"
        fs_bundle(str(self.bundle), self.version, sign_key=str(workdir / "ccm-signing.pem"))
        # code in ROM is updated with the image (an app or romfs part: a module's flash, not this heap);
        # what such a module takes over the fs is data: the same bytes, named so nothing imports them
        self.data_bundle = workdir / "assets.zip"
        _assets_bundle(self.data_bundle, self.version, str(workdir / "ccm-signing.pem"))
        # a host's firmware, v1 on the chip and v2 in a signed ccm_host bundle (64 KiB: a blue pill's flash)
        from pc import fwbundle
        from sim.stm32 import make_app_image

        self.host_v1 = make_app_image("1.0", 64 * 1024, seed=1)
        part = fwbundle.Part(
            "host_fw",
            {"type": "STM32", "src": "FIRMWARE.BIN", "addr": 0x08000000},
            make_app_image("2.0", 64 * 1024, seed=2),
        )
        self.host_bundle = workdir / "host-fw.zip"
        self.host_bundle.write_bytes(
            fwbundle.build_bundle(
                fwbundle.manifest_for("fw", "ccm_host", [part], "2.0", "bench"),
                [part],
                sign_keys=[fwbundle.load_signing_key(str(workdir / "ccm-signing.pem"))],
            )
        )

    def close(self):
        self.broker.close()

    def ota(self, rom) -> Path:
        return self.data_bundle if rom else self.bundle

    def _files(self) -> dict:
        return {k: str(self.pki / v) for k, v in (("ca", "ca.pem"), ("cert", "device.pem"), ("key", "device.key"))}

    def config(self, device: str) -> dict:
        mqtt = {"enable": True, "server": f"127.0.0.1:{self.broker.port}", "keep_alive": 10}
        mqtt |= {"reconnect_timeout_min_ms": 200, "reconnect_timeout_max_ms": 1000}
        if self.tls:
            f = self._files()
            mqtt |= {"ssl_ca_cert": f["ca"], "ssl_cert": f["cert"], "ssl_key": f["key"]}
        return {"device": {"id": device}, "mqtt": mqtt, "ota": {"pubkey": self.pubkey, "require_signature": True}}

    def cloud_tls(self) -> dict | None:
        if not self.tls:
            return None
        f = self._files()
        return {"cafile": f["ca"], "certfile": f["cert"], "keyfile": f["key"]}


def _assets_bundle(output: Path, version: str, sign_key: str):
    """An esp32 bundle of the firmware files' bytes under assets/ (nothing imports them there)."""
    import tempfile

    from ccm.ota import fsarchive
    from pc import fwbundle
    from pc.fwimage import stage

    with tempfile.TemporaryDirectory(prefix="ccm-mem-") as d:
        names = stage(Path(d), {}, version=version)
        files = {"assets/" + n: (Path(d) / n).read_bytes() for n in names if n != "conf0.json"}
    part = fwbundle.Part("fs", {"type": "fs", "src": "fs.bin"}, fsarchive.pack(files))
    fwbundle.create(str(output), "ccm", "esp32", [], version, parts=[part], sign_keys=[sign_key])


def works_at(heap_kib: int, rom, flows: Flows, peaks: dict | None = None) -> str | None:
    """None when the whole firmware works with this heap on the unix port, else the step that failed and
    why: boot; MQTT over mutual TLS (CA checked) with a call from the cloud and Shadow.Report; HTTP and
    WebSocket /rpc; a bundle OTA over WebSocket (upload, check, stage, reboot into it); a broker outage;
    then the host flash (host_flash_works_at).
    `rom`: False .mpy files, True a romfs image, "frozen" the code in the binary. With `peaks`, the live
    heap is sampled inside the steps (every 5 ms, after a collection) and each step's most is put there."""
    import json as _json
    import time

    from bundle.ota_client import push
    from bundle.transport import HttpRpc, WsRpc, ws_connect
    from cloud.client import CloudClient
    from host_lib import Host
    from sim.mpy_unix import UnixCcm

    dev = f"mem-{heap_kib}-{rom}"
    step = "boot"

    def done(name):
        if peaks is not None:
            peaks[name] = max(peaks.get(name, 0), host.call("Sys.GetInfo")["heap_peak"])

    def wait(cond, what, timeout=20):
        end = time.monotonic() + timeout
        while not _holds(cond):  # a call during a reboot may go unanswered: asked again
            if time.monotonic() > end:
                raise TimeoutError(f"{what}: {host.call('Sys.GetInfo').get('faults') or 'not within %d s' % timeout}")
            time.sleep(0.1)

    try:
        ccm = UnixCcm(flows.config(dev), heap=f"{heap_kib}K", rom=rom, sample_ms=5 if peaks is not None else 0).start()
    except RuntimeError as e:
        return "boot: " + str(e).splitlines()[-1]
    try:
        with (
            Host(ccm.path) as host,
            CloudClient(flows.broker.url, client_id="app-" + dev, tls=flows.cloud_tls()) as cloud,
        ):
            host.export("Sum", lambda p: p[0] + p[1])
            step = "MQTT over TLS" if flows.tls else "MQTT"
            wait(lambda: host.call("Sys.GetInfo")["cloud"]["connected"], "not connected")
            done("boot, " + step + " connected")
            assert cloud.call(dev, "Sum", [1, 2]) == 3
            assert host.call("Shadow.Report", {"reported": {"n": 1}}) is True
            done("a call from the cloud, Shadow.Report")
            step = "HTTP /rpc"  # with the module's password: HTTP Digest, as every /rpc client
            assert HttpRpc(ccm.rpc_url("http")).call("Sum", [2, 2], 10) == 4
            done(step)
            step = "WebSocket /rpc"
            with ws_connect(ccm.rpc_url(), timeout=10) as ws:
                ws.send(_json.dumps({"id": 2, "method": "Sys.GetInfo"}))
                assert "result" in _json.loads(ws.recv(timeout=10))
            done(step)
            step = "bundle OTA over WebSocket"
            link = WsRpc(ccm.rpc_url())
            try:
                st = push(link, flows.ota(rom).read_bytes(), 2048, call_timeout=10, apply_timeout=60)
            finally:
                link.close()
            assert st.get("state") in (0, 3), st
            done("bundle OTA over WebSocket (upload, check, stage)")  # before its reboot (in 500 ms)
            step = "after the OTA's reboot"
            wait(lambda: ccm.resets > 0, "no reboot into the update", 30)
            if not rom:  # the update's own files run
                wait(lambda: host.call("Sys.GetInfo")["fw_version"] == flows.version, "the update does not run", 30)
            wait(lambda: host.call("Sys.GetInfo")["cloud"]["connected"], "not connected again", 30)
            done("reboot into the update, MQTT connected again")
            step = "broker outage"
            flows.broker.stop()
            wait(lambda: not host.call("Sys.GetInfo")["cloud"]["connected"], "still connected", 30)
            flows.broker.start()
            wait(lambda: host.call("Sys.GetInfo")["cloud"]["connected"], "not back after the outage", 30)
            wait(lambda: _answers(cloud, dev), "no call from the cloud after the outage", 30)
            done(step)
            faults = host.call("Sys.GetInfo")["faults"]
            if faults:
                return "faults: %s" % faults
    except Exception as e:  # a call that timed out or failed: the heap was too small somewhere
        return f"{step}: {type(e).__name__}: {e}"
    finally:
        if flows.broker.proc is None:
            flows.broker.start()
        ccm.stop()
    return host_flash_works_at(heap_kib, rom, flows, peaks)


HOST_BUNDLE = "host bundle over WebSocket (upload, check)"
HOST_FLASH = "host flashed (by the next boot when the heap is short), the host answers again"


def host_flash_works_at(heap_kib: int, rom, flows: Flows, peaks: dict | None = None) -> str | None:
    """The module as a product's CCM: its UART wired to a virtual STM32F103 running v1, its BOOT0/NRST
    pins to that chip's, connected to the cloud over TLS; a signed ccm_host bundle pushed over WebSocket
    is checked and flashed through the ROM bootloader — by the boot after a reboot when the heap has no
    room for the flasher beside the running firmware — and the host must then run v2."""
    import time

    from bundle.ota_client import follow, push
    from bundle.transport import WsRpc
    from sim.mpy_unix import UnixCcm
    from sim.stm32 import VirtualStm32, read_marker

    step = "boot with a host"
    mcu = VirtualStm32("f103").start()
    mcu.core.flash[: len(flows.host_v1)] = flows.host_v1
    mcu.reset(boot0=False)
    wires = {14: mcu.set_boot0, 27: lambda level: mcu.set_reset(not level)}  # NRST is active low
    dev = f"mem-host-{heap_kib}-{rom}"
    try:
        ccm = UnixCcm(
            flows.config(dev),
            heap=f"{heap_kib}K",
            rom=rom,
            sample_ms=5 if peaks is not None else 0,
            uart=mcu.path,
            pins=lambda pin, level: wires[pin](level),
        ).start()
    except RuntimeError as e:
        mcu.stop()
        return "%s: %s" % (step, str(e).splitlines()[-1])
    link = None
    try:
        link = WsRpc(ccm.rpc_url())
        end = time.monotonic() + 20
        while not link.call("Sys.GetInfo", None, 10)["cloud"]["connected"]:
            if time.monotonic() > end:
                return "%s: not connected: %s" % (step, link.call("Sys.GetInfo", None, 10).get("faults"))
            time.sleep(0.1)
        step = HOST_BUNDLE
        push(link, flows.host_bundle.read_bytes(), 2048, call_timeout=10, wait=False)
        if peaks is not None:
            peaks[step] = max(peaks.get(step, 0), link.call("Sys.GetInfo", None, 10)["heap_peak"])
        step = HOST_FLASH
        seen = len(ccm.output)
        st = follow(link, None, 120, 10)
        if (read_marker(bytes(mcu.core.flash)) or {}).get("version") != "2.0":
            return "%s: the host does not run v2 after it: %s" % (step, st)
        if peaks is not None:  # the boots since the upload (each says its most before it resets), this one
            most = [int(line.split()[-1]) for line in ccm.output[seen:] if line.startswith("ccm: heap peak ")]
            most.append(link.call("Sys.GetInfo", None, 10)["heap_peak"])
            peaks[step] = max([peaks.get(step, 0)] + most)
        faults = link.call("Sys.GetInfo", None, 10)["faults"]
        return "faults: %s" % faults if faults else None
    except Exception as e:  # a call that timed out or failed: the heap was too small somewhere
        return f"{step}: {type(e).__name__}: {e}"
    finally:
        if link is not None:
            link.close()
        ccm.stop()
        mcu.stop()


def _holds(cond) -> bool:
    try:
        return cond()
    except TimeoutError:
        return False


def _answers(cloud, dev) -> bool:
    """A call from the cloud gets through (the cloud client reconnects after an outage too)."""
    try:
        return cloud.call(dev, "Sum", [3, 4]) == 7
    except Exception:
        return False


def smallest_cap(rom: bool, flows: Flows, lo=32, hi=512, step=4) -> tuple[int, str]:
    """The smallest heap (KiB, steps of `step`) at which works_at passes, and why the step below failed."""
    why = ""
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        r = works_at(mid, rom, flows)
        if r is None:
            hi = mid
        else:
            lo, why = mid, r
    return hi, why


def unix_table(exe: str | None, frozen: str | None = None):
    import tempfile

    from sim.mpy_unix import has_frozen_ccm, micropython_exe, word_bits

    for path, flag in ((exe, "--micropython"), (frozen, "--frozen")):
        if path and not os.access(path, os.X_OK):
            raise SystemExit(f"{flag} {path}: not an executable MicroPython unix build")
    if frozen and not has_frozen_ccm(frozen):
        raise SystemExit(f"--frozen {frozen}: the ccm package is not frozen in it (build it with FREEZE_CCM)")
    if exe:
        os.environ["CCM_MICROPYTHON"] = exe
    exe = micropython_exe()
    bits = word_bits()
    tls = subprocess.run([exe, "-c", "import ssl"], capture_output=True).returncode == 0
    print(f"\nThe whole firmware on MicroPython's unix port ({exe}, {bits}-bit), heap capped (-X heapsize):")
    print(f"link + MQTT{' over mutual TLS' if tls else ''} + a cloud call + Shadow.Report + HTTP and WebSocket /rpc")
    print("+ a signed bundle OTA over WebSocket (upload, check, stage, reboot) + a broker outage")
    print("+ a host (virtual STM32F103) flashed from a signed bundle over WebSocket\n")
    if tls:
        print("(mbedTLS's contexts are Python objects in this heap, as on a module; its record buffers come")
        print(" from the C heap here, from ESP-IDF's on a module)\n")
    else:
        print("(no TLS: this build has no ssl module — build it with mbedTLS (README, 'Measure it yourself'). On a")
        print(" module mbedTLS's buffers come from ESP-IDF's heap, not the Python heap)\n")
    if bits == 64:
        print("(a 64-bit build: its figures are NOT the ESP32's — bytecode does not halve. Build a 32-bit one:")
        print(" see the README, 'Measure it yourself', and pass --micropython PATH)\n")
    rows = [(False, ".mpy files on LittleFS (stock)", exe, AIM), (True, "romfs partition (code in flash)", exe, None)]
    if frozen:
        rows.append(("frozen", "frozen into the image", frozen, FROZEN_AIM))
    print(f"{'code':<34} {'smallest cap':>13} {'vs 111,936 B':>13} {'budget':>9}  {'below it, what failed'}")
    high = []
    with tempfile.TemporaryDirectory(prefix="ccm-mem-") as d:
        flows = Flows(Path(d), tls)
        try:
            for rom, label, binary, aim in rows:
                os.environ["CCM_MICROPYTHON"] = binary
                cap, why = smallest_cap(rom, flows)
                budget = f"{aim // 1024} KiB" if aim else "-"
                print(f"{label:<34} {cap:>9} KiB {cap * 1024 / CAP:>12.2f}x {budget:>9}  {why[:90]}", flush=True)
                for extra in (0, 4, 8):  # at the cap found: what a module with that heap goes through (a
                    peaks = {}  # short one checks bundles and flashes its host at a boot of their own)
                    if works_at(cap + extra, rom, flows, peaks) is None:
                        break
                high.append((label, peaks))
        finally:
            flows.close()
            os.environ["CCM_MICROPYTHON"] = exe
    print("\nThe live heap's high-water mark in each step at that cap (KiB, sampled every 5 ms inside it, after a")
    print("collection; a step that spans reboots: the most of its boots):\n")
    print(f"{'step':<58}" + "".join(f" {label.split(' (')[0][:20]:>21}" for label, _ in high))
    for step in high[0][1]:
        print(f"{step:<58}" + "".join(f" {p.get(step, 0) / 1024:>21.1f}" for _, p in high))


def run() -> dict:
    return json.loads(run_micropython(SCRIPT, "tests/firmware=/fw"))


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micropython", metavar="PATH", help="the unix port binary for the cap search (a 32-bit build)")
    ap.add_argument(
        "--frozen", metavar="PATH", help="a unix build with the ccm package frozen in (FREEZE_CCM): the frozen row"
    )
    ap.add_argument("--caps-only", action="store_true", help="only the cap search, not the live heap per step")
    args = ap.parse_args()
    if args.caps_only:
        unix_table(args.micropython, args.frozen)
        return
    r = run()
    base = r["rows"][0][1]
    doubles = r["rows"][2][1] - r["rows"][1][1]  # what importing the test doubles added
    print("CCM live heap on MicroPython (WebAssembly port, 32-bit), after gc.collect()\n")
    print(f"{'step':<72} {'live KiB':>9} {'CCM KiB':>8}")
    for i, (name, h) in enumerate(r["rows"]):
        ccm = h - base - (doubles if i >= 2 else 0)
        print(f"{name:<72} {h / 1024:9.1f} {ccm / 1024:8.1f}")
    peak = r["peak"] - base - doubles
    print(
        f"\nthe CCM's peak: {peak / 1024:.1f} KiB = {peak / CAP:.2f}x a 111,936 B heap, {peak / AIM:.2f}x the 104 KiB budget"
    )
    print("(the runner's own baseline and the test doubles are taken off; bytecode is in the heap, as with .mpy")
    print(" files on a module; only a frozen image would move it to flash)")
    unix_table(args.micropython, args.frozen)


if __name__ == "__main__":
    main()
