"""How many devices one `ccm cloud` serves before its shadow round trip gets slow.

    .venv/bin/python bench/fleet.py [--steps 250,500,1000,1500,2000,3000] [--hold 10]

`ccm cloud` runs as users run it (its own process: mosquitto, the shadow service on SQLite, the fleet
watcher, the dashboard and API). Simulated devices — one asyncio loop in this process, each speaking
MQTT with the CCM's own packet code (ccm/mqtt.py) — connect with the CCM's last will and, once a second
each, publish their presence and a shadow update (`reported` uptime and a temperature), timing the
round trip to `update/accepted`. A dashboard user polls GET /api/devices once a second meanwhile.

Steps add devices until the p99 round trip exceeds 100 ms (the issue's bound; goal: >= 1,000 devices).
Ratios printed: devices served / the goal, and the shadow round trip / the broker's own round trip at
the same load (devices echoing through mosquitto alone: the floor no shadow service can beat here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccm.mqtt import (  # noqa: E402
    CONNACK,
    PUBACK,
    PUBLISH,
    SUBACK,
    PacketReader,
    encode_connect,
    encode_puback,
    encode_publish,
    encode_subscribe,
    parse_publish,
)
from cloud.load import percentile  # noqa: E402

BOUND_MS = 100.0
GOAL = 1000
TOKEN = "fleet-bench-token"


class SimDevice:
    """A CCM as the cloud sees it: will, presence, a shadow update a second."""

    def __init__(self, n: int, host: str, port: int, echo: bool, stats: dict):
        self.id = f"fleet-{n:05d}"
        self.host, self.port, self.echo, self.stats = host, port, echo, stats
        self.pending: dict[str, float] = {}
        self.pid = 0
        self.seq = 0
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.writer = None

    def _pid(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer = writer
        status = f"{self.id}/status"
        answer = f"bench/{self.id}/echo" if self.echo else f"$aws/things/{self.id}/shadow/update/accepted"
        self.request_topic = f"bench/{self.id}/echo" if self.echo else f"$aws/things/{self.id}/shadow/update"
        writer.write(encode_connect(self.id, 60, True, will=(status, "offline", 1, True)))
        writer.write(encode_subscribe(self._pid(), [(answer, 1)]))
        writer.write(encode_publish(status, "online", 1, True, self._pid()))
        packets = PacketReader(65536)
        subscribed = False
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for kind, flags, body in packets.feed(data):
                if kind == PUBLISH:
                    topic, payload, qos, _, _, pid = parse_publish(flags, body)
                    if qos:
                        writer.write(encode_puback(pid))
                    self._answered(payload)
                elif kind == SUBACK and not subscribed:
                    subscribed = True
                    self.ready.set()
                elif kind in (CONNACK, PUBACK):
                    pass

    def _answered(self, payload: bytes) -> None:
        m = re.search(rb'"clientToken":"([^"]+)"', bytes(payload))
        if m:
            t0 = self.pending.pop(m.group(1).decode(), None)
            if t0 is not None and self.stats["recording"]:
                self.stats["rtt"].append((time.perf_counter() - t0) * 1000)

    def tick(self) -> None:
        """Presence and one shadow update (the 1/s of each device)."""
        w = self.writer
        if w is None or w.is_closing():
            return
        self.seq += 1
        token = f"{self.id}-{self.seq}"
        doc = {
            "state": {"reported": {"uptime": self.seq, "temp": round(20 + random.random() * 5, 2)}},
            "clientToken": token,
        }
        if self.stats["recording"]:
            self.stats["sent"] += 1
        now = time.perf_counter()
        for t, t0 in list(self.pending.items()):
            if now - t0 > 5:  # no answer in 5 s: lost (counted, and as slow as it gets in p99)
                del self.pending[t]
                if self.stats["recording"]:
                    self.stats["lost"] += 1
        self.pending[token] = now
        w.write(encode_publish(f"{self.id}/status", "online", 1, True, self._pid()))
        w.write(encode_publish(self.request_topic, json.dumps(doc, separators=(",", ":")), 1, False, self._pid()))


def start_cloud(workdir: str) -> tuple[subprocess.Popen, int, str]:
    ccm = shutil.which("ccm", path=str(ROOT / ".venv" / "bin")) or "ccm"
    proc = subprocess.Popen(
        [
            ccm,
            "cloud",
            "--db",
            os.path.join(workdir, "shadows.sqlite"),
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--bundles",
            os.path.join(workdir, "bundles"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
        start_new_session=True,
    )
    broker = web = None
    while broker is None or web is None:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("ccm cloud did not start")
        if m := re.search(r"on mqtt://127\.0\.0\.1:(\d+)", line):
            broker = int(m.group(1))
        if m := re.search(r"dashboard on (http://\S+?);", line):
            web = m.group(1)
    return proc, broker, web


def poll_api(web: str, stats: dict) -> None:
    req = urllib.request.Request(web + "/api/devices", headers={"Authorization": f"Bearer {TOKEN}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as r:
        devices = json.loads(r.read())
    if stats["recording"]:
        stats["api"].append((time.perf_counter() - t0) * 1000)
    stats["online"] = sum(1 for d in devices if d["online"])


async def measure(devices: list[SimDevice], hold: float, stats: dict, web: str | None) -> dict:
    """Everyone ticks once a second (spread over the second); record `hold` seconds after a warm-up."""
    loop = asyncio.get_running_loop()
    stats.update(recording=False, rtt=[], api=[], sent=0, lost=0, late=[])
    phase = {d.id: random.random() for d in devices}
    start = loop.time() + 0.2
    warm = 3.0
    end = start + warm + hold

    async def ticker():
        second = 0
        while loop.time() < end:
            base = start + second
            order = sorted(devices, key=lambda d: phase[d.id])
            for d in order:
                due = base + phase[d.id]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif stats["recording"]:
                    stats["late"].append(-wait * 1000)
                d.tick()
            second += 1

    async def recorder():
        await asyncio.sleep(start + warm - loop.time())
        stats["recording"] = True
        t_rec = time.process_time()
        await asyncio.sleep(hold)
        stats["recording"] = False
        stats["gen_cpu"] = (time.process_time() - t_rec) / hold

    async def api_user():
        while loop.time() < end and web:
            await asyncio.to_thread(poll_api, web, stats)
            await asyncio.sleep(1)

    await asyncio.gather(ticker(), recorder(), api_user())
    await asyncio.sleep(1)  # the last answers
    rtt = stats["rtt"] + [5000.0] * stats["lost"]
    return {
        "devices": len(devices),
        "rate": stats["sent"] / hold,
        "p50": percentile(rtt, 50),
        "p99": percentile(rtt, 99),
        "max": max(rtt) if rtt else float("nan"),
        "lost": stats["lost"],
        "api_p99": percentile(stats["api"], 99),
        "late_p99": percentile(stats["late"], 99) if stats["late"] else 0.0,
        "gen_cpu": stats.get("gen_cpu", 0.0),
    }


async def grow(devices: list[SimDevice], n: int, port: int, echo: bool, stats: dict) -> None:
    while len(devices) < n:
        batch = [SimDevice(len(devices) + i, "127.0.0.1", port, echo, stats) for i in range(min(100, n - len(devices)))]
        for d in batch:
            d.task = asyncio.create_task(d.run())
        await asyncio.wait_for(asyncio.gather(*(d.ready.wait() for d in batch)), 30)
        devices.extend(batch)


def cpu_of(proc: subprocess.Popen) -> float:
    import psutil

    p = psutil.Process(proc.pid)
    return sum(c.cpu_times().user + c.cpu_times().system for c in [p, *p.children(recursive=True)])


async def run(args) -> int:
    work = tempfile.mkdtemp(prefix="ccm-fleet-")
    proc, port, web = start_cloud(work)
    print(f"ccm cloud: broker 127.0.0.1:{port}, dashboard {web}; {os.cpu_count()} CPUs on this machine")
    print(
        f"each device: presence + shadow update at 1/s; hold {args.hold:g} s per step; bound p99 <= {BOUND_MS:g} ms\n"
    )
    head = f"{'devices':>8} {'updates/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>5} {'API p99':>8} {'cloud CPU':>9} {'gen CPU':>7} {'gen late p99':>12}"
    print(head)
    stats: dict = {"recording": False}
    devices: list[SimDevice] = []
    served = 0
    results = []
    try:
        for n in args.steps:
            await grow(devices, n, port, False, stats)
            c0, t0 = cpu_of(proc), time.monotonic()
            r = await measure(devices, args.hold, stats, web)
            r["cloud_cpu"] = (cpu_of(proc) - c0) / (time.monotonic() - t0)
            results.append(r)
            ok = r["p99"] <= BOUND_MS and r["lost"] == 0
            print(
                f"{r['devices']:>8} {r['rate']:>9.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['max']:>7.1f} {r['lost']:>5}"
                f" {r['api_p99']:>7.1f}ms {r['cloud_cpu'] * 100:>8.0f}% {r['gen_cpu'] * 100:>6.0f}% {r['late_p99']:>10.1f}ms"
                + ("" if ok else "   <- over the bound"),
                flush=True,
            )
            if not ok:
                break
            served = n
        for d in devices:
            d.task.cancel()
        # the floor: the same devices and load, answered by mosquitto alone (no shadow service)
        floor_n = served or args.steps[0]
        echo: list[SimDevice] = []
        await grow(echo, floor_n, port, True, stats)
        f = await measure(echo, args.hold, stats, None)
        for d in echo:
            d.task.cancel()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    at = next((r for r in results if r["devices"] == floor_n), results[-1])
    print(f"\nbroker alone (echo) at {floor_n} devices: p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms")
    print(f"served with p99 <= {BOUND_MS:g} ms: {served} devices = {served / GOAL:.2f}x the goal of {GOAL}")
    print(
        f"shadow round trip / broker alone at {floor_n} devices: p50 {at['p50'] / f['p50']:.1f}x, p99 {at['p99'] / f['p99']:.1f}x"
    )
    if served and served == args.steps[-1]:
        print("(the last step passed: more devices may fit; add steps with --steps)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="250,500,1000,1500,2000,3000", help="device counts to try, in order")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds measured per step")
    args = ap.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
