"""The CCM's hardware on an ESP32 under MicroPython: the host UART, MAC, heap and reset."""

import asyncio
import gc
import sys

import machine


class Esp32Board:
    arch = "esp32"

    def __init__(self):
        import network

        self.mac = ":".join("%02X" % b for b in network.WLAN(network.STA_IF).config("mac"))
        self.fw_id = "micropython-%d.%d.%d" % sys.implementation.version[:3]
        self._stream = None

    async def open_uart(self, config):
        """The host UART (host.rpc.uart.*) as an asyncio stream; opened once, kept across soft boots."""
        if self._stream is None:
            u = config.get("host.rpc.uart")
            flow = machine.UART.RTS | machine.UART.CTS if u.get("fc_enable") else 0
            uart = machine.UART(
                u["num"], baudrate=u["baud_rate"], tx=u["tx_pin"], rx=u["rx_pin"], rxbuf=2048, timeout=0, flow=flow
            )
            self._stream = asyncio.StreamReader(uart)  # MicroPython's Stream: read, write and drain
        return self._stream

    def heap_free(self):
        return gc.mem_free()

    def reboot(self):
        machine.reset()
