"""WiFi provisioning on the module's own runtime (issue 11, item 4): what the ESP32's radio driver raises
— a refused connect while it is still reconnecting, an AP password it will not take — is reported and
retried; provisioning never ends. Portable (CPython + MicroPython)."""

import asyncio

from ccm.config import Config
from ccm.provision import AP, CONNECTED, Provisioner
from ccm.router import Router


class Radio:
    """The board's WLAN as the ESP32 port behaves: connect() may raise OSError; an AP password of fewer
    than 8 characters raises OSError("Wifi Invalid Password")."""

    mac = "24:0A:C4:12:34:56"

    def __init__(self, faults=()):
        self.faults = list(faults)
        self.joined = None
        self.ap = None
        self.connects = 0

    async def wlan_connect(self, ssid, password, timeout_ms):
        self.connects += 1
        await asyncio.sleep(0.001)
        if self.faults:
            raise OSError(self.faults.pop(0))
        self.joined = ssid
        return "192.168.1.100"

    def wlan_isconnected(self):
        return self.joined is not None

    def wlan_error(self):
        return None

    async def ap_start(self, ssid, password, ip):
        if password and not 8 <= len(password) <= 63:
            raise OSError("Wifi Invalid Password")
        self.ap = ssid

    async def ap_stop(self):
        self.ap = None


async def until(cond, what, steps=500):
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


async def test_radio_errors_are_reported_and_retried_until_it_joins():
    radio = Radio(["Wifi Internal Error", "sta is connecting, cannot set config"])
    cfg = Config({"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}})
    p = Provisioner(cfg, radio, Router(cfg, radio))
    task = asyncio.create_task(p._wifi())
    try:
        await until(lambda: p.last_error, "the first failure")
        assert "Wifi Internal Error" in p.status()["reason"] and not task.done()
        p._changed.set()  # as a new setting does: the back-off ends early
        await until(lambda: radio.connects == 2 and "cannot set config" in (p.last_error or ""), "the second")
        p._changed.set()
        await until(lambda: p.state == CONNECTED, "joined")
        assert p.status()["ip"] == "192.168.1.100" and "reason" not in p.status()
    finally:
        task.cancel()


async def test_a_short_ap_password_is_reported_and_provisioning_goes_on():
    radio = Radio()
    cfg = Config({"wifi": {"ap": {"pass": "short"}}})
    p = Provisioner(cfg, radio, Router(cfg, radio))
    task = asyncio.create_task(p._wifi())
    try:
        await until(lambda: p.last_error, "the refused AP")
        assert p.state == AP and "Wifi Invalid Password" in p.status()["reason"] and not task.done()
        cfg.tree["wifi"]["ap"]["pass"] = "long enough"  # mended (Config.Set refuses "short" itself)
        p._changed.set()
        await until(lambda: radio.ap is not None, "the AP up")
        assert "reason" not in p.status()
    finally:
        task.cancel()
