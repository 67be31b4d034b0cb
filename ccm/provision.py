"""Provisioning (docs/protocol.md, provisioning; the manual §10–§11): WiFi station with retry, the `CCM-xxxxxx` access point
while unprovisioned, the factory-reset button, and the status LED.

The board does the radio and the pins (`wlan_connect`, `ap_start`, `wlan_scan`, `pin_read`,
`led_write`); this module decides when.
"""

import asyncio

from ccm import rpc
from ccm.compat import sleep_ms_async, ticks_diff, ticks_ms, wait_ms
from ccm.files import BLE_BONDS, remove

AP = "ap"  # unprovisioned: access point up, waiting for WiFi settings
CONNECTING = "connecting"
CONNECTED = "connected"
OTA = "ota"

# LED patterns: (on ms, off ms); solid when off is 0
LED_PATTERNS = {AP: (1000, 1000), CONNECTING: (150, 150), CONNECTED: (1, 0), OTA: (50, 50)}


class Provisioner:
    def __init__(self, config, board, router):
        self.config = config
        self.board = board
        self.router = router
        self.state = AP
        self.ip = None
        self.last_error = None
        self.override = None  # e.g. OTA: shown on the LED over the WiFi state
        self.on_press = []  # fn() for a press of the button shorter than hold_ms
        self.board_error = None  # what the radio raised at the last attempt
        self._changed = asyncio.Event()
        router.add("Wifi.Scan", self._scan)
        router.on_config_changed.append(self._changed.set)
        router.status["wifi"] = self.status

    def provisioned(self):
        return bool(self.config.get("wifi.sta.enable") and self.config.get("wifi.sta.ssid"))

    def ap_ssid(self):
        ssid = self.config.get("wifi.ap.ssid")
        if "??????" in ssid:
            ssid = ssid.replace("??????", "".join((self.board.mac or "000000").split(":"))[-6:])
        return ssid

    def status(self):
        st = {"state": self.state, "ssid": self.config.get("wifi.sta.ssid") or None, "ip": self.ip}
        if self.state == AP:
            st["ap_ssid"] = self.ap_ssid()
            st["ap_ip"] = self.config.get("wifi.ap.ip")
        if self.last_error:
            st["reason"] = self.last_error
        return st

    def _scan(self, params, call):
        rpc.take(params)

        async def scan():
            try:
                call.reply(await self.board.wlan_scan())
            except Exception as e:
                call.fail(rpc.INTERNAL_ERROR, "internal error: scan failed: %s" % e)

        asyncio.create_task(scan())
        return rpc.LATER

    async def run(self):
        tasks = [asyncio.create_task(self._button()), asyncio.create_task(self._led())]
        try:
            await self._wifi()
        finally:
            for t in tasks:
                t.cancel()

    async def _wifi(self):
        delay = 1000
        while True:
            self._changed.clear()
            if not self.provisioned():
                self.state = AP
                self.ip = None
                if self.config.get("wifi.ap.enable"):
                    try:
                        await self.board.ap_start(
                            self.ap_ssid(), self.config.get("wifi.ap.pass"), self.config.get("wifi.ap.ip")
                        )
                        self.last_error = None
                    except OSError as e:  # e.g. "Wifi Invalid Password": say so, try again later
                        self.last_error = "cannot start the access point %s: %s" % (self.ap_ssid(), e)
                        await _wait_event_ms(self._changed, delay)
                        delay = min(delay * 2, 30000)
                        continue
                await self._changed.wait()
                continue
            self.state = CONNECTING
            try:
                ip = await self.board.wlan_connect(
                    self.config.get("wifi.sta.ssid"), self.config.get("wifi.sta.pass"), 10000
                )
            except OSError as e:  # the driver refuses while it is still reconnecting, a bad password, …
                ip = None
                self.board_error = str(e) or type(e).__name__
            else:
                self.board_error = None
            if ip:
                delay = 1000
                self.state = CONNECTED
                self.ip = ip
                self.last_error = None
                await self.board.ap_stop()
                while self.board.wlan_isconnected() and not self._changed.is_set():
                    await _wait_event_ms(self._changed, 1000)
                self.ip = None
                continue
            why = self.board_error or self.board.wlan_error()
            self.last_error = "cannot join %s: %s" % (self.config.get("wifi.sta.ssid"), why)
            await _wait_event_ms(self._changed, delay)  # a new setting ends the wait early
            delay = min(delay * 2, 30000)

    async def _button(self):
        """Factory reset: provision.btn.pin held at its active level for hold_ms; a shorter press calls
        `on_press` (BLE opens its window)."""
        pin = self.config.get("provision.btn.pin")
        hold = self.config.get("provision.btn.hold_ms")
        if pin < 0 or hold <= 0:
            return
        pull_up = self.config.get("provision.btn.pull_up")
        pressed = 0 if pull_up else 1  # pulled up: the button pulls the pin low; pulled down: high
        since = None
        while True:
            await sleep_ms_async(20)
            if self.board.pin_read(pin, pull_up) == pressed:
                if since is None:
                    since = ticks_ms()
                elif ticks_diff(ticks_ms(), since) >= hold:
                    self.factory_reset()
                    return
            elif since is not None:  # let go before hold_ms: a press (it opens BLE's provisioning window)
                since = None
                for fn in self.on_press:
                    fn()

    def factory_reset(self):
        """Clear the WiFi settings (kept vendor settings stay) and the BLE bonds, save, reboot into AP mode."""
        sta = self.config.tree["wifi"]["sta"]
        sta.update(self.config.base["wifi"]["sta"])
        if self.config.path:
            self.config.save()
        remove((self.board.fs_dir or "") + "/" + BLE_BONDS)
        self.router.request_reboot(0)

    async def _led(self):
        pin = self.config.get("provision.led.pin")
        if pin < 0:
            return
        high = self.config.get("provision.led.active_high")
        while True:
            mode = self.override or self.state
            on, off = LED_PATTERNS[mode]
            self.board.led_write(pin, 1 if high else 0)
            if not await self._hold(mode, on if off else 100) and off:
                self.board.led_write(pin, 0 if high else 1)
                await self._hold(mode, off)

    async def _hold(self, mode, ms):
        """Sleep up to ms; True as soon as the LED's mode changes (a new pattern shows at once)."""
        while ms > 0:
            await sleep_ms_async(min(ms, 50))
            ms -= 50
            if (self.override or self.state) != mode:
                return True
        return False


async def _wait_event_ms(event, ms):
    try:
        await wait_ms(event.wait(), ms)
    except asyncio.TimeoutError:
        pass
