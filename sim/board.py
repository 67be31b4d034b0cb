"""The virtual CCM board (CPython): the firmware's `Board` with its UART on a pty, a TCP port or a real
serial device (pc/uart.py), its filesystem in a directory, a simulated WLAN, pins wired to a virtual
STM32, and the PC's loopback as its network.
"""

import asyncio
import hashlib
import os

from ccm.board import Board
from pc.uart import PtyUart

FW_ID = "virtual"


DEFAULT_NETWORKS = [
    {"ssid": "HomeNet", "password": "secret123", "rssi": -48, "auth": 3},
    {"ssid": "Office", "password": "office-pass", "rssi": -67, "auth": 3},
    {"ssid": "CoffeeShop", "password": "", "rssi": -80, "auth": 0},
]


class VirtualBoard(Board):
    """The CCM's hardware on a PC: a UART (pty, TCP or a real serial port), a filesystem in a directory,
    a simulated WLAN (joins only with the right password), pins a test can drive (the factory-reset
    button) and an LED whose every change is recorded. Its network is the PC's loopback: the /rpc
    server listens on 127.0.0.1, standing for both the module's station address and the AP's 192.168.4.1.
    """

    arch = "virtual"
    fw_id = FW_ID
    radio = True
    host_pins = True

    def __init__(self, uart=None, device_id="ccm-000000", fs_dir=None, networks=None, http_port=None, radio=None):
        import tempfile
        import threading

        self.uart = uart or PtyUart()
        self.mac = ":".join("%02X" % b for b in hashlib.sha256(device_id.encode()).digest()[:6])
        self.boots = 0
        self.powered = True  # False once stopped for good: a reboot then ends the boot loop
        self._own_fs = fs_dir is None  # a directory made here goes when the board is closed
        self.fs_dir = fs_dir or tempfile.mkdtemp(prefix="ccm-fs-")
        self.config_path = os.path.join(self.fs_dir, "conf.json")
        self.networks = list(DEFAULT_NETWORKS if networks is None else networks)
        self.http_port = http_port or 0  # 0: the first boot's server takes a free port and keeps it
        self.http_bound = threading.Event()  # set once the /rpc server listens on http_port
        self.pins = {}  # pin -> level a test drives; unset pins read 1 (pulled up)
        self.pin_modes = {}  # pin -> "push-pull" | "open-drain", as last driven
        self.led = []  # (ticks_ms, pin, value), most recent last
        self.wires = {}  # pin -> fn(level): what an output pin is connected to
        self.parity_log = []  # the UART parity changes, in order
        self.ap = None  # (ssid, ip) while the access point is up
        self.joined = None  # ssid while joined
        self._wlan_error = None
        self.wlan_faults = []  # OSError messages the next wlan_connect calls raise, one each
        self.rtc = None  # None: the PC's clock; a number: a module's RTC (946684800 = just powered up)
        self.fs_quota = None  # bytes: a module's small flash filesystem (None: the PC's disk)
        # the next OTA app slot; None models a stock partition table (ESP32_GENERIC), which has none
        self.partition = VirtualPartition(os.path.join(self.fs_dir, ".ota_app.bin"))
        self.ble_radio = radio  # sim/ble.py's VirtualRadio: the module's BLE, and the air centrals join
        self.device_id = device_id

    async def open_uart(self, config):
        self.boots += 1
        await self.uart.start()
        if self.ble_radio is not None:
            await self.ble_radio.start()
        return self.uart

    def close(self):
        """Power off for good: the UART closes, and a filesystem directory made for this board goes."""
        self.uart.close()
        if self._own_fs:
            import shutil

            shutil.rmtree(self.fs_dir, ignore_errors=True)

    def heap_free(self):
        return None  # CPython has no fixed heap to report

    def fs_free(self):
        """Bytes free on the filesystem: the quota less what fs_dir holds, else the disk's free space."""
        if self.fs_quota is None:
            st = os.statvfs(self.fs_dir)
            return st.f_bavail * st.f_frsize
        used = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.fs_dir) for f in fs)
        return max(0, self.fs_quota - used)

    def clock_valid(self):
        from ccm.sntp import VALID_AFTER

        return self.rtc is None or self.rtc >= VALID_AFTER

    def set_clock(self, unix_seconds):
        self.rtc = unix_seconds

    def reboot(self):
        """A virtual reboot boots again on the same UART: the host keeps its port open."""
        self.joined = None
        self.ap = None
        if self.partition is not None:
            self.partition.boot()
        return self.powered

    # -- the app partition (esp32.Partition's OTA API, and the bootloader's rollback) -----------
    def bluetooth(self):
        if self.ble_radio is None:
            return None
        from sim.ble import BluetoothModule

        return BluetoothModule(self.ble_radio, self.device_id)

    def ota_partition(self):
        return self.partition

    def app_mark_valid(self):
        if self.partition is not None:
            self.partition.mark_valid()

    def app_rollback(self):
        if self.partition is not None:
            self.partition.rollback()

    # -- network ------------------------------------------------------------------------------
    def http_address(self, config):
        return "127.0.0.1", self.http_port

    def http_listening(self, server):
        self.http_port = server.sockets[0].getsockname()[1]
        self.http_bound.set()

    async def wlan_scan(self):
        await asyncio.sleep(0.05)
        return [{"ssid": n["ssid"], "rssi": n["rssi"], "auth": n["auth"]} for n in self.networks]

    async def wlan_connect(self, ssid, password, timeout_ms):
        """The IP address once joined, or None (`wlan_error()` says why). OSError as the ESP32's driver
        raises it, for each fault a test put in `wlan_faults`."""
        await asyncio.sleep(0.05)
        if self.wlan_faults:
            raise OSError(self.wlan_faults.pop(0))
        net = next((n for n in self.networks if n["ssid"] == ssid), None)
        if net is None:
            self._wlan_error = "no network named %s in range" % ssid
            return None
        if net["password"] != password:
            self._wlan_error = "wrong password"
            return None
        self.joined = ssid
        self._wlan_error = None
        return "192.168.1.%d" % (100 + self.networks.index(net))

    def wlan_isconnected(self):
        return self.joined is not None

    def wlan_error(self):
        return self._wlan_error

    async def ap_start(self, ssid, password, ip):
        if password and not 8 <= len(password) <= 63:
            raise OSError("Wifi Invalid Password")  # what the ESP32's network.WLAN(AP_IF).config() raises
        self.ap = (ssid, ip)

    async def ap_stop(self):
        self.ap = None

    # -- pins ---------------------------------------------------------------------------------
    def pin_read(self, pin, pull_up=True):
        """What a test drives on `pin`; undriven, the pull resistor's level."""
        return self.pins.get(pin, 1 if pull_up else 0)

    def pin_write(self, pin, level, open_drain=False):
        """Drive an output; whatever is wired to it (a virtual STM32's BOOT0 or NRST) follows."""
        self.pins[pin] = level
        self.pin_modes[pin] = "open-drain" if open_drain else "push-pull"
        fn = self.wires.get(pin)
        if fn:
            fn(level)

    def uart_parity(self, parity, baud=None):
        """A pty carries no parity bits nor a baud rate: the mode is recorded (as "E" or "E@57600")."""
        self.parity_log.append(parity if baud is None else "%s@%d" % (parity, baud))

    def led_write(self, pin, value):
        import time

        self.led.append((int(time.monotonic() * 1000), pin, value))
        del self.led[:-500]


class VirtualPartition:
    """The next OTA app partition, in a file, and ESP-IDF's boot choice: `set_boot()` makes the next
    boot run it on trial (`pending`); a boot while still on trial (not marked valid) rolls back."""

    BLOCK = 4096

    def __init__(self, path):
        self.path = path
        self.running = "factory"  # what the last boot runs: "factory" or "ota"
        self.pending = False  # set_boot() called: the next boot runs the new image
        self.trial = False  # running the new image, not yet marked valid
        self.history = []

    def writeblocks(self, block, buf):
        if len(buf) % self.BLOCK:
            raise OSError("writeblocks needs whole %d-byte blocks" % self.BLOCK)
        mode = "r+b" if os.path.exists(self.path) else "w+b"
        with open(self.path, mode) as f:
            f.seek(block * self.BLOCK)
            f.write(bytes(buf))

    def read(self, n):
        with open(self.path, "rb") as f:
            return f.read(n)

    def set_boot(self):
        self.pending = True

    def boot(self):
        if self.pending:
            self.pending = False
            self.running = "ota"
            self.trial = True
        elif self.trial:  # rebooted on trial without being marked valid: the bootloader rolls back
            self.rollback()
        self.history.append(self.running)

    def mark_valid(self):
        self.trial = False

    def rollback(self):
        self.trial = False
        self.running = "factory"
