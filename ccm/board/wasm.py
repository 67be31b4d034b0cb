"""The CCM's hardware when the firmware runs on MicroPython's WebAssembly port under Node (the virtual
module booted from a virtual ESP32's flash): the UART is a pty the Node side reads and writes, through
the JavaScript module `ccm_host` (read(n) → a promise of hex text, write(hex), mac)."""

import binascii
import gc

import ccm_host

from ccm.board import Board


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
