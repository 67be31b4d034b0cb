"""N cloud callers bursting RPC at one virtual CCM over a real mosquitto (issue 10).

    .venv/bin/python bench/overload.py [CALLERS] [BURST]

Prints calls/s, p50/p99 latency and the answers by outcome for the default bounds (mqtt.queue_size 32
open cloud calls, rpc.max_pending 16 at the host, rpc.tx_queue 16 frames to it) and for a CCM whose
bounds are raised to the whole burst; every call must end in its
result or an explicit error (-32002 queue full, -32000 host timeout) — "lost" and "cross-talk" must be 0.
The host answers Sum through host_lib over the pty, as a real host MCU would over its UART.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.broker import Mosquitto  # noqa: E402
from cloud.load import hammer  # noqa: E402
from host_lib import Host  # noqa: E402
from sim.ccm import VirtualCcm  # noqa: E402


def run(broker, callers, burst, bounds):
    device = "ccm-load-%d" % time.monotonic_ns()
    port = int(broker.rsplit(":", 1)[1])
    cfg = {"device": {"id": device}, "mqtt": {"enable": True, "server": f"127.0.0.1:{port}"}}
    if bounds:
        cfg["mqtt"]["queue_size"] = bounds
        cfg["rpc"] = {"max_pending": bounds, "tx_queue": bounds}
    with VirtualCcm(cfg) as v:
        host = Host(v.path, fw_version="1.0", app="load")
        host.export("Sum", lambda p: p[0] + p[1])
        with host:
            end = time.monotonic() + 10
            while v.ccm.mqtt.state != 2 and time.monotonic() < end:
                time.sleep(0.01)
            return hammer(broker, device, callers=callers, burst=burst)


def main():
    callers = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    burst = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with Mosquitto() as m:
        print(f"{callers} cloud callers x {burst} calls at once (half Sum via the host, half RPC.List), mosquitto")
        ok = True
        for label, bounds in (("default bounds", None), (f"bounds raised to {callers * burst}", callers * burst)):
            r = run(m.url, callers, burst, bounds)
            print(f"  {label:<26} {r.summary()}")
            ok = ok and r.lost == 0 and r.crosstalk == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
