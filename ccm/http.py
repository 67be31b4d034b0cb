"""HTTP and WebSocket `/rpc` (docs/protocol.md, provisioning), routed through the same router as the UART.

- `POST /rpc` with a JSON-RPC frame (or batch): the JSON-RPC response.
- `POST /rpc` with `{"config": {…}}` and no method: the manual's provisioning shortcut, Config.Set + save.
- `POST /rpc/<Method>` with the params as the body: the result, or `{"error": {…}}` with an HTTP status.
- WebSocket `/rpc`: frames in mos's envelope `{id, src, dst, method, params, tag}`; answers echo id and tag.
- HTTP Digest authentication (RFC 7616; MD5 challenged, SHA-256 accepted) with the module's password
  (`rpc.auth.password`: given by `ccm build`, else made at first boot) unless the vendor set
  `rpc.auth.open`; nonces expire and are not accepted twice with the same count; a client that keeps
  guessing waits (429, doubling up to LOCKOUT_MAX_MS).
- While unprovisioned (the access point is up) no password is asked: only `wifi.*` may be set and only
  Config.Set, Config.Save, Wifi.Scan and Sys.GetInfo are served.

The server is our own, on asyncio streams: one route with two shapes needs no framework, and a plain
ESP32's heap cannot spare one (microdot cost 26 KB of it with .mpy files; this module costs a third).
One request per connection (`Connection: close`); bodies and WebSocket messages are bounded by
`rpc.max_frame_size`, request lines and headers by MAX_LINE and MAX_HEADERS, the time a request's head
and body may take by `rpc.http.timeout_ms`, and clients served at once by ccm/listener.py.
"""

import asyncio
import json

from ccm import rpc
from ccm.compat import dumps, ticks_add, ticks_diff, ticks_ms, wait_ms
from ccm.router import Caller, provisioning_caller

MAX_LINE = 2048  # a request line or header longer than this is refused
MAX_HEADERS = 32
LOGIN_FREE = 5  # wrong passwords in a row a client may send before it has to wait
LOCKOUT_MAX_MS = 8000  # the longest wait (doubling from 1 s): guessing stays slow, the owner is never locked out
MAX_PEERS = 16  # clients whose failed logins are counted at once
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

# JSON-RPC error code → HTTP status for /rpc/<Method>
HTTP_STATUS = {
    rpc.PARSE_ERROR: 400,
    rpc.INVALID_REQUEST: 400,
    rpc.INVALID_PARAMS: 400,
    rpc.METHOD_NOT_FOUND: 404,
    rpc.FORBIDDEN: 403,
    rpc.HOST_TIMEOUT: 504,
    rpc.NOT_CONNECTED: 503,
    rpc.BUSY: 503,
    rpc.QUEUE_FULL: 503,
}
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Refused(Exception):
    """A request that gets an HTTP error before it is dispatched."""

    def __init__(self, status, body):
        self.status = status
        self.body = body


class RpcServer:
    """The /rpc endpoints: serves the connections ccm/listener.py accepts. `keep` outlives this object
    (the listener drops it, and this module, between requests)."""

    def __init__(self, config, router, provisioning=lambda: False, keep=None):
        self.config = config
        self.router = router
        self.provisioning = provisioning  # True while unprovisioned: the AP rules apply
        self.device_id = config.get("device.id")
        self.limit = config.get("rpc.max_frame_size")
        self.keep = {} if keep is None else keep
        self.timeout = config.get("rpc.http.timeout_ms") or 10000
        self._auth = None

    # -- auth --------------------------------------------------------------------------------
    def auth(self):
        pw = self.config.get("rpc.auth.password")
        if not pw:  # only with rpc.auth.open: a module makes its own password otherwise (ccm/main.py)
            return None
        a = self._auth
        if a is None or a.password != pw or a.user != self.config.get("rpc.auth.user"):
            from ccm.digest import DigestAuth  # only once a password is set: an open /rpc does not load it

            realm, user = self.config.get("rpc.auth.realm"), self.config.get("rpc.auth.user")
            keep = self.keep  # what a nonce needs to be judged after this server is reloaded
            a = self._auth = DigestAuth(realm, user, pw, keep.get("nonce_key"), keep.setdefault("seen", {}))
            keep["nonce_key"] = a.secret
        return a

    def _authenticate(self, method, headers, peer):
        """None when the request may go on, else the response's (status, body, extra header lines). While
        unprovisioned the AP's rules stand instead (wifi.* and four methods: the manual's curl command).
        A client whose password was wrong LOGIN_FREE times in a row waits, longer each time (429)."""
        if self.provisioning():
            return None
        a = self.auth()
        if a is None:
            return None
        fails = self.keep.setdefault("fails", {})  # peer -> (wrong passwords in a row, not before this time)
        n, until = fails.get(peer, (0, 0))
        wait = ticks_diff(until, ticks_ms())
        if wait > 0:
            body = _error(429, "too many wrong passwords from %s: try again in %d s" % (peer, (wait + 999) // 1000))
            return 429, body, "Retry-After: %d\r\n" % ((wait + 999) // 1000)
        why = a.check(method, headers.get("authorization"))
        if why is None:
            fails.pop(peer, None)
            return None
        if why in ("wrong password", "wrong user"):
            n += 1
            if len(fails) >= MAX_PEERS and peer not in fails:
                fails.clear()  # a bounded table: many clients guessing at once are forgotten, not stored
            delay = min(1000 << (n - LOGIN_FREE), LOCKOUT_MAX_MS) if n >= LOGIN_FREE else 0
            fails[peer] = (n, ticks_add(ticks_ms(), delay))
        body = dumps({"error": {"code": 401, "message": "unauthorized: %s (HTTP Digest, user %s)" % (why, a.user)}})
        return 401, body, "".join("WWW-Authenticate: %s\r\n" % c for c in a.challenge(why == "stale"))

    # -- one connection: one request --------------------------------------------------------
    async def connection(self, reader, writer):
        """Serve one request and close the connection; or, for a WebSocket upgrade, answer it and return
        what ccm/ws.py's session() takes after `reader, writer` (the connection stays open for it: the
        listener drops this module meanwhile)."""
        session = None
        try:
            session = await self._request(reader, writer)
        except Refused as e:
            await _respond(writer, e.status, e.body)
        except (OSError, EOFError, ValueError, IndexError):
            pass  # the client went away or sent something that is not HTTP: nothing to answer
        except MemoryError:
            pass  # no heap for this request: its connection closes, the link and the server go on
        finally:
            if session is None:
                try:
                    writer.close()
                    await writer.wait_closed()
                except Exception:
                    pass
        return session

    async def _request(self, reader, writer):
        timeout = self.timeout
        try:  # a client that sends its request slowly or not at all (slowloris) holds a slot only so long
            method, target, headers = await wait_ms(_head(reader), timeout)
        except asyncio.TimeoutError:
            return  # closed without an answer
        path = target.split("?", 1)[0]
        denied = self._authenticate(method, headers, _peer(writer))
        if denied is not None:
            await _respond(writer, *denied)
            return
        if path == "/rpc" and method == "GET" and headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(writer, headers)
        try:
            body = await wait_ms(self._body(reader, headers), timeout)
        except asyncio.TimeoutError:
            raise Refused(408, _error(rpc.INVALID_REQUEST, "the body did not come within %d ms" % timeout)) from None
        if path == "/rpc" and method == "POST":
            status, out = await self._post_frame(body)
        elif path.startswith("/rpc/") and method in ("POST", "GET"):
            status, out = await self._post_method(body, _unquote(path[5:]))
        elif path == "/rpc" or path.startswith("/rpc/"):
            status, out = (
                405,
                _error(rpc.INVALID_REQUEST, "method not allowed: POST a frame, or GET with a WebSocket upgrade"),
            )
        else:
            status, out = 404, _error(rpc.METHOD_NOT_FOUND, "not found: the endpoints are /rpc and /rpc/<Method>")
        await _respond(writer, status, out)

    async def _body(self, reader, headers):
        try:
            n = int(headers.get("content-length") or 0)
        except ValueError:
            raise Refused(400, _error(rpc.INVALID_REQUEST, "Content-Length is not a number")) from None
        if n > self.limit:
            raise Refused(413, _error(rpc.INVALID_REQUEST, "frame too large: rpc.max_frame_size is %d" % self.limit))
        return await reader.readexactly(n) if n > 0 else b""

    # -- dispatch ----------------------------------------------------------------------------
    def caller(self, name):
        return provisioning_caller(name) if self.provisioning() else Caller(name)

    async def _post_frame(self, body):
        try:
            msg = rpc.parse(body)
        except rpc.NoHeap as e:
            return 200, rpc.encode_error(rpc.request_id(body), e.code, str(e))
        except rpc.ParseError as e:
            return 200, rpc.encode_error(None, rpc.PARSE_ERROR, "%s: the body is not a JSON-RPC frame" % e)
        if type(msg) is dict and "method" not in msg and "config" in msg:
            msg = {"id": 1, "method": "Config.Set", "params": {"config": msg["config"], "save": True}}
        if type(msg) not in (dict, list):
            return 200, rpc.encode_error(None, rpc.INVALID_REQUEST, "invalid request: expected a JSON-RPC frame")
        reply = await self.router.answer(msg, self.caller("http"))
        return 200, reply if reply is not None else b""

    async def _post_method(self, body, method):
        params = None
        if body:
            try:
                params = rpc.parse(body)
            except rpc.ParseError as e:
                return 400, _error(rpc.PARSE_ERROR, "%s: the body must be the params, as JSON" % e)
        msg = {"id": 1, "method": method}
        if params is not None:
            msg["params"] = params
        reply = json.loads(await self.router.answer(msg, self.caller("http")))
        if "error" in reply:
            e = reply["error"]
            code = e.get("code", rpc.INTERNAL_ERROR)
            return HTTP_STATUS.get(code, 500), _error(code, e.get("message", "error"))
        return 200, dumps(reply.get("result"))

    # -- WebSocket (RFC 6455) ------------------------------------------------------------------
    async def _websocket(self, writer, headers):
        import binascii
        import hashlib

        key = headers.get("sec-websocket-key", "").encode()
        if not key:
            raise Refused(400, _error(rpc.INVALID_REQUEST, "a WebSocket upgrade without Sec-WebSocket-Key"))
        accept = binascii.b2a_base64(hashlib.sha1(key + WS_GUID).digest()).strip().decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept.encode()
        )
        await writer.drain()
        return self.router, self.caller("ws"), self.device_id, self.limit, self.timeout


def _peer(writer):
    """The client's IP address: what failed logins are counted by."""
    try:
        addr = writer.get_extra_info("peername")
    except Exception:
        return "?"
    if type(addr) is tuple:
        return addr[0]
    if type(addr) in (bytes, bytearray) and len(addr) >= 8:  # the unix port: a raw sockaddr_in
        return "%d.%d.%d.%d" % tuple(addr[4:8])
    return "?"


async def _head(reader):
    """(method, target, headers) of the request."""
    parts = (await _line(reader)).split()
    if len(parts) != 3:
        raise Refused(400, _error(rpc.INVALID_REQUEST, "not an HTTP request line"))
    headers = {}
    while True:
        h = await _line(reader)
        if not h.strip():
            return parts[0].decode(), parts[1].decode(), headers
        if len(headers) >= MAX_HEADERS:
            raise Refused(431, _error(rpc.INVALID_REQUEST, "too many header lines"))
        k, _, v = h.decode().partition(":")
        headers[k.strip().lower()] = v.strip()


async def _line(reader):
    line = await reader.readline()
    if not line:
        raise EOFError
    if len(line) > MAX_LINE:
        raise Refused(431, _error(rpc.INVALID_REQUEST, "a request line or header over %d bytes" % MAX_LINE))
    return line


async def _respond(writer, status, body, extra=""):
    if type(body) is str:
        body = body.encode()
    if body.endswith(b"\n"):
        body = body[:-1]
    head = "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n" % (
        status,
        REASONS.get(status, "Error"),
        len(body),
        extra,
    )
    writer.write(head.encode() + body)
    await writer.drain()


def _error(code, message):
    return dumps({"error": {"code": code, "message": message}})


def _unquote(s):
    """%XX escapes in a method name, as a browser or curl may send them."""
    if "%" not in s:
        return s
    b = s.encode()
    out = bytearray()
    i = 0
    while i < len(b):
        if b[i] == 0x25 and i + 2 < len(b):
            out.append(int(b[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode()
