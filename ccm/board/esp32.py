"""The CCM's hardware on an ESP32 under MicroPython: the host UART, WiFi, pins, heap and reset."""

import asyncio
import gc
import sys

import machine
import network

from ccm.board import Board
from ccm.compat import ticks_diff, ticks_ms

_WLAN_ERRORS = {
    getattr(network, "STAT_WRONG_PASSWORD", -1): "wrong password",
    getattr(network, "STAT_NO_AP_FOUND", -2): "network not found",
    getattr(network, "STAT_CONNECT_FAIL", -3): "connection failed",
}


class Esp32Board(Board):
    arch = "esp32"
    config_path = "/conf.json"
    radio = True
    host_pins = True

    def __init__(self):
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)  # config("mac") of an inactive interface is not dependable
        self.mac = ":".join("%02X" % b for b in self.sta.config("mac"))
        self.fw_id = "micropython-%d.%d.%d" % sys.implementation.version[:3]
        self._stream = None
        self._flow = {}  # the UART's RTS/CTS arguments while JSON-RPC runs ({}: none)
        self._pins = {}
        self._error = None

    async def open_uart(self, config):
        """The host UART (host.rpc.uart.*) as an asyncio stream; opened once, kept across soft boots."""
        if self._stream is None:
            u = config.get("host.rpc.uart")
            kw = {"tx": u["tx_pin"], "rx": u["rx_pin"], "rxbuf": 2048, "timeout": 0}
            # a whole frame fits the driver's TX buffer: the default 256 bytes held the loop ~330 ms
            # for a 4 KiB frame at 115200
            kw["txbuf"] = min(max(config.get("rpc.max_frame_size") + 64, 256), 8192)
            self._flow = self._flow_args(u)
            kw.update(self._flow)
            uart = machine.UART(u["num"], u["baud_rate"], **kw)
            self._uart = uart
            self._stream = asyncio.StreamReader(uart)  # MicroPython's Stream: read, write and drain
        return self._stream

    def _flow_args(self, u):
        """RTS/CTS for machine.UART, or {} with the reason in uart_note: the ESP32's UART1/2 have no
        default RTS/CTS pins, so flow control needs both pins given."""
        if not u.get("fc_enable"):
            return {}
        rts, cts = u.get("rts_pin", -1), u.get("cts_pin", -1)
        if rts < 0 or cts < 0:
            self.uart_note = (
                "host.rpc.uart.fc_enable is set without rts_pin and cts_pin (UART%d has no default pins for "
                "them): no flow control" % u["num"]
            )
            return {}
        return {"flow": machine.UART.RTS | machine.UART.CTS, "rts": rts, "cts": cts}

    def uart_parity(self, parity, baud=None):
        """8E1 for the STM32 bootloader ("E"), 8N1 for JSON-RPC ("N"), at `baud` when given. The
        bootloader has no RTS/CTS: flow control is off while it runs, back on with JSON-RPC."""
        par = 0 if parity == "E" else None
        if self._flow:  # the stubs' init() leaves `flow` out; the port takes it (ports/esp32/machine_uart.c)
            flow = 0 if parity == "E" else self._flow["flow"]
            if baud:
                self._uart.init(baudrate=baud, parity=par, flow=flow)  # pyright: ignore[reportCallIssue]
            else:
                self._uart.init(parity=par, flow=flow)  # pyright: ignore[reportCallIssue]
        elif baud:
            self._uart.init(baudrate=baud, parity=par)
        else:
            self._uart.init(parity=par)

    def pin_write(self, pin, level, open_drain=False):
        """Drive `pin`; `open_drain` only pulls low and lets go (NRST: the host has its own reset circuit)."""
        p = self._pins.get(pin)
        if p is None:
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.OPEN_DRAIN if open_drain else machine.Pin.OUT)
        p.value(level)

    def heap_free(self):
        return gc.mem_free()

    def fs_free(self):
        import os

        st = os.statvfs("/")
        return st[1] * st[4]  # f_frsize * f_bavail

    # -- the app partition: MicroPython's esp32.Partition OTA API (ESP-IDF rolls back a trial image
    # that is never marked valid when the build enables app rollback, as ESP32_GENERIC-OTA does)
    def bluetooth(self):
        import bluetooth  # NimBLE on the ESP32 port: loaded only when ble.enable asks for it

        return bluetooth

    def ota_partition(self):
        """The next OTA app slot, or None when the partition table has none (ESP32_GENERIC's stock table:
        get_next_update() raises OSError ENOENT there)."""
        import esp32

        try:
            # the stubs type `id` as a label; the port takes Partition.RUNNING/BOOT too (docs: esp32.Partition)
            return esp32.Partition(esp32.Partition.RUNNING).get_next_update()  # pyright: ignore[reportArgumentType]
        except OSError:
            return None

    def app_mark_valid(self):
        import esp32

        if self.ota_partition() is None:  # the stock table: no otadata, nothing is ever rolled back
            return
        esp32.Partition.mark_app_valid_cancel_rollback()

    def app_rollback(self):
        """Boot the app we came from. MicroPython's esp32.Partition has no mark_app_invalid_rollback_and_reboot
        (the stubs and the port's docs list only mark_app_valid_cancel_rollback): with two OTA slots,
        the next update slot is the one we left, so boot it and reset."""
        import esp32

        P = esp32.Partition
        P(P.RUNNING).get_next_update().set_boot()  # pyright: ignore[reportArgumentType]
        machine.reset()

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

    def dns_server(self):
        """The station's DNS server from DHCP: names are resolved through it without blocking the loop
        (getaddrinfo would hold it, and the host's bytes overflow the UART's RX buffer meanwhile)."""
        if not self.sta.isconnected():
            return None
        dns = self.sta.ifconfig()[3]
        return dns if dns and dns != "0.0.0.0" else None

    async def wlan_scan(self):
        """WLAN.scan() holds the loop ~2 s (MicroPython has no async scan): only Wifi.Scan asks for it,
        and its caller waits for the answer (docs/protocol.md)."""
        self.sta.active(True)
        return [{"ssid": _ssid(s[0]), "rssi": s[3], "auth": s[4]} for s in self.sta.scan()]

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
    def pin_read(self, pin, pull_up=True):
        p = self._pins.get(pin)
        if p is None:
            pull = machine.Pin.PULL_UP if pull_up else machine.Pin.PULL_DOWN
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.IN, pull)
        return p.value()

    def led_write(self, pin, value):
        p = self._pins.get(pin)
        if p is None:
            p = self._pins[pin] = machine.Pin(pin, machine.Pin.OUT)
        p.value(value)


def _ssid(raw):
    """A network's name as text: SSIDs are 32 raw bytes, not always UTF-8 (one such used to end the scan)."""
    try:
        return raw.decode()
    except UnicodeError:
        return "".join(chr(b) if 32 <= b < 127 else "\\x%02x" % b for b in raw)
