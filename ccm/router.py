"""Who answers what (docs/protocol.md, the UART link): the CCM's own methods, else the host.

Every caller — the host on the UART, the cloud over MQTT, a WebSocket client, code in this process —
hands its frames to `Router.dispatch` with a `send` for the replies. Methods the CCM serves are answered
here; any other request from a caller that is not the host is forwarded to the host under a CCM-assigned
id, and the host's answer goes back under the caller's id (or -32000 after rpc.host_timeout_ms).
"""

import json

from ccm import FW_VERSION, rpc
from ccm.compat import Uptime, Waiter, dumps

# While unprovisioned, a caller over the network (the access point's /rpc, BLE) may only set wifi.* and
# call these (the manual's provisioning curl)
AP_METHODS = ("Config.Set", "Config.Save", "Wifi.Scan", "Sys.GetInfo")
AP_ACL = "wifi.*"


class Caller:
    """Who is calling over the network (/rpc, BLE), as the router and the config ACL see it."""

    def __init__(self, name, acl=None, methods=None):
        self.name = name
        self.acl = acl  # extra conf_acl for this caller (the AP's wifi.*)
        self.methods = methods  # allowed methods, None: all


def provisioning_caller(name):
    """A caller while the module is unprovisioned: the access point's rules."""
    return Caller(name, AP_ACL, AP_METHODS)


class Router:
    def __init__(self, config, board=None, on_reboot=None):
        self.config = config
        self.board = board
        self.on_reboot = on_reboot  # called with delay_ms by Sys.Reboot
        self.host = None  # the HostLink, once the UART is up
        self.local = rpc.Dispatcher(config.get("rpc.jsonrpc_member"))
        self.local.fallback = self._forward
        self.uptime = Uptime()
        self.status = {"cloud": lambda: {"connected": False}}  # name -> fn(): parts of Sys.GetInfo others own
        self.on_config_changed = []
        self.add("RPC.List", self._list)
        self.add("Sys.GetInfo", self._get_info)
        self.add("Sys.Reboot", self._reboot)

    def add(self, name, handler):
        """Serve `name` on the CCM: handler(params, call) -> result (see rpc.Dispatcher)."""
        self.local.add(name, handler)

    def dispatch(self, msg, send, src=None):
        self.local.dispatch(msg, send, src)

    def _forward(self, call):
        if call.src is not None and call.src is self.host:
            call.fail(rpc.METHOD_NOT_FOUND)  # the host asked for something only it could serve
            return
        if self.host is None:
            call.fail(rpc.NOT_CONNECTED, "not connected: no host on the UART")
            return
        if self.host.busy:
            call.fail(rpc.BUSY, "busy: the host is being re-flashed")
            return
        if call.notification:
            self.host.notify(call.method, call.params)
            return
        try:
            self.host.call_cb(call.method, call.params, call.relay)
        except rpc.RpcError as e:
            call.fail(e.code, e.message)

    # -- the in-process caller ----------------------------------------------------------------
    async def call(self, method, params=None):
        """Call any method as a caller other than the host would: local, or forwarded to the host."""
        w = Waiter()
        msg = {"id": 0, "method": method}
        if params is not None:
            msg["params"] = params
        self.dispatch(msg, lambda frame: w.set(json.loads(frame)), None)
        return rpc.result(await w.wait())

    async def answer(self, msg, caller, me=None):
        """A parsed frame or batch from a network caller: the encoded reply, or None when it held only
        notifications. A caller limited to some `methods` (the access point's) gets -32003 for others.
        With `me` (this device's name) the frame is in mos's envelope (WebSocket, BLE): its `src`, `dst`
        and `tag` are taken off, and the reply comes back from `me` to that `src` with the same `tag`."""
        src = tag = None
        if me is not None:
            src = msg.pop("src", None)
            msg.pop("dst", None)
            tag = msg.pop("tag", None)
        reply = await self._answer(msg, caller)
        if me is None or reply is None:
            return reply
        out = json.loads(reply)
        out["src"] = me
        if src is not None:
            out["dst"] = src
        if tag is not None:
            out["tag"] = tag
        return dumps(out)

    async def _answer(self, msg, caller):
        if caller.methods is not None:
            for m in msg if type(msg) is list else [msg]:
                if type(m) is dict and type(m.get("method")) is str and m["method"] not in caller.methods:
                    why = "forbidden: %s is not served while the CCM is unprovisioned (only %s)" % (
                        m["method"],
                        ", ".join(caller.methods),
                    )
                    return rpc.encode_error(rpc.valid_id(m), rpc.FORBIDDEN, why)
        w = Waiter()
        self.dispatch(msg, w.set, caller)
        if w.value is None and not _expects_reply(msg):
            return None
        return await w.wait()

    def notify(self, method, params=None):
        msg = {"method": method}
        if params is not None:
            msg["params"] = params
        self.dispatch(msg, lambda frame: None, None)

    # -- local methods ------------------------------------------------------------------------
    def hello(self):
        """Sys.Init params: what the host learns when the link comes up."""
        return {"fw_version": FW_VERSION, "device_id": self.config.get("device.id")}

    def _list(self, params, call):
        rpc.take(params)
        return self.local.names()

    def _get_info(self, params, call):
        rpc.take(params)
        b = self.board
        host = {}
        if self.host is not None:
            host = dict(self.host.stats)
            if self.host.info is not None:
                host["info"] = self.host.info
        info = {
            "fw_version": FW_VERSION,
            "fw_id": b.fw_id if b else None,
            "arch": b.arch if b else None,
            "mac": b.mac if b else None,
            "device_id": self.config.get("device.id"),
            "uptime": self.uptime.seconds(),
            "heap_free": b.heap_free() if b else None,
            "host": host,
        }
        peak = b.heap_peak() if b else None
        if peak is not None:
            info["heap_peak"] = peak
            info["loaded"] = b.loaded()
        for name, fn in self.status.items():
            info[name] = fn()
        return info

    def _reboot(self, params, call):
        delay = rpc.take(params, delay_ms=(int, 100))["delay_ms"]
        if delay < 0:
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: delay_ms must be a non-negative integer")
        self.request_reboot(delay)
        return True

    def request_reboot(self, delay_ms):
        if self.on_reboot is None:
            raise rpc.RpcError(rpc.INTERNAL_ERROR, "internal error: this board cannot reboot")
        self.on_reboot(delay_ms)

    def config_changed(self):
        """Called after Config.Set: whoever applies settings live (WiFi provisioning) listens here."""
        for fn in self.on_config_changed:
            fn()


def _expects_reply(msg):
    if type(msg) is list:
        return any(type(m) is not dict or "id" in m or "method" not in m for m in msg)
    return type(msg) is not dict or "id" in msg or "method" not in msg
