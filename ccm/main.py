"""Composition root: configuration + board → the CCM's tasks."""

import asyncio

from ccm import config as config_mod
from ccm import rpc
from ccm.compat import sleep_ms_async
from ccm.config import Config
from ccm.link import HostLink
from ccm.router import Router


class Ccm:
    """One boot of the module: configuration loaded from the board's filesystem, the router, the host
    link over the board's UART, provisioning, the /rpc server and (when configured) the cloud."""

    def __init__(self, board, overrides=None, config=None):
        self.board = board
        self.config = config or Config(overrides, getattr(board, "config_path", None))
        self.router = Router(self.config, board, self._schedule_reboot)
        config_mod.serve(self.router, self.config)
        self.link = None
        self.mqtt = None
        self.shadow = None
        self.provisioner = None
        self.http = None
        self.ota = None
        self.last_host_update = None
        self._jobs = []  # work that ends with this boot
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
        self.link.set_parity = getattr(self.board, "uart_parity", None)
        self.router.host = self.link
        tasks = [asyncio.create_task(self._serve_link())]
        self._start_ota()
        tasks += self._start_network()
        tasks += self._start_cloud()
        tasks += self._resume_host_update()
        try:
            await self._stop.wait()
            if self._reboot_delay >= 0:
                await sleep_ms_async(self._reboot_delay)  # let the reply to Sys.Reboot go out first
                return True
            return False
        finally:
            if self.mqtt is not None:
                self.mqtt.stop()
            if self.http is not None:
                self.http.shutdown()
            for t in tasks + self._jobs:
                t.cancel()
            self.router.host = None

    def _start_network(self):
        """WiFi provisioning when the board has a radio; the /rpc server when rpc.http.enable."""
        tasks = []
        if hasattr(self.board, "wlan_connect"):
            from ccm.provision import AP, Provisioner

            self.provisioner = Provisioner(self.config, self.board, self.router)
            tasks.append(asyncio.create_task(self.provisioner.run()))
        if self.config.get("rpc.http.enable") and hasattr(self.board, "http_address"):
            from ccm.http import RpcServer

            p = self.provisioner
            self.http = RpcServer(self.config, self.router, lambda: p is not None and p.state == AP)
            host, port = self.board.http_address(self.config)
            tasks.append(asyncio.create_task(self.http.serve(host, port)))
        return tasks

    def host_update_marker(self):
        d = getattr(self.board, "fs_dir", "")
        return (d + "/" if d else "/") + "host_ota.json"

    async def update_host(self, image, address, size, progress=None):
        """Re-flash the host from a staged image file (the OTA transports call this). The work belongs
        to this boot: a reboot cuts it short, and the next boot does it again from the marker."""
        from ccm.ota.stm32 import update_host

        job = asyncio.create_task(
            update_host(self.link, self.board, self.config, image, address, size, progress, self.host_update_marker())
        )
        self._jobs.append(job)
        self.last_host_update = await job
        return self.last_host_update

    def spawn(self, coro):
        """Run background work that belongs to this boot (a reboot cancels it)."""
        t = asyncio.create_task(coro)
        self._jobs.append(t)
        return t

    def fs_root(self):
        return getattr(self.board, "fs_dir", "")

    def _start_ota(self):
        """OTA.* on the router; a self-update on trial is committed or timed; a poll when configured."""
        from ccm.ota.apply import host_applier, self_applier
        from ccm.ota.receiver import OtaReceiver
        from ccm.ota.selfupdate import TRIAL, SelfUpdate

        appliers = {"ccm_host": host_applier(self), "esp32": self_applier(self)}
        self.ota = OtaReceiver(self.config, self.fs_root(), appliers, self.spawn, getattr(self.board, "fs_free", None))
        self.ota.serve(self.router)
        su = SelfUpdate(self.fs_root(), self.board)

        def commit(params, call):
            rpc.take(params)
            if not su.commit():
                raise rpc.RpcError(rpc.INVALID_REQUEST, "nothing to commit: no update is on trial")
            return True

        def revert(params, call):
            rpc.take(params)
            if not su.revert():
                raise rpc.RpcError(rpc.INVALID_REQUEST, "nothing to revert: no update is on trial")
            self.router.request_reboot(300)
            return True

        self.router.add("OTA.Commit", commit)
        self.router.add("OTA.Revert", revert)
        rec = su.record()
        if rec.get("state") == TRIAL:
            timeout = rec.get("commit_timeout") or 0
            if not timeout:
                su.commit()  # no explicit commit asked for: booting this far is enough
            else:

                async def deadline():
                    await sleep_ms_async(timeout * 1000)
                    if su.revert("no OTA.Commit within %d s" % timeout):
                        self.router.request_reboot(100)

                self.spawn(deadline())
        url = self.config.get("ota.poll_url")
        if url:
            self.spawn(self.ota.poll(url, self.config.get("ota.poll_interval_s")))

    def _resume_host_update(self):
        """A host update cut short by a reboot is done again now."""
        if not hasattr(self.board, "pin_write"):
            return []
        if self.ota is not None and self.ota.resume():
            return []  # the OTA receiver finishes its own job (and reports it)
        from ccm.ota.stm32 import UpdateMarker, resume

        if UpdateMarker(self.host_update_marker()).get() is None:
            return []

        async def go():
            self.last_host_update = await resume(self.link, self.board, self.config, self.host_update_marker())

        return [asyncio.create_task(go())]

    def _start_cloud(self):
        """MQTT and the shadow bridge when mqtt.enable is set; the client reconnects by itself."""
        if not self.config.get("mqtt.enable"):
            return []
        from ccm.shadow import ShadowBridge, client_from_config

        self.mqtt = client_from_config(self.config)
        self.shadow = ShadowBridge(self.config, self.router, self.mqtt)
        if self.ota is not None:
            self.shadow.attach_ota(self.ota)
        return [asyncio.create_task(self.mqtt.run())]


async def run_forever(board, overrides=None, switch=True):
    """Boot, serve, and boot again after every Sys.Reboot: the board decides what a reboot is.
    `switch`: swap in a staged self-update at each boot (main.py does it itself on the module)."""
    while True:
        if switch:
            from ccm.ota.selfupdate import SelfUpdate

            SelfUpdate(getattr(board, "fs_dir", ""), board).at_boot()
        rebooting = await Ccm(board, overrides).run()
        if not rebooting or not board.reboot():
            return


def factory_config(path="/conf0.json"):
    """The vendor's configuration that `ccm build --config` wrote next to the firmware."""
    import json

    try:
        with open(path) as f:
            cfg = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return cfg if type(cfg) is dict else {}


def start():
    """Entry point on the module (main.py calls this): the ESP32 board, the CCM until power-off."""
    from ccm.board.esp32 import Esp32Board

    asyncio.run(run_forever(Esp32Board(), factory_config(), switch=False))
