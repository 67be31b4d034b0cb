"""Many cloud callers at once: RPC bursts over MQTT at one CCM, every answer checked (issue 10).

    from cloud.load import hammer
    r = hammer("mqtt://127.0.0.1:1883", "ccm-1", callers=20, burst=40)
    print(r.summary())           # calls/s, p50/p99, answers by outcome; r.lost and r.crosstalk must be 0

Each caller is its own paho client with its own reply topic. Its calls alternate between `Sum [k, c]`
(forwarded to the host; the right answer is k + c, so an answer meant for another call shows) and
`RPC.List` (served by the CCM). A call ends with its result, an error (-32002 queue full, -32000 host
timeout, …) or, if nothing came back before the deadline, as lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from cloud.shadow_service import no_delay, parse_broker_url


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of xs; nan when there is none."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


@dataclass
class LoadResult:
    calls: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)  # "result" or the error code
    latencies: list = field(default_factory=list)  # seconds, answered calls
    lost: int = 0
    crosstalk: int = 0  # answers with a wrong result, dst or id, or a second answer to one call

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)

    def summary(self) -> str:
        by = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items(), key=lambda kv: str(kv[0])))
        return (
            f"{self.calls} calls in {self.seconds:.2f} s = {self.calls / self.seconds:.0f} calls/s; "
            f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms; "
            f"{by}; lost {self.lost}, cross-talk {self.crosstalk}"
        )


class _Caller:
    def __init__(self, index: int, host: str, port: int, device_id: str, tag: str):
        import paho.mqtt.client as paho

        self.index = index
        self.client_id = f"load-{tag}-{index}"
        self.device_topic = f"{device_id}/rpc"
        self.device_id = device_id
        self.sent: dict[int, tuple[float, str, int | None]] = {}  # id -> (t0, method, expected)
        self.answers: dict[int, tuple[float, dict]] = {}
        self.extra = 0
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311)
        self.client.on_socket_open = no_delay
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{self.client_id}/rpc", 1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        try:
            reply = json.loads(msg.payload)
        except ValueError:
            with self.lock:
                self.extra += 1
            return
        with self.lock:
            i = reply.get("id")
            if reply.get("dst") != self.client_id or i not in self.sent or i in self.answers:
                self.extra += 1
            else:
                self.answers[i] = (now, reply)

    def fire(self, burst: int) -> None:
        for k in range(1, burst + 1):
            if k % 2:
                frame = {"id": k, "src": self.client_id, "method": "Sum", "params": [k, self.index]}
                expected = k + self.index
            else:
                frame = {"id": k, "src": self.client_id, "method": "RPC.List"}
                expected = None
            self.sent[k] = (time.monotonic(), frame["method"], expected)
            self.client.publish(self.device_topic, json.dumps(frame, separators=(",", ":")), qos=1)

    def done(self) -> bool:
        with self.lock:
            return len(self.answers) == len(self.sent)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def hammer(broker: str, device_id: str, callers: int = 10, burst: int = 40, deadline: float = 60.0) -> LoadResult:
    """`callers` clients each publish `burst` calls at once; wait for every answer (or the deadline)."""
    host, port = parse_broker_url(broker)
    tag = "%x" % (time.monotonic_ns() & 0xFFFFFF)
    group = [_Caller(i, host, port, device_id, tag) for i in range(callers)]
    try:
        for c in group:
            if not c.subscribed.wait(10):
                raise ConnectionError(f"{c.client_id} could not subscribe at {broker}")
        t0 = time.monotonic()
        threads = [threading.Thread(target=c.fire, args=(burst,)) for c in group]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = time.monotonic() + deadline
        while time.monotonic() < end and not all(c.done() for c in group):
            time.sleep(0.01)
        time.sleep(0.2)  # anything arriving late or twice shows up as cross-talk
        r = LoadResult(calls=callers * burst)
        last = t0
        for c in group:
            with c.lock:
                for i, (t_sent, method, expected) in c.sent.items():
                    got = c.answers.get(i)
                    if got is None:
                        r.lost += 1
                        continue
                    t_got, reply = got
                    last = max(last, t_got)
                    r.latencies.append(t_got - t_sent)
                    if "error" in reply:
                        r.outcomes[reply["error"].get("code")] += 1
                    elif (method == "Sum" and reply.get("result") != expected) or (
                        method == "RPC.List" and "RPC.List" not in (reply.get("result") or [])
                    ):
                        r.crosstalk += 1
                    else:
                        r.outcomes["result"] += 1
                r.crosstalk += c.extra
        r.seconds = max(last - t0, 1e-6)
        return r
    finally:
        for c in group:
            c.stop()
