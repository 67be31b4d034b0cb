"""Who `ccm cloud`'s mosquitto lets in, kept in its --state folder: each device's MQTT password
(devices.json: {device id: password}; `ccm cloud add-device`) and the cloud's own (cloud.json, with the
running broker's pid and password file, so a device added while it runs is let in at once)."""

from __future__ import annotations

import json
import os
import secrets
import signal

from cloud.broker import CLOUD_USER, set_password

DEFAULT_DEVICE = "ccm-000000"  # `ccm sim ccm`'s id: `ccm cloud` lets it in from the start


class CloudState:
    """`ccm cloud`'s broker users, in --state DIR: devices.json ({device id: MQTT password}), cloud.json (the
    cloud's own password; while running, the broker's pid and password file, for add-device)."""

    def __init__(self, directory: str):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def _read(self, name: str) -> dict:
        try:
            with open(os.path.join(self.dir, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _write(self, name: str, data: dict) -> None:
        path = os.path.join(self.dir, name)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # passwords: owner only
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)

    def cloud_password(self) -> str:
        c = self._read("cloud.json")
        if not c.get("password"):
            c["password"] = secrets.token_urlsafe(12)
            self._write("cloud.json", c)
        return c["password"]

    def devices(self) -> dict:
        d = self._read("devices.json")
        if not d:
            self._store(DEFAULT_DEVICE)
            d = self._read("devices.json")
        return d

    def _store(self, device: str) -> str:
        d = self._read("devices.json")
        d[device] = d.get(device) or secrets.token_urlsafe(12)
        self._write("devices.json", d)
        return d[device]

    def add(self, device: str) -> tuple[str, str | None]:
        """A device's password (made once); a running broker lets it in at once (mosquitto reads its
        password file again on SIGHUP). Returns (password, the running broker's URL or None)."""
        if device in (CLOUD_USER, "cloud") or not device.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{device!r}: a device id is letters, digits, - and _ (and not {CLOUD_USER} or cloud)")
        password = self._store(device)
        live = self.live_broker()
        if live is None:
            return password, None
        set_password(live["passwd"], device, password)
        os.kill(live["pid"], signal.SIGHUP)
        return password, live["url"]

    def running(self, broker) -> None:
        c = self._read("cloud.json")
        if broker is not None and getattr(broker, "kind", "") == "mosquitto":
            c["broker"] = {"pid": broker.proc.pid, "passwd": str(broker.dir / "passwd"), "url": broker.url}
        else:
            c.pop("broker", None)
        self._write("cloud.json", c)

    def live_broker(self) -> dict | None:
        b = self._read("cloud.json").get("broker")
        if not b:
            return None
        try:
            os.kill(b["pid"], 0)
        except (OSError, KeyError, TypeError):
            return None
        return b
