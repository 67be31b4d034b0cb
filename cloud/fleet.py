"""What the dashboard knows of the devices on a broker: presence, last seen, versions, OTA, history.

    fleet = Fleet(broker_url, shadow_service).start()
    fleet.devices()            # [{id, online, last_seen, fw_version, host_version, ota, …}]
    fleet.call("ccm-0001", "Sum", [2, 3])
    fleet.events.subscribe(fn)  # fn(event) on every change worth showing: presence, info, OTA, shadows

Presence comes from the retained `{device}/status` topic (docs/protocol.md, the cloud), shadows from the shadow service
in this process (its listeners: no extra MQTT traffic per update), versions from `Sys.GetInfo`, asked
when a device comes online, after an OTA succeeds, and whenever the dashboard looks at the device.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ccm.rpc import RpcError
from cloud.client import CloudClient

HISTORY = 600  # samples kept per series (10 min at 1/s)
SERIES_MAX = 24  # numeric series kept per device


class NotFound(KeyError):
    """No device of that id has been seen (presence) and none has a shadow."""


class Offline(Exception):
    """The device is known but its presence says offline."""


class Events:
    """Listeners of fleet changes; a listener that raises is dropped, the others go on."""

    def __init__(self):
        self._fns: list = []
        self._lock = threading.Lock()

    def subscribe(self, fn) -> None:
        with self._lock:
            self._fns.append(fn)

    def unsubscribe(self, fn) -> None:
        with self._lock:
            if fn in self._fns:
                self._fns.remove(fn)

    def emit(self, event: dict) -> None:
        with self._lock:
            fns = list(self._fns)
        for fn in fns:
            try:
                fn(event)
            except Exception:
                self.unsubscribe(fn)


def numeric_leaves(doc: Any, prefix: str) -> dict[str, float]:
    """{'reported.a.b': 1.5, …}: the numbers (not booleans) in a JSON tree, by dotted path."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(numeric_leaves(v, f"{prefix}.{k}"))
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        out[prefix] = doc
    return out


class Device:
    def __init__(self, device_id: str):
        self.id = device_id
        self.online = False
        self.last_seen: float | None = None
        self.since: float | None = None  # when presence last changed
        self.info: dict | None = None
        self.info_at: float | None = None
        self.info_error: str | None = None
        self.host_info: dict | None = None  # the host MCU's own Sys.Info {fw_version, app, …}
        self.ota: dict | None = None  # the shadow's reported.ota
        self.ota_at: float | None = None  # when it last changed
        self.history: dict[str, deque] = {}

    def summary(self) -> dict:
        info = self.info or {}
        host = self.host_info or {}
        return {
            "id": self.id,
            "online": self.online,
            "last_seen": self.last_seen,
            "since": self.since,
            "fw_version": info.get("fw_version"),
            "host_version": host.get("fw_version"),
            "host_app": host.get("app"),
            "info_at": self.info_at,
            "info_error": self.info_error,
            "ota": self.ota,
        }

    def sample(self, values: dict[str, float], ts: float) -> None:
        for name, v in values.items():
            series = self.history.get(name)
            if series is None:
                if len(self.history) >= SERIES_MAX:
                    continue
                series = self.history[name] = deque(maxlen=HISTORY)
            series.append((round(ts, 3), v))


class Fleet:
    def __init__(self, broker: str, service, info_timeout: float = 5.0, client_id: str | None = None):
        self.service = service
        self.cloud = CloudClient(broker, client_id=client_id or f"ccm-dashboard-{id(self) & 0xFFFFFF:x}")
        self.info_timeout = info_timeout
        self.events = Events()
        self._devices: dict[str, Device] = {}
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fleet info")
        self._asking: set[str] = set()  # devices a background Sys.GetInfo is out for
        self._again: set[str] = set()  # ...and asked for again meanwhile (an OTA finished: new versions)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Fleet:
        for thing in self.service.shadows.things():
            self._device(thing)
        self.service.listeners.append(self._on_shadow)
        self.cloud.start()
        self.cloud.listen("+/status", self._on_presence)
        return self

    def stop(self) -> None:
        if self._on_shadow in self.service.listeners:
            self.service.listeners.remove(self._on_shadow)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.cloud.stop()

    # -- reading ----------------------------------------------------------------------------------
    def _device(self, device_id: str) -> Device:
        with self._lock:
            d = self._devices.get(device_id)
            if d is None:
                d = self._devices[device_id] = Device(device_id)
            return d

    def get(self, device_id: str) -> Device:
        with self._lock:
            d = self._devices.get(device_id)
        if d is None:
            raise NotFound(device_id)
        return d

    def known(self, device_id: str) -> bool:
        with self._lock:
            return device_id in self._devices

    def devices(self) -> list[dict]:
        with self._lock:
            return [d.summary() for _, d in sorted(self._devices.items())]

    def history(self, device_id: str) -> dict[str, list]:
        d = self.get(device_id)
        with self._lock:
            return {name: list(s) for name, s in sorted(d.history.items())}

    # -- what the broker and the shadow service say -----------------------------------------------
    def _on_presence(self, topic: str, payload: bytes, retain: bool) -> None:
        state = payload.strip().lower()
        if state not in (b"online", b"offline"):
            return  # someone else's status topic
        now = time.time()
        with self._lock:
            d = self._device(topic[: -len("/status")])
            online = state == b"online"
            changed = d.online != online or d.since is None
            d.online = online
            if changed:
                d.since = now
            if online or not retain:
                d.last_seen = now
            summary = d.summary()
        if changed:
            self.events.emit({"type": "device", "device": summary})
            if online:
                self.refresh_info(d.id, wait=False)

    def _on_shadow(self, thing: str, suffix: str, doc: dict) -> None:
        if suffix not in ("update/documents", "delete/accepted"):
            return
        now = time.time()
        current = (doc.get("current") or {}).get("state") or {}
        reported = current.get("reported") or {}
        ota = reported.get("ota") if isinstance(reported.get("ota"), dict) else None
        with self._lock:
            d = self._device(thing)
            previous_reported = ((doc.get("previous") or {}).get("state") or {}).get("reported")
            if reported and reported != previous_reported:
                d.last_seen = now  # the device reported
            numbers = numeric_leaves({k: v for k, v in reported.items() if k != "ota"}, "reported")
            d.sample(numbers, now)  # (reported.ota is the update's progress bar, not a plot)
            ota_changed = ota != d.ota
            finished = (
                ota_changed
                and ota
                and ota.get("state") in (0, 3)
                and ota.get("version") != (d.ota or {}).get("version")
            )
            d.ota = ota
            if ota_changed:
                d.ota_at = now
            summary = d.summary()
        self.events.emit({"type": "shadow", "id": thing, "version": (doc.get("current") or {}).get("version")})
        if ota_changed:
            self.events.emit({"type": "device", "device": summary})
        if finished:
            self.refresh_info(thing, wait=False)  # the new versions

    # -- asking devices ---------------------------------------------------------------------------
    def call(self, device_id: str, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        """RPC over MQTT; RpcError is the device's own error, TimeoutError no answer, Offline at once
        when its presence says so."""
        d = self.get(device_id)
        if not d.online:
            raise Offline(f"{device_id} is offline (last seen {_ago(d.last_seen)})")
        result = self.cloud.call(device_id, method, params, timeout)
        with self._lock:
            d.last_seen = time.time()
        return result

    def refresh_info(self, device_id: str, wait: bool = True) -> dict:
        """Ask Sys.GetInfo (versions, heap, uptime) and keep it; wait=False asks in the background."""
        if not wait:
            with self._lock:
                if device_id in self._asking:  # asked already: ask once more when that answer is in
                    self._again.add(device_id)
                    return {}
                self._asking.add(device_id)
            try:
                self._pool.submit(self._ask_in_background, device_id)
            except RuntimeError:  # stopped
                pass
            return {}
        self._ask_info(device_id)
        return self.get(device_id).summary()

    def _ask_in_background(self, device_id: str) -> None:
        try:
            self._ask_info(device_id)
        finally:
            with self._lock:
                self._asking.discard(device_id)
                again = device_id in self._again
                self._again.discard(device_id)
        if again:
            self.refresh_info(device_id, wait=False)

    def _ask_info(self, device_id: str) -> None:
        d = self.get(device_id)
        host = None
        try:
            info = self.call(device_id, "Sys.GetInfo", timeout=self.info_timeout)
            error = None
            try:  # the host MCU's own (the CCM forwards it): its firmware version
                host = self.call(device_id, "Sys.Info", timeout=self.info_timeout)
            except (RpcError, TimeoutError):
                pass  # no host on the UART, or a host without Sys.Info
        except (RpcError, TimeoutError, Offline, ConnectionError) as e:
            info, error = None, str(e)
        now = time.time()
        with self._lock:
            if isinstance(host, dict):
                d.host_info = host
            if isinstance(info, dict):
                d.info, d.info_at, d.info_error = info, now, None
                sample = {k: info[k] for k in ("uptime", "heap_free", "rssi") if isinstance(info.get(k), int | float)}
                wifi = info.get("wifi")
                if isinstance(wifi, dict) and isinstance(wifi.get("rssi"), int | float):
                    sample["rssi"] = wifi["rssi"]
                d.sample({"info." + k: v for k, v in sample.items()}, now)
            else:
                d.info_error = error
            summary = d.summary()
        self.events.emit({"type": "device", "device": summary})


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = int(time.time() - ts)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago"
