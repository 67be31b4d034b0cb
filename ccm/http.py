"""HTTP and WebSocket `/rpc` (docs/protocol.md, provisioning), on microdot, routed through the same router as the UART.

- `POST /rpc` with a JSON-RPC frame (or batch): the JSON-RPC response.
- `POST /rpc` with `{"config": {…}}` and no method: the manual's provisioning shortcut, Config.Set + save.
- `POST /rpc/<Method>` with the params as the body: the result, or `{"error": {…}}` with an HTTP status.
- WebSocket `/rpc`: frames in mos's envelope `{id, src, dst, method, params, tag}`; answers echo id and tag.
- HTTP Digest authentication (RFC 7616; MD5 challenged, SHA-256 accepted) once `rpc.auth.password` is set.
- While unprovisioned (the access point is up) only `wifi.*` may be set and only Config.Set, Config.Save,
  Wifi.Scan and Sys.GetInfo are served.
"""

import asyncio
import json

from microdot import Microdot, Request, Response
from microdot.websocket import with_websocket

from ccm import rpc
from ccm.compat import Waiter, dumps, sleep_ms_async
from ccm.digest import DigestAuth

AP_METHODS = ("Config.Set", "Config.Save", "Wifi.Scan", "Sys.GetInfo")
AP_ACL = "wifi.*"

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


class Caller:
    """Who is calling over the network, as the router and the config ACL see it."""

    def __init__(self, name, acl=None, methods=None):
        self.name = name
        self.acl = acl  # extra conf_acl for this caller (the AP's wifi.*)
        self.methods = methods  # allowed methods, None: all


class Http11Response(Response):
    """A response whose status line says HTTP/1.1: WebSocket clients refuse an HTTP/1.0 answer to their
    upgrade request, so a 401 to one must be 1.1 for the client to see the challenge."""

    async def write(self, stream):
        self.headers["Connection"] = "close"
        await Response.write(self, _Http11Stream(stream))


class _Http11Stream:
    def __init__(self, stream):
        self.stream = stream
        self.first = True

    async def awrite(self, data):
        if self.first:
            self.first = False
            data = data.replace(b"HTTP/1.0 ", b"HTTP/1.1 ", 1)
        await self.stream.awrite(data)


class RpcServer:
    """The /rpc endpoints on one microdot app."""

    def __init__(self, config, router, provisioning=lambda: False):
        self.config = config
        self.router = router
        self.provisioning = provisioning  # True while unprovisioned: the AP rules apply
        self.device_id = config.get("device.id")
        Request.max_content_length = config.get("rpc.max_frame_size")
        Request.max_body_length = config.get("rpc.max_frame_size")
        self.app = Microdot()
        self._auth = None
        self.app.before_request(self._authenticate)
        self.app.route("/rpc", methods=["POST"])(self._post_frame)
        self.app.route("/rpc", methods=["GET"])(with_websocket(self._websocket))
        self.app.route("/rpc/<method>", methods=["POST", "GET"])(self._post_method)
        self.app.errorhandler(413)(
            lambda req: self._http_error(
                rpc.INVALID_REQUEST, "frame too large: rpc.max_frame_size is %d" % config.get("rpc.max_frame_size"), 413
            )
        )

    # -- auth --------------------------------------------------------------------------------
    def auth(self):
        pw = self.config.get("rpc.auth.password")
        if not pw:
            return None
        a = self._auth
        if a is None or a.password != pw or a.user != self.config.get("rpc.auth.user"):
            a = self._auth = DigestAuth(self.config.get("rpc.auth.realm"), self.config.get("rpc.auth.user"), pw)
        return a

    async def _authenticate(self, request):
        a = self.auth()
        if a is None:
            return None
        why = a.check(request.method, request.headers.get("Authorization"))
        if why is None:
            return None
        body = dumps({"error": {"code": 401, "message": "unauthorized: %s (HTTP Digest, user %s)" % (why, a.user)}})
        headers = {"WWW-Authenticate": a.challenge(why == "stale"), "Content-Type": "application/json"}
        return Http11Response(body, 401, headers, "Unauthorized")

    # -- dispatch ----------------------------------------------------------------------------
    def caller(self, name):
        if self.provisioning():
            return Caller(name, AP_ACL, AP_METHODS)
        return Caller(name)

    async def call(self, msg, caller):
        """Dispatch one parsed frame or batch; the encoded reply, or None for notifications."""
        w = Waiter()
        if caller.methods is not None:
            for m in msg if type(msg) is list else [msg]:
                if type(m) is dict and type(m.get("method")) is str and m["method"] not in caller.methods:
                    why = "forbidden: %s is not served while the CCM is unprovisioned (only %s)" % (
                        m["method"],
                        ", ".join(caller.methods),
                    )
                    return rpc.encode_error(rpc.valid_id(m), rpc.FORBIDDEN, why)
        self.router.dispatch(msg, w.set, caller)
        if w.value is None and not _expects_reply(msg):
            return None
        return await w.wait()

    def _http_error(self, code, message, status=None):
        return Response(
            dumps({"error": {"code": code, "message": message}}),
            status or HTTP_STATUS.get(code, 500),
            {"Content-Type": "application/json"},
        )

    async def _post_frame(self, request):
        try:
            msg = rpc.parse(request.body or b"")
        except rpc.ParseError as e:
            return _json(rpc.encode_error(None, rpc.PARSE_ERROR, "%s: the body is not a JSON-RPC frame" % e))
        if type(msg) is dict and "method" not in msg and "config" in msg:
            msg = {"id": 1, "method": "Config.Set", "params": {"config": msg["config"], "save": True}}
        if type(msg) not in (dict, list):
            return _json(rpc.encode_error(None, rpc.INVALID_REQUEST, "invalid request: expected a JSON-RPC frame"))
        reply = await self.call(msg, self.caller("http"))
        return _json(reply) if reply is not None else Response(b"", 200)

    async def _post_method(self, request, method):
        params = None
        if request.body:
            try:
                params = rpc.parse(request.body)
            except rpc.ParseError as e:
                return self._http_error(rpc.PARSE_ERROR, "%s: the body must be the params, as JSON" % e)
        msg = {"id": 1, "method": method}
        if params is not None:
            msg["params"] = params
        reply = json.loads(await self.call(msg, self.caller("http")))
        if "error" in reply:
            e = reply["error"]
            return self._http_error(e.get("code", rpc.INTERNAL_ERROR), e.get("message", "error"))
        return _json(dumps(reply.get("result")))

    async def _websocket(self, request, ws):
        caller = self.caller("ws")
        while True:
            data = await ws.receive()
            try:
                msg = rpc.parse(data if type(data) is bytes else data.encode())
            except Exception as e:  # ParseError, or a str the browser could not have sent (lone surrogate)
                await ws.send(rpc.encode_error(None, rpc.PARSE_ERROR, str(e))[:-1].decode())
                continue
            if type(msg) is not dict:
                await ws.send(
                    rpc.encode_error(None, rpc.INVALID_REQUEST, "invalid request: expected an object")[:-1].decode()
                )
                continue
            src = msg.pop("src", None)
            msg.pop("dst", None)
            tag = msg.pop("tag", None)
            reply = await self.call(msg, caller)
            if reply is None:
                continue
            out = json.loads(reply)
            out["src"] = self.device_id
            if src is not None:
                out["dst"] = src
            if tag is not None:
                out["tag"] = tag
            await ws.send(dumps(out))

    async def serve(self, host, port, listening=None):
        """Serve until shut down. Port 0 takes a free port: `listening(server)` is called once it is
        bound, so the board can learn the port it got (and keep it for the next boot)."""
        task = asyncio.create_task(self.app.start_server(host=host, port=port))
        try:
            while self.app.server is None and not task.done():
                await sleep_ms_async(5)
            if listening is not None and self.app.server is not None:
                listening(self.app.server)
            await task
        finally:
            task.cancel()

    def stop(self):
        """Stop serving; a server that never started (its port was taken, say) has nothing to stop."""
        if self.app.server is not None:
            self.app.shutdown()


def _expects_reply(msg):
    if type(msg) is list:
        return any(type(m) is not dict or "id" in m or "method" not in m for m in msg)
    return type(msg) is not dict or "id" in msg or "method" not in msg


def _json(body):
    if type(body) is bytes and body.endswith(b"\n"):
        body = body[:-1]
    return Response(body, 200, {"Content-Type": "application/json"})
