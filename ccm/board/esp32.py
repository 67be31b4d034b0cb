"""The CCM's hardware on an ESP32 under MicroPython: the host UART, WiFi, pins, heap and reset."""

import asyncio
import gc
import sys

import machine
import network

from ccm.compat import ticks_diff, ticks_ms

_WLAN_ERRORS = {
    getattr(network, "STAT_WRONG_PASSWORD", -1): "wrong password",
    getattr(network, "STAT_NO_AP_FOUND", -2): "network not found",
    getattr(network, "STAT_CONNECT_FAIL", -3): "connection failed",
}


class Esp32Board:
    arch = "esp32"
    config_path = "/conf.json"

    def __init__(self):
        self.sta = network.WLAN(network.STA_IF)
        self.mac = ":".join("%02X" % b for b in self.sta.config("mac"))
        self.fw_id = "micropython-%d.%d.%d" % sys.implementation.version[:3]
        self._stream = None
        self._pins = {}
        self._error = None

    async def open_uart(self, config):
        """The host UART (host.rpc.uart.*) as an asyncio stream; opened once, kept across soft boots."""
        if self._stream is None:
            u = config.get("host.rpc.uart")
            flow = machine.UART.RTS | machine.UART.CTS if u.get("fc_enable") else 0
            uart = machine.UART(
                u["num"], baudrate=u["baud_rate"], tx=u["tx_pin"], rx=u["rx_pin"], rxbuf=2048, timeout=0, flow=flow
            )
            self._uart = uart
            self._stream = asyncio.StreamReader(uart)  # MicroPython's Stream: read, write and drain
        return self._stream

    def uart_parity(self, parity):
        """8E1 for the STM32 bootloader ("E"), 8N1 for JSON-RPC ("N")."""
        self._uart.init(parity=0 if parity == "E" else None)

    def pin_write(self, pin, level):
        p = self._pins.get(pin)
        if p is None:
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.OUT)
        p.value(level)

    def heap_free(self):
        return gc.mem_free()

    def fs_free(self):
        import os

        st = os.statvfs("/")
        return st[1] * st[4]  # f_frsize * f_bavail

    # -- the app partition: MicroPython's esp32.Partition OTA API (ESP-IDF rolls back a trial image
    # that is never marked valid when the build enables app rollback, as ESP32_GENERIC-OTA does)
    def ota_partition(self):
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()

    def app_mark_valid(self):
        import esp32

        esp32.Partition.mark_app_valid_cancel_rollback()

    def app_rollback(self):
        import esp32

        esp32.Partition.mark_app_invalid_rollback_and_reboot()

    # -- the RTC: 2000-01-01 after power-up; TLS needs the real date (Ccm.set_clock, over SNTP)
    def _epoch(self):
        import time

        return 946684800 if time.gmtime(0)[0] == 2000 else 0  # the port's epoch, in Unix seconds

    def clock_valid(self):
        import time

        from ccm.sntp import VALID_AFTER

        return time.time() + self._epoch() >= VALID_AFTER

    def set_clock(self, unix_seconds):
        import time

        t = time.gmtime(unix_seconds - self._epoch())
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def reboot(self):
        machine.reset()

    # -- network ------------------------------------------------------------------------------
    def http_address(self, config):
        return "0.0.0.0", config.get("rpc.http.port")

    async def wlan_scan(self):
        self.sta.active(True)
        return [{"ssid": s[0].decode(), "rssi": s[3], "auth": s[4]} for s in self.sta.scan()]

    async def wlan_connect(self, ssid, password, timeout_ms):
        self.sta.active(True)
        self.sta.connect(ssid, password)
        t0 = ticks_ms()
        status = None
        while ticks_diff(ticks_ms(), t0) < timeout_ms:
            if self.sta.isconnected():
                self._error = None
                return self.sta.ifconfig()[0]
            status = self.sta.status()
            if status in _WLAN_ERRORS:
                break
            await asyncio.sleep_ms(100)
        self._error = _WLAN_ERRORS.get(status, "no answer within %d ms" % timeout_ms)
        self.sta.disconnect()
        return None

    def wlan_isconnected(self):
        return self.sta.isconnected()

    def wlan_error(self):
        return self._error

    async def ap_start(self, ssid, password, ip):
        ap = network.WLAN(network.AP_IF)
        ap.active(True)
        ap.config(essid=ssid, password=password, authmode=3 if password else 0)
        ap.ifconfig((ip, "255.255.255.0", ip, ip))

    async def ap_stop(self):
        network.WLAN(network.AP_IF).active(False)

    # -- pins ---------------------------------------------------------------------------------
    def pin_read(self, pin):
        p = self._pins.get(pin)
        if p is None:
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        return p.value()

    def led_write(self, pin, value):
        p = self._pins.get(pin)
        if p is None:
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.OUT)
        p.value(value)
