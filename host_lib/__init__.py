"""host_lib: the host side of the CCM link, for Python hosts (a PC, a Raspberry Pi, a test).

    from host_lib import Host

    host = Host("/dev/ttyUSB0", fw_version="1.0", app="lamp")

    @host.method("Sum")
    def add(params):
        return params[0] + params[1]

    @host.on("Shadow.Delta")
    def delta(state):
        host.shadow_report(state)

    host.start()
    print(host.call("Sys.GetInfo"))

Frames, batches and errors are handled by the same sans-I/O core the firmware uses (`ccm.rpc`), so the
host and the CCM agree byte for byte. Handlers run on one worker thread in arrival order; `call()` may
be used from anywhere, handlers included.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from typing import Any

import serial

from ccm import rpc
from ccm.rpc import RpcError

__all__ = ["Host", "RpcError", "RpcTimeout", "LinkClosed"]


class RpcTimeout(RpcError, TimeoutError):
    """The CCM did not answer in time."""

    def __init__(self, method: str, timeout: float):
        super().__init__(rpc.HOST_TIMEOUT, f"no answer to {method} within {timeout:g} s")


class LinkClosed(RpcError):
    """The serial port closed while a call was waiting."""

    def __init__(self, why: str):
        super().__init__(rpc.NOT_CONNECTED, f"not connected: {why}")


class Host:
    """A host MCU's end of the UART: exports methods, handles notifications, calls the CCM."""

    def __init__(
        self,
        port: str | serial.SerialBase,
        baudrate: int = 115200,
        *,
        fw_version: str = "1.0",
        arch: str = "python",
        fw_id: str = "",
        app: str = "host_lib",
        max_frame_size: int = 4096,
        jsonrpc_member: bool = False,
    ):
        if isinstance(port, str):
            self.serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05, do_not_open=True)
            if "://" not in port:
                self.serial.exclusive = True  # two programs on one UART garble each other's frames
        else:
            self.serial = port
        self.info = {"fw_version": fw_version, "arch": arch, "fw_id": fw_id, "app": app}
        self.jsonrpc = jsonrpc_member
        self._framer = rpc.Framer(max_frame_size)
        self._dispatcher = rpc.Dispatcher(jsonrpc_member)
        self._user: list[str] = []
        self._builtin = {
            "RPC.List": lambda p, c: self._user + ["RPC.List", "Sys.Info"],
            "Sys.Info": lambda p, c: self.info,
        }
        self._pending = rpc.Pending(limit=64)
        self._lock = threading.Lock()  # guards _pending and writes
        self._inbox: queue.Queue = queue.Queue(maxsize=256)
        self._threads: list[threading.Thread] = []
        self._running = False
        self.closed_reason: str | None = None

    # -- exporting ----------------------------------------------------------------------------
    def method(self, name: str) -> Callable:
        """Decorator: export `fn(params) -> result` as `name`. Raise RpcError for a JSON-RPC error."""

        def deco(fn):
            self.export(name, fn)
            return fn

        return deco

    def on(self, name: str) -> Callable:
        """Decorator: handle the notification `name` (`Shadow.Delta`, `MQTT.Message`, `Sys.Init`, `Cloud.Status`)."""
        return self.method(name)

    def export(self, name: str, fn: Callable[[Any], Any]) -> None:
        if name not in self._user:
            self._user.append(name)
        self._dispatcher.add(name, lambda params, call: fn(params))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Host:
        """Open the port (stale input is flushed) and start serving."""
        if not self.serial.is_open:
            self.serial.open()
        self.serial.reset_input_buffer()
        for name, fn in self._builtin.items():
            self._dispatcher.methods.setdefault(name, fn)
        self._running = True
        for target in (self._read_loop, self._work_loop):
            t = threading.Thread(target=target, name=f"host_lib {target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self._running = False
        self._inbox.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2)
        self.serial.close()
        self._fail_all("closed by the host program")

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calling the CCM ----------------------------------------------------------------------
    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        """Call a CCM method and wait: its result, or RpcError(code, message) / RpcTimeout."""
        done = threading.Event()
        box: dict = {}

        def on_done(resp):
            box.update(resp)
            done.set()

        with self._lock:
            i = self._pending.add(on_done, int(timeout * 1000), 0)
            self._write(rpc.encode_request(i, method, params, self.jsonrpc))
        if not done.wait(timeout):
            with self._lock:
                self._pending.table.pop(i, None)
            raise RpcTimeout(method, timeout)
        if "error" in box:
            e = box["error"]
            if e.get("code") == rpc.NOT_CONNECTED and self.closed_reason:
                raise LinkClosed(self.closed_reason)
            raise RpcError(e.get("code", rpc.INTERNAL_ERROR), e.get("message"), e.get("data"))
        return box.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification: no id, no reply."""
        with self._lock:
            self._write(rpc.encode_notification(method, params, self.jsonrpc))

    # -- helpers for the CCM's services (docs/protocol.md, the UART link) ---------------------------------------------
    def mqtt_pub(self, topic: str, message: str, qos: int = 0, retain: bool = False, wait: bool = False) -> Any:
        """Publish through the CCM. With wait=True, returns once sent (qos 0) or acknowledged (qos 1)."""
        params: dict = {"topic": topic, "message": message}
        if qos:
            params["qos"] = qos
        if retain:
            params["retain"] = True
        return self.call("MQTT.Pub", params) if wait else self.notify("MQTT.Pub", params)

    def mqtt_sub(self, topic: str, qos: int = 0) -> Any:
        params: dict = {"topic": topic}
        if qos:
            params["qos"] = qos
        return self.call("MQTT.Sub", params)

    def shadow_report(self, state: Any) -> None:
        self.notify("Shadow.Report", state)

    def config_get(self, key: str | None = None) -> Any:
        return self.call("Config.Get", {"key": key} if key else None)

    def config_set(self, config: dict, save: bool = False, reboot: bool = False) -> Any:
        params: dict = {"config": config}
        if save:
            params["save"] = True
        if reboot:
            params["reboot"] = True
        return self.call("Config.Set", params)

    def config_save(self, reboot: bool = False) -> Any:
        return self.call("Config.Save", {"reboot": True} if reboot else None)

    # -- the wire -----------------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        if self.closed_reason:
            raise LinkClosed(self.closed_reason)
        self.serial.write(frame)

    def _read_loop(self) -> None:
        while self._running:
            try:
                data = self.serial.read(self.serial.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                if self._running:
                    self.closed_reason = f"serial port {self.serial.port} failed: {e}"
                    self._fail_all(self.closed_reason)
                return
            if data:
                self._receive(data)

    def _receive(self, data: bytes) -> None:
        for item in self._framer.feed(data):
            if isinstance(item, rpc.FrameError):
                continue  # the CCM sent something we cannot read; nothing to answer
            if isinstance(item, dict) and rpc.kind(item) == rpc.RESPONSE:
                with self._lock:
                    self._pending.resolve(item)
                continue
            self._inbox.put(item)

    def _work_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            self._dispatcher.dispatch(item, self._reply)

    def _reply(self, frame: bytes) -> None:
        with self._lock:
            try:
                self._write(frame)
            except (RpcError, serial.SerialException, OSError):
                pass

    def _fail_all(self, why: str) -> None:
        with self._lock:
            self._pending.fail_all(rpc.NOT_CONNECTED, f"not connected: {why}")

    def __repr__(self) -> str:
        return f"Host({self.serial.port!r}, exports={json.dumps(self._user)})"
