"""Bundle OTA figures (issue: bundles and OTA end to end), printed as a table with ratios:

1. MicroPython heap while the receiver takes a 1 MiB bundle (OTA.Write of 512-byte chunks, zip parsing,
   SHA-256 of the part; real MicroPython, WebAssembly port): live heap after gc.collect(), sampled every
   64 KiB and at the end of the check, against the idle heap. Goal: at most 24 KiB above idle.
2. `ccm ota` upload throughput over WebSocket on loopback into the virtual CCM (CPython). Goal >= 1 MB/s.
3. A 64 KiB host bundle end to end (upload, check, flash, the host answering Sys.Info) on the timed
   virtual STM32F103 at 115200 baud, against the upload time plus the host flash's physical limit.
   Goal <= 1.10x.

    .venv/bin/python bench/ota.py
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bundle import fwbundle  # noqa: E402

MIB = 1024 * 1024

MPY_SCRIPT = r"""
import gc, json, os, asyncio, sys
from ccm.config import Config
from ccm.ota.receiver import OtaReceiver, SUCCESS
import binascii
spec = json.loads(open("/bench/ota_heap.json").read())
head = binascii.a2b_base64(spec["head"].encode())
tail = binascii.a2b_base64(spec["tail"].encode())
size = spec["size"]
part = spec["part"]
samples = []
def sample():
    gc.collect()
    samples.append(gc.mem_alloc())
async def apply(bundle, progress, receiver):
    sample()
    bundle.copy_part("fw", None, lambda d, t: sample() if d % 65536 == 0 else None)
    return "checked"
try:
    os.mkdir("/r")
except OSError:
    pass
r = OtaReceiver(Config(), "/r", {"ccm_host": apply}, asyncio.create_task)
chunk = bytearray(512)
gc.collect()
idle = gc.mem_alloc()
r.begin(spec["total"])
off = 0
def feed(data):
    global off
    r.write(off, data)
    off += len(data)
for i in range(0, len(head), 512):
    feed(head[i:i + 512])
n = 0
while n < part:
    for j in range(512):
        chunk[j] = ((n + j) * 31 + 7) & 0xFF
    feed(bytes(chunk[: min(512, part - n)]))
    n += 512
    if n % 65536 == 0:
        sample()
feed(tail)
await r.end()
while r.state == 1:
    await asyncio.sleep_ms(10)
sample()
print(json.dumps({"idle": idle, "peak": max(samples), "state": r.state, "message": r.message, "samples": samples}))
"""


def heap_figure() -> dict:
    data = bytes(((i * 31 + 7) & 0xFF) for i in range(MIB))
    part = fwbundle.Part("fw", {"type": "STM32", "src": "fw.bin", "addr": 0x08000000}, data)
    z = fwbundle.build_bundle(fwbundle.manifest_for("fw", "ccm_host", [part], "1.0", "bench"), [part])
    start = z.index(data[:64])
    end = start + len(data)
    with tempfile.TemporaryDirectory() as d:
        spec = {
            "head": base64.b64encode(z[:start]).decode(),
            "tail": base64.b64encode(z[end:]).decode(),
            "part": len(data),
            "total": len(z),
            "size": len(data),
        }
        Path(d, "ota_heap.json").write_text(json.dumps(spec))
        Path(d, "ota_heap.py").write_text(MPY_SCRIPT)
        out = subprocess.run(
            ["node", str(ROOT / "tests/mpy/run.mjs"), "--dir", f"{d}=/bench", str(Path(d, "ota_heap.py"))],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput_figure() -> float:
    from bundle.ota_client import push
    from bundle.transport import WsRpc
    from sim.ccm import VirtualCcm

    data = os.urandom(MIB)
    part = fwbundle.Part("fw", {"type": "fs", "src": "fs.bin"}, data)
    z = fwbundle.build_bundle(fwbundle.manifest_for("fw", "ccm_host", [part], "1.0", "bench"), [part])
    with tempfile.TemporaryDirectory() as d:
        cfg = {"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}}
        with VirtualCcm(cfg, fs_dir=d) as v:
            link = WsRpc(v.http_url.replace("http://", "ws://"))
            marks = {}

            def progress(stage, done, total):
                marks.setdefault("first", time.perf_counter())
                if stage == "upload" and done == total:
                    marks["last"] = time.perf_counter()

            t0 = time.perf_counter()
            try:
                push(link, z, 2048, progress=progress, wait=False)
            except Exception:  # noqa: BLE001 - the bench's part is not flashable: only the upload is timed
                pass
            link.close()
    return len(z) / (marks["last"] - t0)


def end_to_end_figure() -> tuple[float, float, float]:
    from host_ota import BAUD, physical_limit

    from bundle.ota_client import push
    from bundle.transport import WsRpc
    from sim.ccm import VirtualCcm
    from sim.stm32 import VirtualStm32, make_app_image

    size = 64 * 1024
    image = make_app_image("2.0", size, seed=2)
    part = fwbundle.Part("host_fw", {"type": "STM32", "src": "FIRMWARE.BIN", "addr": 0x08000000}, image)
    z = fwbundle.build_bundle(fwbundle.manifest_for("fw", "ccm_host", [part], "2.0", "bench"), [part])
    mcu = VirtualStm32("f103", baud=BAUD).start()
    v1 = make_app_image("1.0", size, seed=1)
    mcu.core.flash[:size] = v1
    mcu.reset(boot0=False)
    with tempfile.TemporaryDirectory() as d:
        cfg = {"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}}
        v = VirtualCcm(cfg, uart=mcu.path, fs_dir=d)
        v.board.wires[14] = mcu.set_boot0
        v.board.wires[27] = lambda level: mcu.set_reset(not level)
        v.start()
        link = WsRpc(v.http_url.replace("http://", "ws://"))
        marks = {}

        def progress(stage, done, total):
            if stage == "upload" and done == total:
                marks["uploaded"] = time.perf_counter()

        t0 = time.perf_counter()
        st = push(link, z, 2048, progress=progress)
        total = time.perf_counter() - t0
        link.close()
        assert "2.0" in st.get("message", ""), st
        v.stop()
    mcu.stop()
    upload = marks["uploaded"] - t0
    return total, upload, physical_limit(size)


def main() -> None:
    print("Bundle OTA figures\n")
    h = heap_figure()
    above = (h["peak"] - h["idle"]) / 1024
    print(f"1. MicroPython heap receiving a 1 MiB bundle (512-byte writes, zip + SHA-256): state {h['state']}")
    print(f"   idle {h['idle'] / 1024:7.1f} KiB   peak live {h['peak'] / 1024:7.1f} KiB   above idle {above:6.1f} KiB")
    print(f"   goal <= 24 KiB above idle: {above / 24:.2f}x of the budget\n")
    rate = throughput_figure()
    print("2. ccm ota upload over WebSocket on loopback (CPython virtual CCM, 2048-byte chunks)")
    print(f"   {rate / 1e6:6.2f} MB/s   goal >= 1 MB/s: {rate / 1e6:.2f}x\n")
    total, upload, limit = end_to_end_figure()
    ideal = upload + limit
    print("3. 64 KiB host bundle end to end on the timed virtual STM32F103 at 115200 baud")
    print(f"   total {total:6.2f} s = upload {upload:5.2f} s + check, flash and Sys.Info")
    print(f"   ideal {ideal:6.2f} s = upload + the host flash's physical limit {limit:5.2f} s")
    print(f"   ratio {total / ideal:.2f}x   (goal <= 1.10x)")


if __name__ == "__main__":
    main()
