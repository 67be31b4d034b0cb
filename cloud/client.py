"""The cloud application's side of a CCM, on paho-mqtt: RPC to devices, their shadows, pub/sub.

    with CloudClient("mqtt://127.0.0.1:1883") as cloud:
        cloud.call("ccm-0001", "Sum", [2, 3])             # RPC over MQTT, answered by the host MCU
        cloud.shadow_update("ccm-0001", {"desired": {"on": True}})
        cloud.shadow_get("ccm-0001")

Used by `ccm --port mqtt://HOST:PORT/DEVICE_ID …`, `ccm shadow …`, the tests and the benchmarks.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import Any

from ccm.mqtt import topic_matches
from ccm.rpc import RpcError
from cloud.shadow_service import PREFIX, broker_login, no_delay, parse_broker_url


class ShadowError(Exception):
    """A rejected shadow request: AWS's code (400, 404, 409) and message."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


REPLY_PREFIX = "cloud/"  # the cloud's callers are answered under cloud/…/rpc: the one place besides their own
# topics a device may publish to on `ccm cloud`'s broker (its ACL, cloud/broker.py)


class CloudClient:
    KEEP = 20000  # messages kept for wait_message(); older ones are dropped (a long-running client stays small)

    def __init__(self, broker: str, client_id: str | None = None, tls: dict | None = None, keepalive: int = 30):
        import paho.mqtt.client as paho

        self.host, self.port = parse_broker_url(broker)
        self.client_id = client_id or f"cloud-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311)
        broker_login(self.client, broker)
        if tls:
            self.client.tls_set(ca_certs=tls.get("cafile"), certfile=tls.get("certfile"), keyfile=tls.get("keyfile"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = no_delay
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(0.1, 2)
        self.keepalive = keepalive
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self._dropped = 0  # messages dropped from the front: indices (mark(), after=) stay absolute
        self._listeners: list[tuple[str, Any]] = []  # (pattern, fn(topic, payload, retain)): not kept
        self._cv = threading.Condition()
        self._subs: dict[str, int] = {}
        self._acked: set[int] = set()
        self.connected = threading.Event()
        self._ids = itertools.count(1)

    # -- connection -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> CloudClient:
        try:
            self.client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as e:
            raise ConnectionError(f"no MQTT broker at {self.host}:{self.port}: {e}") from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            why = getattr(self, "refused", None)
            hint = f" ({why}: give its user and password, mqtt://USER:PASSWORD@HOST:PORT)" if why else ""
            raise ConnectionError(f"the broker at {self.host}:{self.port} did not accept the connection{hint}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> CloudClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code == 0:
            for topic, qos in self._subs.items():  # after a broker restart
                client.subscribe(topic, qos)
            self.connected.set()
        else:
            self.refused = str(reason_code)  # e.g. "Not authorized": a broker that knows its clients

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cv:
            self._acked.add(mid)
            self._cv.notify_all()

    def _on_message(self, client, userdata, msg):
        for pattern, fn in self._listeners:
            if topic_matches(pattern, msg.topic):
                fn(msg.topic, msg.payload, msg.retain)
                return
        with self._cv:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            if len(self.messages) > self.KEEP:
                half = self.KEEP // 2
                del self.messages[:half]
                self._dropped += half
            self._cv.notify_all()

    # -- pub/sub ------------------------------------------------------------------------------
    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the broker's SUBACK."""
        self._subs[topic] = qos
        _, mid = self.client.subscribe(topic, qos)
        with self._cv:
            if not self._cv.wait_for(lambda: mid in self._acked, timeout):
                raise TimeoutError(f"no SUBACK for {topic}")

    def listen(self, pattern: str, fn, qos: int = 1) -> None:
        """Hand every message on `pattern` to fn(topic, payload, retain), on paho's thread, instead of
        keeping it for wait_message(): for watchers of busy topics (presence, shadow documents)."""
        self._listeners.append((pattern, fn))
        self.subscribe(pattern, qos)

    def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False, timeout: float = 10.0) -> None:
        if not isinstance(payload, str | bytes):
            payload = json.dumps(payload, separators=(",", ":"))
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)

    def wait_message(
        self, pattern: str, predicate=None, timeout: float = 10.0, after: int = 0
    ) -> tuple[int, str, bytes]:
        """The first message (from index `after` on) whose topic matches `pattern` and payload passes `predicate`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            i = after
            while True:
                i = max(i, self._dropped)
                while i - self._dropped < len(self.messages):
                    topic, payload, _ = self.messages[i - self._dropped]
                    i += 1
                    if topic_matches(pattern, topic) and (predicate is None or predicate(payload)):
                        return i, topic, payload
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no message on {pattern} within {timeout:g} s")
                self._cv.wait(left)

    def mark(self) -> int:
        """Where new messages start: pass as `after=` to wait only for what comes next."""
        with self._cv:
            return self._dropped + len(self.messages)

    # -- RPC over MQTT (docs/protocol.md, the cloud) --------------------------------------------------------------
    def call(self, device_id: str, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        src = f"{REPLY_PREFIX}{self.client_id}"  # answered on {src}/rpc: under cloud/, where devices may answer
        reply_topic = f"{src}/rpc"
        if reply_topic not in self._subs:
            self.subscribe(reply_topic)
        i = next(self._ids)
        frame: dict = {"id": i, "src": src, "method": method}
        if params is not None:
            frame["params"] = params
        start = self.mark()
        self.publish(f"{device_id}/rpc", frame)

        def mine(payload: bytes) -> bool:
            try:
                return json.loads(payload).get("id") == i
            except ValueError:
                return False

        try:
            _, _, payload = self.wait_message(reply_topic, mine, timeout, start)
        except TimeoutError:
            raise TimeoutError(f"{device_id} did not answer {method} within {timeout:g} s (is it online?)") from None
        reply = json.loads(payload)
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e.get("code", -32603), e.get("message"), e.get("data"))
        return reply.get("result")

    # -- the device shadow --------------------------------------------------------------------
    def _shadow(self, thing: str, op: str, request: dict, timeout: float) -> dict:
        base = f"{PREFIX}{thing}/shadow/{op}"
        for outcome in ("accepted", "rejected"):
            if f"{base}/{outcome}" not in self._subs:
                self.subscribe(f"{base}/{outcome}")
        token = f"{self.client_id}-{next(self._ids)}"
        request = {**request, "clientToken": token}
        start = self.mark()
        self.publish(base, request)

        def mine(payload: bytes) -> bool:
            try:
                return json.loads(payload).get("clientToken") == token
            except ValueError:
                return False

        try:
            _, topic, payload = self.wait_message(f"{base}/+", mine, timeout, start)
        except TimeoutError:
            raise TimeoutError(
                f"no answer from the shadow service for {thing} {op} (is `ccm cloud` running?)"
            ) from None
        doc = json.loads(payload)
        if topic.endswith("/rejected"):
            raise ShadowError(doc.get("code", 0), doc.get("message", ""))
        return doc

    def shadow_get(self, thing: str, timeout: float = 10.0) -> dict:
        return self._shadow(thing, "get", {}, timeout)

    def shadow_update(self, thing: str, state: dict, version: int | None = None, timeout: float = 10.0) -> dict:
        req: dict = {"state": state}
        if version is not None:
            req["version"] = version
        return self._shadow(thing, "update", req, timeout)

    def shadow_delete(self, thing: str, timeout: float = 10.0) -> dict:
        return self._shadow(thing, "delete", {}, timeout)
