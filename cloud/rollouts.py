"""OTA rollouts started from `ccm cloud`'s API: one bundle to a list of devices, through the shadow's
`desired.ota {url, version}` or an `OTA.Update` call; each device's progress is read from its
`reported.ota` as the fleet watcher last saw it."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

from ccm.rpc import RpcError
from cloud.fleet import Fleet, NotFound, Offline


class Rollouts:
    """OTA rollouts started from the API; each device's progress is read from its reported.ota."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.items: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ota rpc")

    def start(self, entry: dict, url: str, devices: list[str], via: str, service) -> dict:
        rid = str(next(self._ids))
        r = {
            "id": rid,
            "bundle": entry["name"],
            "version": entry["version"],
            "url": url,
            "via": via,
            "started": time.time(),
            "errors": {},
            "devices": devices,
        }
        self.items[rid] = r
        for dev in devices:
            if via == "shadow":
                ok, doc = service.request(
                    dev, "update", {"state": {"desired": {"ota": {"url": url, "version": r["version"]}}}}
                )
                if not ok:
                    r["errors"][dev] = doc.get("message", "refused")
            else:
                self._pool.submit(self._rpc, r, dev, url)
        return self.view(r)

    def _rpc(self, r: dict, dev: str, url: str) -> None:
        try:
            self.fleet.call(dev, "OTA.Update", {"url": url}, timeout=900)
        except (RpcError, TimeoutError, Offline, NotFound, ConnectionError) as e:
            r["errors"][dev] = str(e)

    def view(self, r: dict) -> dict:
        out = {k: v for k, v in r.items() if k not in ("errors", "devices")}
        states = {}
        for dev in r["devices"]:
            try:
                d = self.fleet.get(dev)
            except NotFound:
                states[dev] = {"state": "error", "progress": 0, "message": "unknown device"}
                continue
            states[dev] = self._device_state(r, d)
        out["devices"] = states
        counts = [s["state"] for s in states.values()]
        out["done"] = all(c in ("success", "error") for c in counts)
        out["succeeded"] = counts.count("success")
        out["failed"] = counts.count("error")
        return out

    @staticmethod
    def _device_state(r: dict, d) -> dict:
        ota = d.ota or {}
        fresh = (d.ota_at or 0) >= r["started"] - 1
        version = r["version"]
        st = {"state": "pending", "progress": 0, "message": "", "version": ota.get("version")}
        if (
            ota.get("version") == version
            and ota.get("state") in (0, 3)
            and (fresh or ota.get("target") in (None, version))
        ):
            st.update(state="success", progress=100, message=ota.get("message") or "")
        elif fresh and ota.get("target") == version and ota.get("state") == 1:
            st.update(state="progress", progress=ota.get("progress") or 0, message=ota.get("message") or "")
        elif fresh and ota.get("target") == version and ota.get("state") == 2:
            st.update(state="error", progress=ota.get("progress") or 0, message=ota.get("message") or "")
        elif d.id in r["errors"]:
            st.update(state="error", message=r["errors"][d.id])
        return st

    def list(self) -> list[dict]:
        return [self.view(r) for r in sorted(self.items.values(), key=lambda r: -r["started"])]

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
