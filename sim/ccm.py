"""Run the virtual CCM (ccm/ on CPython, its UART on a pty) in a background thread.

with VirtualCcm() as v:          # boots; v.path is the host's serial port
    Host(v.path).start()
    v.call("Sum", [2, 3])        # a caller other than the host: forwarded to the host
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
from collections.abc import Callable
from typing import Any

from ccm.config import Config
from ccm.main import Ccm, run_forever
from pc.uart import open_uart
from sim.board import VirtualBoard


class VirtualCcm:
    """A whole CCM in this process: boots again after Sys.Reboot, on the same pty."""

    def __init__(
        self,
        config: dict | None = None,
        trace: Callable[[str, bytes], None] | None = None,
        uart: str = "pty",
        fs_dir: str | None = None,
        networks: list | None = None,
        ble: bool = False,
    ):
        self.overrides = config or {}  # the factory configuration; what is saved lives in fs_dir
        self.uart = open_uart(uart, trace)
        device_id = Config(self.overrides).get("device.id")
        radio = None
        if ble:  # the module's BLE, on a virtual radio whose other controllers centrals attach to (ble_hci)
            from sim.ble import VirtualRadio

            radio = VirtualRadio("F0:" + ":".join("%02X" % b for b in hashlib.sha256(device_id.encode()).digest()[:5]))
        self.board = VirtualBoard(self.uart, device_id, fs_dir, networks, radio=radio)
        self.ccm: Ccm | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="virtual CCM", daemon=True)
        self._booted = threading.Event()
        self._setup: list[Callable[[Ccm], None]] = []
        self._error: Exception | None = None

    @property
    def config(self) -> Config:
        return self.ccm.config

    @property
    def http_url(self) -> str:
        """The /rpc URL, once its server listens (it takes a free port at the first boot and keeps it)."""
        if not self.board.http_bound.wait(10):
            raise RuntimeError(f"the virtual CCM's /rpc server is not listening: {self.ccm.faults if self.ccm else ''}")
        return f"http://127.0.0.1:{self.board.http_port}/rpc"

    def ble_hci(self, i: int = 0) -> str:
        """The HCI transport of the i-th central on the module's air (`ccm --hci …`): as a BLE dongle's."""
        if self.board.ble_radio is None:
            raise RuntimeError("the virtual CCM has no BLE: VirtualCcm(ble=True)")
        return self.board.ble_radio.hci(i)

    @property
    def password(self) -> str:
        """The /rpc password (rpc.auth.password: the factory's, or the one the CCM made at its first boot)."""
        return self.ccm.config.get("rpc.auth.password")

    def rpc_url(self, scheme: str = "ws") -> str:
        """The /rpc URL with the credentials in it (ws://admin:PASSWORD@127.0.0.1:PORT/rpc), as `ccm --port`
        takes it; without them when rpc.auth.open."""
        url = self.http_url.replace("http://", scheme + "://")
        if not self.password:
            return url
        return url.replace("://", "://%s:%s@" % (self.ccm.config.get("rpc.auth.user"), self.password), 1)

    @property
    def path(self) -> str:
        """What a host opens: a pty path, a serial device, or socket://127.0.0.1:PORT."""
        return self.uart.path

    def on_boot(self, fn: Callable[[Ccm], None]) -> None:
        """Run fn(ccm) at every boot, before the link comes up (e.g. to add methods)."""
        self._setup.append(fn)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self._serve())
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception as e:  # reported by start() when it happens while booting
            self._error = e
            self._booted.set()
        finally:
            left = asyncio.all_tasks(self.loop)  # servers and helpers still unwinding
            for t in left:
                t.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self.loop.close()

    async def _serve(self) -> None:
        """The module's boot loop (ccm.main.run_forever: self-update switch, boot-failure count, safe
        mode), with this object's on_boot hooks run at each boot."""

        def setup(ccm: Ccm) -> None:
            self.ccm = ccm
            for fn in self._setup:
                fn(ccm)

        runner = asyncio.ensure_future(run_forever(self.board, self.overrides, switch=True, setup=setup))
        while not runner.done() and (self.ccm is None or self.ccm.link is None):
            await asyncio.sleep(0.001)
        self._booted.set()
        await runner

    def start(self) -> VirtualCcm:
        self._thread.start()
        if not self._booted.wait(10):
            raise RuntimeError("the virtual CCM did not boot within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Power off: the boot loop ends whatever it is doing (a reboot included), then the board closes.
        Raises when the CCM's thread is still running after that, rather than leave it behind."""
        self.board.powered = False  # a reboot under way now ends the loop instead of booting again
        for _ in range(50):
            if not self._thread.is_alive():
                break
            if not self.loop.is_closed():
                try:
                    self.loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:  # the loop closed meanwhile
                    pass
            self._thread.join(timeout=0.2)
        self.board.close()
        if self._thread.is_alive():
            raise RuntimeError("the virtual CCM did not stop: its thread is still running")

    def __enter__(self) -> VirtualCcm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run_coro(self, coro, timeout: float = 10.0) -> Any:
        """Run a coroutine on the CCM's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        """Call `method` as an in-process caller (the cloud's stand-in): local, or forwarded to the host."""
        try:
            return self.run_coro(self.ccm.router.call(method, params), timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"{method}: no answer within {timeout} s") from None

    def host_call(self, method: str, params: Any = None, timeout_ms: int | None = None) -> Any:
        """The CCM itself calls a host method over the UART (as it does for Sys.Info after an OTA)."""
        from ccm.ota.host import call

        return self.run_coro(call(self.ccm.link, method, params, timeout_ms))

    def notify_host(self, method: str, params: Any = None) -> None:
        """Send the host a notification (Shadow.Delta, MQTT.Message, …) over the UART."""
        self.loop.call_soon_threadsafe(self.ccm.link.notify, method, params)
