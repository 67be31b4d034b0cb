"""A host program for a smart lamp, on host_lib: what the MCU firmware of a CCM product does.

    python examples/lamp_host.py PORT        # PORT: /dev/ttyUSB0, or the path `ccm sim ccm` prints

It exports `Lamp.Set` and `Sum`, follows the device shadow (`Shadow.Delta` → switch → `Shadow.Report`),
and reports its state again whenever the CCM (re)boots (`Sys.Init`).
"""

import signal
import sys
import threading

from host_lib import Host


def main(port: str) -> None:
    host = Host(port, fw_version="1.0", app="lamp")
    lamp = {"on": False, "brightness": 100}

    def apply(state: dict) -> dict:
        for key in ("on", "brightness"):
            if key in state:
                lamp[key] = state[key]
        print(f"lamp: {'ON' if lamp['on'] else 'off'} at {lamp['brightness']}%", flush=True)
        host.shadow_report(lamp)
        return dict(lamp)

    @host.method("Lamp.Set")
    def lamp_set(params):
        return apply(params or {})

    @host.method("Sum")
    def add(params):
        return params[0] + params[1]

    @host.on("Shadow.Delta")
    def delta(state):
        apply(state)

    @host.on("Sys.Init")
    def ccm_booted(info):
        print(f"CCM {info.get('device_id')} up, firmware {info.get('fw_version')}", flush=True)
        host.shadow_report(lamp)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    with host:
        print(f"lamp host on {port}, talking to CCM {host.call('Sys.GetInfo')['device_id']}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
