"""The CCM's hardware when the firmware runs on MicroPython's WebAssembly port under Node (the virtual
module booted from a virtual ESP32's flash): the UART is a pty the Node side reads and writes, through
the JavaScript module `ccm_host` (read(n) → a promise of hex text, write(hex), mac). The app partitions
and otadata of the flashed image are files under /parts (sim/mpy_ccm.py is the bootloader that reads
them at each boot and says in /parts/table.json which slot runs): esp32.Partition's OTA calls, here."""

import binascii
import gc

import ccm_host

from ccm.board import Board
from ccm.files import read_json

PARTS = "/parts"


class WasmUart:
    async def read(self, n):
        return binascii.unhexlify(await ccm_host.read(n))

    def write(self, data):
        ccm_host.write(binascii.hexlify(data).decode())

    async def drain(self):
        pass


class WasmBoard(Board):
    arch = "wasm"
    fw_id = "micropython-wasm"

    def __init__(self, fs_dir="/flash"):
        self.mac = ccm_host.mac
        self.fs_dir = fs_dir
        self.config_path = fs_dir + "/conf.json"
        self._uart = WasmUart()

    async def open_uart(self, config):
        return self._uart

    def heap_free(self):
        return gc.mem_free()

    def reboot(self):
        """A module's reset: a fresh interpreter boots from the filesystem as it is now (a self-update's
        files included). The Node side writes the filesystem back and sim/mpy_ccm.py starts it again."""
        if hasattr(ccm_host, "reset"):
            ccm_host.reset()
        return True  # a runner without resets: boot again in this interpreter, on the same UART

    # -- the app partitions (esp32.Partition's OTA API on the flashed image's table) ---------------
    def ota_partition(self):
        """The next OTA slot after the running app (factory -> ota_0), or None when the table has none."""
        t = read_json(PARTS + "/table.json")
        slots = t.get("slots") or []
        if not slots:
            return None
        running = t.get("running")
        i = (slots.index(running) + 1) % len(slots) if running in slots else 0
        return WasmPartition(slots[i], i, len(slots))

    def app_mark_valid(self):
        _otadata(lambda blob, slots: _od().mark_valid(blob))

    def app_rollback(self):
        """As the ESP32 board: boot the slot we came from, then reset."""
        part = self.ota_partition()
        if part is not None:
            part.set_boot()
        self.reboot()


def _od():
    from ccm.board import otadata  # only when an app partition is touched

    return otadata


def _otadata(change):
    """Apply change(blob, slots) to /parts/otadata.bin (nothing without an otadata partition)."""
    slots = read_json(PARTS + "/table.json").get("slots") or []
    try:
        with open(PARTS + "/otadata.bin", "rb") as f:
            blob = bytearray(f.read())
    except OSError:
        return
    change(blob, len(slots))
    with open(PARTS + "/otadata.bin", "wb") as f:
        f.write(blob)
    if hasattr(ccm_host, "flush"):
        ccm_host.flush("otadata.bin")  # on the chip's flash now, not at the next reset


class WasmPartition:
    """One OTA app slot of the flashed image: writeblocks() into its file, set_boot() into otadata."""

    BLOCK = 4096

    def __init__(self, label, index, slots):
        self.label = label
        self.index = index
        self.slots = slots
        self.path = PARTS + "/" + label + ".bin"

    def writeblocks(self, block, buf):
        try:
            f = open(self.path, "r+b")
        except OSError:
            f = open(self.path, "w+b")
        with f:
            f.seek(block * self.BLOCK)
            f.write(buf)

    def set_boot(self):
        _otadata(lambda blob, slots: _od().set_boot(blob, self.index, slots))
