"""Composition root: configuration + board → the CCM's tasks."""

import asyncio

from ccm.compat import sleep_ms_async
from ccm.config import Config
from ccm.link import HostLink
from ccm.router import Router


class Ccm:
    """One boot of the module: the router and the host link over the board's UART."""

    def __init__(self, board, config=None):
        self.board = board
        self.config = config or Config()
        self.router = Router(self.config, board, self._schedule_reboot)
        self.link = None
        self.mqtt = None
        self.shadow = None
        self._stop = asyncio.Event()
        self._reboot_delay = -1

    def _schedule_reboot(self, delay_ms):
        self._reboot_delay = delay_ms
        self._stop.set()

    async def _serve_link(self):
        try:
            await self.link.run(self.router.hello())
        finally:
            self._stop.set()

    async def run(self):
        """Run until a reboot is requested (returns True) or the UART closes (returns False)."""
        stream = await self.board.open_uart(self.config)
        self.link = HostLink(stream, self.router, self.config)
        self.router.host = self.link
        task = asyncio.create_task(self._serve_link())
        cloud = self._start_cloud()
        try:
            await self._stop.wait()
            if self._reboot_delay >= 0:
                await sleep_ms_async(self._reboot_delay)  # let the reply to Sys.Reboot go out first
                return True
            return False
        finally:
            task.cancel()
            if cloud is not None:
                self.mqtt.stop()
                cloud.cancel()
            self.router.host = None

    def _start_cloud(self):
        """MQTT and the shadow bridge when mqtt.enable is set; the client reconnects by itself."""
        if not self.config.get("mqtt.enable"):
            return None
        from ccm.shadow import ShadowBridge, client_from_config

        self.mqtt = client_from_config(self.config)
        self.shadow = ShadowBridge(self.config, self.router, self.mqtt)
        return asyncio.create_task(self.mqtt.run())


async def run_forever(board, config=None):
    """Boot, serve, and boot again after every Sys.Reboot: the board decides what a reboot is."""
    while True:
        rebooting = await Ccm(board, config).run()
        if not rebooting or not board.reboot():
            return


def start():
    """Entry point on the module (main.py calls this): the ESP32 board, the CCM until power-off."""
    from ccm.board.esp32 import Esp32Board

    asyncio.run(run_forever(Esp32Board()))
