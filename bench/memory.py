"""The CCM's live heap on real MicroPython (the WebAssembly port: 32-bit, the ESP32's word size), per
scenario, against the 96 KB heap of a plain ESP32 and the 64 KiB aim (docs/architecture.md, the runtimes, issue 11).

    .venv/bin/python bench/memory.py

The firmware boots as on a module — Ccm on a board whose UART is in memory, its MQTT session on a broker
double with MicroPython's stream semantics (tests/firmware/test_mqtt_session.py) — and the live heap
(after returning to the JS event loop and gc.collect(): that port frees nothing sooner) is sampled at
each step. Bytecode is in the heap here as it is on a module running .mpy files. Not covered: TLS and
the /rpc server (no sockets in the WebAssembly port), WiFi.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ota import run_micropython  # noqa: E402

CAP = 96 * 1000
AIM = 64 * 1024

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


def works_at(heap_kib: int, rom: bool, broker) -> str | None:
    """None when the whole firmware works with this heap on the unix port — boot, the host's calls,
    MQTT to mosquitto with a cloud call and a shadow report, HTTP and WebSocket /rpc — else what failed."""
    import json as _json
    import time
    import urllib.request

    import websockets.sync.client as wsclient

    from cloud.client import CloudClient
    from host_lib import Host
    from sim.mpy_unix import UnixCcm

    dev = f"mem-{heap_kib}-{int(rom)}"
    cfg = {"device": {"id": dev}, "mqtt": {"enable": True, "server": f"127.0.0.1:{broker.port}"}}
    try:
        ccm = UnixCcm(cfg, heap=f"{heap_kib}K", rom=rom).start()
    except RuntimeError as e:
        return "boot: " + str(e).splitlines()[-1]
    try:
        with Host(ccm.path) as host, CloudClient(broker.url, client_id="app-" + dev) as cloud:
            host.export("Sum", lambda p: p[0] + p[1])
            end = time.monotonic() + 10
            while not host.call("Sys.GetInfo")["cloud"]["connected"]:
                if time.monotonic() > end:
                    return "MQTT: " + str(host.call("Sys.GetInfo")["faults"] or "not connected")
                time.sleep(0.1)
            assert cloud.call(dev, "Sum", [1, 2]) == 3
            assert host.call("Shadow.Report", {"reported": {"n": 1}}) is True
            url = f"http://127.0.0.1:{ccm.http_port}/rpc"
            body = _json.dumps({"id": 1, "method": "Sum", "params": [2, 2]}).encode()
            with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as r:
                assert _json.loads(r.read())["result"] == 4
            with wsclient.connect(url.replace("http", "ws"), open_timeout=10) as ws:
                ws.send(_json.dumps({"id": 2, "method": "Sys.GetInfo"}))
                assert "result" in _json.loads(ws.recv(timeout=10))
            faults = host.call("Sys.GetInfo")["faults"]
            return "faults: %s" % faults if faults else None
    except Exception as e:  # a call that timed out or failed: the heap was too small somewhere
        return f"{type(e).__name__}: {e}"
    finally:
        ccm.stop()


def smallest_cap(rom: bool, broker, lo=64, hi=512, step=8) -> int:
    """The smallest heap (KiB, steps of `step`) at which works_at passes (and passes at every larger size
    tried on the way)."""
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if works_at(mid, rom, broker) is None:
            hi = mid
        else:
            lo = mid
    return hi


def unix_table():
    from cloud.broker import Mosquitto
    from sim.mpy_unix import HEAP_64

    print("\nThe whole firmware on MicroPython's unix port (64-bit) with the heap capped (-X heapsize):")
    print("link + MQTT to mosquitto + a cloud call + Shadow.Report + HTTP and WebSocket /rpc\n")
    print(f"{'code':<34} {'smallest cap':>13} {'ESP32 equivalent':>17} {'vs 96 KiB':>10}")
    with Mosquitto() as broker:
        for rom, label in ((True, "in ROM (frozen / romfs)"), (False, ".mpy files on LittleFS")):
            cap = smallest_cap(rom, broker)
            esp = cap / 2  # same GC blocks: 32 bytes each here, 16 on the ESP32 (sim/mpy_unix.py)
            print(f"{label:<34} {cap:>10} KiB {esp:>13.0f} KiB {esp / 96:>9.2f}x")
        why = works_at(int(HEAP_64[:-1]), True, broker)
        print(f"\nat HEAP_64 = {HEAP_64} (the tests' cap, = 96 KiB on the ESP32), code in ROM: {why or 'everything works'}")


def run() -> dict:
    return json.loads(run_micropython(SCRIPT, "tests/firmware=/fw"))


def main():
    r = run()
    base = r["rows"][0][1]
    doubles = r["rows"][2][1] - r["rows"][1][1]  # what importing the test doubles added
    print("CCM live heap on MicroPython (WebAssembly port, 32-bit), after gc.collect()\n")
    print(f"{'step':<72} {'live KiB':>9} {'CCM KiB':>8}")
    for i, (name, h) in enumerate(r["rows"]):
        ccm = h - base - (doubles if i >= 2 else 0)
        print(f"{name:<72} {h / 1024:9.1f} {ccm / 1024:8.1f}")
    peak = r["peak"] - base - doubles
    print(f"\nthe CCM's peak: {peak / 1024:.1f} KiB = {peak / CAP:.2f}x a 96 KB heap, {peak / AIM:.2f}x the 64 KiB aim")
    print("(the runner's own baseline and the test doubles are taken off; bytecode is in the heap, as with .mpy")
    print(" files on a module; only a frozen image would move it to flash)")
    unix_table()


if __name__ == "__main__":
    main()
