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
            if "lock" in str(e):
                raise PortError(
                    f"port busy: another program has {port} open (a serial monitor? a host program?). Close it and retry."
                ) from None
            raise PortError(f"cannot open {port}: {e}. Is the path right?") from None

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return self.host.call(method, params, timeout)

    def close(self) -> None:
        self.host.close()


class MqttRpc:
    """Calls over MQTT (`{device}/rpc`), as a cloud application: mqtt://[USER:PASSWORD@]HOST:PORT/DEVICE_ID
    (`ccm cloud`'s broker wants the cloud's user, which it prints)."""

    def __init__(self, url: str):
        from cloud.client import CloudClient

        u = urlparse(url)
        self.device = u.path.strip("/")
        if not self.device:
            raise PortError(f"{url}: say which device, e.g. mqtt://{u.netloc or '127.0.0.1:1883'}/ccm-000000")
        try:
            self.cloud = CloudClient(f"mqtt://{u.netloc or '127.0.0.1:1883'}").start()  # USER:PASSWORD@ kept
        except ConnectionError as e:
            raise PortError(f"{e}. Is the broker running (`ccm cloud` starts one)?") from None

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        return self.cloud.call(self.device, method, params, timeout)

    def close(self) -> None:
        self.cloud.stop()


def digest_header(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """An RFC 7616 `Authorization: Digest …` answer (qop=auth) to a `WWW-Authenticate` challenge."""
    import hashlib
    import os as _os

    from ccm.digest import parse_auth_header

    c = parse_auth_header(challenge)
    alg = c.get("algorithm", "MD5")
    h = (
        (lambda t: hashlib.sha256(t.encode()).hexdigest())
        if alg == "SHA-256"
        else (lambda t: hashlib.md5(t.encode()).hexdigest())
    )
    cnonce = _os.urandom(8).hex()
    ha1 = h(f"{user}:{c['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{c['nonce']}:00000001:{cnonce}:auth:{ha2}")
    fields = {
        "username": user,
        "realm": c["realm"],
        "nonce": c["nonce"],
        "uri": uri,
        "algorithm": alg,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": cnonce,
        "response": response,
    }
    if "opaque" in c:
        fields["opaque"] = c["opaque"]
    return "Digest " + ", ".join(
        f'{k}="{v}"' if k not in ("nc", "qop", "algorithm") else f"{k}={v}" for k, v in fields.items()
    )


class AuthFailed(PortError):
    pass


class HttpRpc:
    """Calls as JSON-RPC frames POSTed to http://HOST[:PORT]/rpc, with Digest auth when asked."""

    def __init__(self, url: str, user: str = "admin", password: str | None = None):
        url, user, password = split_credentials(url, user, password)
        self.url = url
        self.user = user
        self.password = password
        self.ids = 0

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        import json
        import urllib.error
        import urllib.request

        from ccm.rpc import RpcError

        self.ids += 1
        frame: dict = {"id": self.ids, "method": method}
        if params is not None:
            frame["params"] = params
        body = json.dumps(frame).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in (0, 1):
            req = urllib.request.Request(self.url, data=body, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    reply = json.loads(r.read())
                break
            except urllib.error.HTTPError as e:
                if e.code == 429:
                    raise AuthFailed(f"{self.url}: {_message(e.read()) or 'too many wrong passwords'}") from None
                if e.code != 401:
                    raise PortError(f"{self.url}: HTTP {e.code} {e.reason}") from None
                if attempt or self.password is None:
                    raise AuthFailed(
                        f"{self.url} wants a password: give --password (user {self.user})"
                        if self.password is None
                        else f"{self.url}: authentication failed for user {self.user}: wrong password?"
                    ) from None
                path = urllib.parse.urlparse(self.url).path or "/"
                headers["Authorization"] = digest_header(
                    e.headers["WWW-Authenticate"], "POST", path, self.user, self.password
                )
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    raise TimeoutError(f"no answer from {self.url} within {timeout:g} s") from None
                raise PortError(f"cannot reach {self.url}: {reason}. Is the CCM on this network?") from None
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e.get("code", -32603), e.get("message"), e.get("data"))
        return reply.get("result")

    def close(self) -> None:
        pass


def ws_connect(url: str, user: str = "admin", password: str | None = None, timeout: float = 5.0):
    """A websockets connection to ws://[USER:PASSWORD@]HOST[:PORT]/rpc, answering the CCM's Digest
    challenge; AuthFailed (401, 429) or PortError with the reason."""
    import websockets.sync.client as wsclient
    from websockets.exceptions import InvalidStatus

    url, user, password = split_credentials(url, user, password)
    headers = {}
    for attempt in (0, 1):
        try:
            return wsclient.connect(url, additional_headers=headers, open_timeout=timeout)
        except InvalidStatus as e:
            status = e.response.status_code
            if status == 429:
                raise AuthFailed(f"{url}: {_message(e.response.body) or 'too many wrong passwords'}") from None
            if status != 401:
                raise PortError(f"{url}: HTTP {status}") from None
            if attempt or password is None:
                raise AuthFailed(
                    f"{url} wants a password: give --password, or put it in the URL (ws://{user}:PASSWORD@…)"
                    if password is None
                    else f"{url}: authentication failed for user {user}: wrong password?"
                ) from None
            path = urlparse(url).path or "/"
            challenge = e.response.headers.get_all("WWW-Authenticate")[0]
            headers = {"Authorization": digest_header(challenge, "GET", path, user, password)}
        except (OSError, TimeoutError) as e:
            raise PortError(f"cannot reach {url}: {e}. Is the CCM on this network?") from None
    raise AssertionError("unreachable")


def _message(body: bytes | None) -> str:
    """The CCM's error message in an HTTP error body ({"error": {"message": …}}), or ""."""
    import json

    try:
        return json.loads(body or b"")["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""


class WsRpc:
    """Calls over a WebSocket to ws://HOST[:PORT]/rpc, in mos's envelope, with Digest auth when asked."""

    def __init__(self, url: str, user: str = "admin", password: str | None = None, timeout: float = 5.0):
        self.ws = ws_connect(url, user, password, timeout)
        self._connect = (url, user, password, timeout)
        self.url = split_credentials(url)[0]
        self.ids = 0

    def call(self, method: str, params: Any = None, timeout: float = 5.0) -> Any:
        """One call; a CCM that closed the connection (it rebooted) is connected to again by the next one."""
        import json

        from websockets.exceptions import ConnectionClosed

        from ccm.rpc import RpcError

        if self.ws is None:
            self.ws = ws_connect(*self._connect)  # PortError while it is away
        self.ids += 1
        frame: dict = {"id": self.ids, "src": "ccm-cli", "method": method}
        if params is not None:
            frame["params"] = params
        try:
            self.ws.send(json.dumps(frame))
            while True:
                reply = json.loads(self.ws.recv(timeout))
                if reply.get("id") == self.ids:
                    break
                if reply.get("id") is None and "error" in reply:
                    break  # the CCM could not read which call it answers (no heap for it): ours, the only one out
        except TimeoutError:
            raise TimeoutError(f"no answer from {self.url} within {timeout:g} s") from None
        except ConnectionClosed:
            self.ws = None
            raise ConnectionError(f"{self.url} closed the connection (the CCM rebooted?)") from None
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e.get("code", -32603), e.get("message"), e.get("data"))
        return reply.get("result")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def split_credentials(url: str, user: str = "admin", password: str | None = None) -> tuple[str, str, str | None]:
    """(url without its user:password@, user, password): credentials in the URL, as the sims print it
    (ws://admin:PASSWORD@127.0.0.1:PORT/rpc), win over the given ones."""
    from pc.net import url_credentials

    bare, u, pw = url_credentials(url)
    return bare, u or user, pw if pw is not None else password


def open_rpc(port: str, baud: int = 115200, password: str | None = None, user: str = "admin", hci: str | None = None):
    """The right transport for PORT: mqtt://…/DEVICE, http://…/rpc, ws://…/rpc, ble://DEVICE (through the
    Bluetooth controller `hci`: bundle/ble.py), or a serial port. An http(s)/ws(s)/ble URL may carry the
    /rpc credentials: ws://admin:PASSWORD@HOST/rpc."""
    if port.startswith("ble://"):
        from bundle.ble import BleRpc

        return BleRpc(port, hci, user, password)
    if port.startswith(("http://", "https://", "ws://", "wss://")):
        port, user, password = split_credentials(port, user, password)
    if port.startswith("mqtt://"):
        return MqttRpc(port)
    if port.startswith(("http://", "https://")):
        return HttpRpc(port, user, password)
    if port.startswith(("ws://", "wss://")):
        return WsRpc(port, user, password)
    return SerialRpc(port, baud)
