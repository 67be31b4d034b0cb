"""How the `ccm` command reaches a CCM: a serial port (as the host does) or MQTT (as the cloud does)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse


class PortError(Exception):
    """The port cannot be opened; the message says what to do."""


class SerialRpc:
    """Calls over the host UART, through host_lib."""

    def __init__(self, port: str, baud: int):
        from host_lib import Host

        try:
            self.host = Host(port, baud).start()
        except Exception as e:  # pyserial raises SerialException / OSError with the errno text
            raise PortError(f"cannot open {port}: {e}. Is the path right, and is no other program using it?") from None

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return self.host.call(method, params, timeout)

    def close(self) -> None:
        self.host.close()


class MqttRpc:
    """Calls over MQTT (`{device}/rpc`), as a cloud application: mqtt://HOST:PORT/DEVICE_ID."""

    def __init__(self, url: str):
        from cloud.client import CloudClient

        u = urlparse(url)
        self.device = u.path.strip("/")
        if not self.device:
            raise PortError(f"{url}: say which device, e.g. mqtt://{u.netloc or '127.0.0.1:1883'}/ccm-000000")
        try:
            self.cloud = CloudClient(f"mqtt://{u.hostname or '127.0.0.1'}:{u.port or 1883}").start()
        except ConnectionError as e:
            raise PortError(f"{e}. Is the broker running (`ccm cloud` starts one)?") from None

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return self.cloud.call(self.device, method, params, timeout)

    def close(self) -> None:
        self.cloud.stop()


def open_rpc(port: str, baud: int = 115200) -> SerialRpc | MqttRpc:
    if port.startswith("mqtt://"):
        return MqttRpc(port)
    return SerialRpc(port, baud)
