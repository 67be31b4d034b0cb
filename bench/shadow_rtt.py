"""Shadow round trip and host → broker publish rate, through the whole virtual product.

    .venv/bin/python bench/shadow_rtt.py [TRIALS]

Round trip: the cloud sets desired → shadow service → `update/delta` → CCM → `Shadow.Delta` over the
UART (a pty) → the host reports → `Shadow.Report` → CCM → `update` → shadow service → `update/accepted`
back at the cloud. All on loopback with a real broker (mosquitto when installed). Anchor: the
self-hosted IoT cloud of shared/seeds/001 measured 1–2 s round trips; target median <= 20 ms.

Publish rate: the host sends `MQTT.Pub` notifications as fast as it can; messages/s arriving at a paho
subscriber, next to what a 115200 / 921600 baud UART can carry for the same frames.
"""

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.broker import start_broker  # noqa: E402
from cloud.client import CloudClient  # noqa: E402
from cloud.shadow_service import ShadowService  # noqa: E402
from host_lib import Host  # noqa: E402
from sim.ccm import VirtualCcm  # noqa: E402

DEVICE = "ccm-bench"


def wait(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.001)


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    broker = start_broker()
    service = ShadowService(broker.url).start()
    v = VirtualCcm({"device": {"id": DEVICE}, "mqtt": {"enable": True, "server": f"127.0.0.1:{broker.port}"}}).start()
    host = Host(v.path)
    host.on("Shadow.Delta")(lambda state: host.shadow_report(state))
    host.start()
    cloud = CloudClient(broker.url).start()
    try:
        wait(lambda: v.ccm.mqtt.state == 2 and not v.ccm.mqtt.inflight)
        accepted = f"$aws/things/{DEVICE}/shadow/update/accepted"
        cloud.subscribe(accepted)
        cloud.subscribe(f"$aws/things/{DEVICE}/shadow/update/rejected")
        rtts = []
        for i in range(trials):
            mark = cloud.mark()
            t0 = time.perf_counter()
            cloud.publish(f"$aws/things/{DEVICE}/shadow/update", {"state": {"desired": {"n": i}}}, qos=0)

            def reported(payload, i=i):
                return json.loads(payload).get("state", {}).get("reported", {}).get("n") == i

            cloud.wait_message(accepted, reported, timeout=10, after=mark)
            rtts.append((time.perf_counter() - t0) * 1000)
        rtts.sort()
        med = statistics.median(rtts)
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
        print(f"broker: {broker.kind}; {trials} shadow round trips (desired -> host -> reported -> update/accepted)")
        print(f"  median {med:.2f} ms   p99 {p99:.2f} ms   min {rtts[0]:.2f} ms   max {rtts[-1]:.2f} ms")
        print(f"  vs. the 1-2 s of the self-hosted cloud in seeds/001: {1000 / med:.0f}x-{2000 / med:.0f}x faster")
        print(f"  target median <= 20 ms: {'met' if med <= 20 else 'NOT met'} ({med / 20:.2f}x of the target)")

        n = 2000
        cloud.subscribe("bench/pub")
        got = []
        lock = threading.Lock()
        orig = cloud.client.on_message

        def count(client, userdata, msg):
            if msg.topic == "bench/pub":
                with lock:
                    got.append(time.perf_counter())
            else:
                orig(client, userdata, msg)

        cloud.client.on_message = count
        frame = b'{"method":"MQTT.Pub","params":{"topic":"bench/pub","message":"0123456789"}}\n'
        t0 = time.perf_counter()
        for _ in range(n):
            host.mqtt_pub("bench/pub", "0123456789")
        wait(lambda: len(got) >= n * 0.98, timeout=60)
        time.sleep(0.3)
        dt = got[-1] - t0
        rate = len(got) / dt
        print(
            f"\nhost -> CCM -> broker, {n} MQTT.Pub (QoS 0, {len(frame)}-byte frames): {len(got)} arrived, {rate:.0f} msg/s"
        )
        for baud in (115200, 921600):
            line = baud / 10 / len(frame)
            print(f"  UART at {baud}: {line:.0f} frames/s; the CCM pipeline carries {rate / line:.1f}x that")
        if len(got) < n:
            print(f"  {n - len(got)} QoS 0 messages were not delivered (QoS 0 is at most once)")
    finally:
        cloud.stop()
        host.close()
        v.stop()
        service.stop()
        broker.close()


if __name__ == "__main__":
    main()
