"""An AWS IoT compatible device shadow service over any MQTT broker (docs/protocol.md, the cloud).

    ccm cloud --broker mqtt://127.0.0.1:1883 --db shadows.sqlite

Topics and documents follow AWS IoT's classic shadow: `$aws/things/{thing}/shadow/{update,get,delete}`
with answers on `…/accepted`, `…/rejected`, `update/delta` and `update/documents`; versions, `null`
deletes, 409 on a version mismatch, and AWS's error codes and messages. `Shadows` is the logic (no
MQTT); `ShadowService` puts it on a broker with paho-mqtt; state persists in SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from urllib.parse import urlparse

from ccm.shadow import delta, merge_state

PREFIX = "$aws/things/"
VERSION_KEPT_S = 48 * 3600  # AWS: a shadow re-created within 48 h of its delete continues its version


def _metadata(state, ts: int, nulls: bool = True):
    """Timestamps in the shape of `state`; nulls=False leaves out the keys a null deletes."""
    if isinstance(state, dict):
        return {k: _metadata(v, ts, nulls) for k, v in state.items() if nulls or v is not None}
    return {"timestamp": ts}


def _merge_metadata(meta, old, new, ts: int):
    """A section's metadata after the update `new` of its state `old`: deleted keys lose their entry."""
    if not isinstance(new, dict) or not isinstance(old, dict) or not isinstance(meta, dict):
        return _metadata(new, ts, nulls=False)
    out = dict(meta)
    for k, v in new.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_metadata(out.get(k), old.get(k), v, ts)
    return out


def _error(code: int, message: str, token, ts: int) -> dict:
    e = {"code": code, "message": message, "timestamp": ts}
    if token is not None:
        e["clientToken"] = token
    return e


class Shadows:
    """Shadow documents in SQLite. Each operation returns [(topic suffix, document), …] to publish."""

    def __init__(self, db: str = ":memory:"):
        self.db = sqlite3.connect(db, check_same_thread=False)
        if db != ":memory:":  # a commit per update: WAL keeps each one to a single append
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS shadow (thing TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS deleted (thing TEXT PRIMARY KEY, version INT, ts INT)")
        self.db.commit()
        self.lock = threading.Lock()

    def load(self, thing: str) -> dict | None:
        row = self.db.execute("SELECT doc FROM shadow WHERE thing = ?", (thing,)).fetchone()
        return json.loads(row[0]) if row else None

    def things(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT thing FROM shadow ORDER BY thing")]

    def _save(self, thing: str, doc: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO shadow VALUES (?, ?)", (thing, json.dumps(doc)))
        self.db.commit()

    def _deleted_version(self, thing: str, ts: int) -> int:
        row = self.db.execute("SELECT version, ts FROM deleted WHERE thing = ?", (thing,)).fetchone()
        return row[0] if row and ts - row[1] < VERSION_KEPT_S else 0

    def handle(self, thing: str, op: str, payload: bytes) -> list[tuple[str, dict]]:
        with self.lock:
            return getattr(self, "_" + op)(thing, payload)

    def _parse(self, op: str, payload: bytes, ts: int):
        if not payload.strip() and op != "update":
            return {}, None
        try:
            req = json.loads(payload)
        except ValueError:
            return None, [(op + "/rejected", _error(400, "Payload contains invalid json", None, ts))]
        if not isinstance(req, dict):
            return None, [(op + "/rejected", _error(400, "Payload contains invalid json", None, ts))]
        return req, None

    def _update(self, thing: str, payload: bytes):
        ts = int(time.time())
        req, err = self._parse("update", payload, ts)
        if err:
            return err
        token = req.get("clientToken")
        state = req.get("state")
        if "state" not in req:
            return [("update/rejected", _error(400, "Missing required node: state", token, ts))]
        if not isinstance(state, dict):
            return [("update/rejected", _error(400, "State node must be an object", token, ts))]
        for k in state:
            if k not in ("desired", "reported"):
                return [("update/rejected", _error(400, f"State contains an invalid node: '{k}'", token, ts))]
        doc = self.load(thing) or {"state": {}, "metadata": {}, "version": self._deleted_version(thing, ts)}
        created = "timestamp" not in doc
        if "version" in req and req["version"] != doc["version"]:
            return [("update/rejected", _error(409, "Version conflict", token, ts))]
        previous = json.loads(json.dumps(doc))
        for section in ("desired", "reported"):
            if section not in state:
                continue
            new = state[section]
            if new is None:
                doc["state"].pop(section, None)
                doc["metadata"].pop(section, None)
                continue
            old = doc["state"].get(section) or {}
            merged = merge_state(old, new)
            if merged == {}:  # emptied by nulls: AWS drops the section
                doc["state"].pop(section, None)
                doc["metadata"].pop(section, None)
                continue
            doc["state"][section] = merged
            doc["metadata"][section] = _merge_metadata(doc["metadata"].get(section) or {}, old, new, ts)
        doc["version"] += 1
        doc["timestamp"] = ts
        self._save(thing, doc)
        accepted = {"state": state, "metadata": _metadata(state, ts), "version": doc["version"], "timestamp": ts}
        if token is not None:
            accepted["clientToken"] = token
        out = [("update/accepted", accepted)]
        d = delta(doc["state"].get("desired") or {}, doc["state"].get("reported") or {})
        if d and "desired" in state:
            out.append(
                ("update/delta", {"version": doc["version"], "timestamp": ts, "state": d, "metadata": _metadata(d, ts)})
            )
        documents = {
            "previous": None if created else {k: previous[k] for k in ("state", "metadata", "version")},
            "current": {k: doc[k] for k in ("state", "metadata", "version")},
            "timestamp": ts,
        }
        if token is not None:
            documents["clientToken"] = token
        out.append(("update/documents", documents))
        return out

    def _get(self, thing: str, payload: bytes):
        ts = int(time.time())
        req, err = self._parse("get", payload, ts)
        if err:
            return err
        token = req.get("clientToken")
        doc = self.load(thing)
        if doc is None:
            return [("get/rejected", _error(404, f"No shadow exists with name: '{thing}'", token, ts))]
        state = dict(doc["state"])
        d = delta(state.get("desired") or {}, state.get("reported") or {})
        if d:
            state["delta"] = d
        answer = {"state": state, "metadata": doc["metadata"], "version": doc["version"], "timestamp": ts}
        if token is not None:
            answer["clientToken"] = token
        return [("get/accepted", answer)]

    def _delete(self, thing: str, payload: bytes):
        ts = int(time.time())
        req, err = self._parse("delete", payload, ts)
        if err:
            return err
        token = req.get("clientToken")
        doc = self.load(thing)
        if doc is None:
            return [("delete/rejected", _error(404, f"No shadow exists with name: '{thing}'", token, ts))]
        self.db.execute("DELETE FROM shadow WHERE thing = ?", (thing,))
        self.db.execute("INSERT OR REPLACE INTO deleted VALUES (?, ?, ?)", (thing, doc["version"], ts))
        self.db.commit()
        answer = {"version": doc["version"], "timestamp": ts}
        if token is not None:
            answer["clientToken"] = token
        return [("delete/accepted", answer)]


def no_delay(client, userdata, sock) -> None:
    """paho's on_socket_open: small packets go out at once (Nagle + delayed ACK cost ~40 ms each)."""
    import socket

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (websockets, TLS wrapper without it)
        pass


def parse_broker_url(url: str) -> tuple[str, int]:
    u = urlparse(url if "://" in url else "mqtt://" + url)
    return u.hostname or "127.0.0.1", u.port or 1883


def broker_login(client, url: str) -> None:
    """The user and password in mqtt://USER:PASSWORD@HOST:PORT, given to a paho client (a broker that
    knows its clients: `ccm cloud`'s mosquitto, cloud/broker.py)."""
    from pc.net import url_credentials

    _, user, password = url_credentials(url)
    if user:
        client.username_pw_set(user, password)


class ShadowService:
    """`Shadows` on a broker: subscribes to every thing's update/get/delete and publishes the answers."""

    def __init__(self, broker: str, db: str = ":memory:", client_id: str = "ccm-shadow-service"):
        import paho.mqtt.client as paho

        self.host, self.port = parse_broker_url(broker)
        self.shadows = Shadows(db)
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        broker_login(self.client, broker)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
        self.client.reconnect_delay_set(0.2, 5)
        self.listeners: list = []  # fn(thing, suffix, document) for every answer published
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_disconnect = lambda *a: self._subscribed.clear()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(PREFIX + "+/shadow/" + op, 1) for op in ("update", "get", "delete")])

    def _on_message(self, client, userdata, msg):
        parts = msg.topic.split("/")
        if len(parts) != 5 or parts[3] != "shadow":
            return
        self._answer(parts[2], parts[4], msg.payload)

    def _answer(self, thing: str, op: str, payload: bytes) -> list[tuple[str, dict]]:
        out = self.shadows.handle(thing, op, payload)
        for suffix, doc in out:
            self.client.publish(f"{PREFIX}{thing}/shadow/{suffix}", json.dumps(doc, separators=(",", ":")), qos=1)
        for suffix, doc in out:
            for fn in self.listeners:
                fn(thing, suffix, doc)
        return out

    def request(self, thing: str, op: str, request: dict | None = None) -> tuple[bool, dict]:
        """A shadow request from this process (the dashboard): answered, and published, exactly as if it
        had come over MQTT (the device gets its delta; a get is answered here only). (accepted?, the accepted or rejected document)."""
        if op not in ("update", "get", "delete"):
            raise ValueError(f"no shadow operation {op!r}")
        payload = json.dumps(request or {}).encode()
        # a get is answered only to the asker: nothing to publish
        out = self.shadows.handle(thing, op, payload) if op == "get" else self._answer(thing, op, payload)
        suffix, doc = out[0]
        return suffix.endswith("/accepted"), doc

    @property
    def ready(self) -> bool:
        """Connected and subscribed: requests published now will be answered."""
        return self._subscribed.is_set()

    def start(self, timeout: float = 10.0) -> ShadowService:
        """Connect and wait until the subscriptions are in place."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.client.loop_stop()
            raise ConnectionError(f"shadow service: no broker answering at {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> ShadowService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
