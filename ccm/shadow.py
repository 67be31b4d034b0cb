"""The cloud side of the CCM (DESIGN §4): MQTT for the host, the device shadow, RPC over MQTT.

`ShadowBridge` serves `MQTT.Pub`, `MQTT.Sub`, `MQTT.Unsub`, `Shadow.Report` and `Shadow.Get` on the
router, and turns what arrives from the broker into `MQTT.Message` and `Shadow.Delta` notifications and
forwarded calls for the host. Where does a `Shadow.Delta` come from? `_on_delta` and `_on_get_accepted`.

`delta(desired, reported)` is the AWS IoT shadow rule, shared with the cloud/ shadow service.
"""

import json

from ccm import rpc
from ccm.compat import dumps
from ccm.mqtt import CONNECTED, topic_matches


def delta(desired, reported):
    """The desired leaves that differ from reported (AWS IoT: objects recurse, arrays compare whole)."""
    if type(desired) is not dict:
        return None if desired == reported else desired
    if type(reported) is not dict:
        reported = {}
    out = {}
    for k, v in desired.items():
        if type(v) is dict:
            d = delta(v, reported.get(k))
            if d:
                out[k] = d
        elif k not in reported or reported[k] != v:
            out[k] = v
    return out


def merge_state(old, new):
    """AWS shadow update of one section: objects merge, `null` deletes a key, anything else replaces."""
    if type(new) is not dict or type(old) is not dict:
        return new
    out = dict(old)
    for k, v in new.items():
        if v is None:
            out.pop(k, None)
        elif type(v) is dict:
            m = merge_state(out.get(k), v)
            if type(m) is dict:
                m = {a: b for a, b in m.items() if b is not None}
            out[k] = m
        else:
            out[k] = v
    return out


class ShadowBridge:
    """MQTT and the device shadow for the host, on one MqttClient."""

    def __init__(self, config, router, client):
        self.router = router
        self.client = client
        self.device_id = config.get("device.id")
        self.prefix = (config.get("shadow.topic_prefix") or "$aws/things/{device.id}/shadow").replace(
            "{device.id}", self.device_id
        )
        self.rpc_topic = self.device_id + "/rpc"
        self.status_topic = self.device_id + "/status"
        self.state = {"desired": {}, "reported": {}, "delta": {}, "version": 0}
        self.host_subs = {}  # what the host subscribed to: filter -> qos
        self._token = 0
        self._dropped_reported = 0
        self.rpc_limit = config.get("mqtt.queue_size")  # cloud calls in progress at once (their replies included)
        self.rpc_open = 0
        self.rpc_refused = 0
        self.ota = None  # the OTA receiver: desired.ota triggers it, reported.ota follows it
        client.will = (self.status_topic, "offline", 1, True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        for t in ("update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected"):
            client.subscribe(self.prefix + "/" + t, 1)
        client.subscribe(self.rpc_topic, 1)
        router.add("MQTT.Pub", self._pub)
        router.add("MQTT.Sub", self._sub)
        router.add("MQTT.Unsub", self._unsub)
        router.add("Shadow.Report", self._report)
        router.add("Shadow.Get", self._get)
        router.status["cloud"] = self.status

    def status(self):
        c = self.client
        st = {"connected": c.state == CONNECTED, "queued": len(c.queue), "dropped": c.dropped}
        if self.rpc_refused:
            st["rpc_refused"] = self.rpc_refused
        if c.state != CONNECTED and c.last_error:
            st["reason"] = c.last_error
        return st

    # -- host → cloud ---------------------------------------------------------------------------
    def _pub(self, params, call):
        p = rpc.take(params, topic=(str, rpc.REQUIRED), message=(rpc.ANY, ""), qos=(int, 0), retain=(bool, False))
        topic = p["topic"]
        message = p["message"]
        qos = p["qos"]
        if not topic or "+" in topic or "#" in topic:
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: topic must be a topic name without wildcards")
        if qos not in (0, 1):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: qos must be 0 or 1")
        if type(message) is not str:
            message = dumps(message)

        def done(error):
            if error:
                call.fail(rpc.QUEUE_FULL, error)
            else:
                call.reply(True)

        self.client.publish(topic, message, qos, p["retain"], done)
        return rpc.LATER

    def _sub(self, params, call):
        p = rpc.take(params, topic=(str, rpc.REQUIRED), qos=(int, 0))
        topic = p["topic"]
        qos = p["qos"]
        if not topic or qos not in (0, 1):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: expected {topic, qos: 0|1}")
        self.host_subs[topic] = qos
        self.client.subscribe(topic, qos)
        return True

    def _unsub(self, params, call):
        topic = rpc.take(params, topic=(str, rpc.REQUIRED))["topic"]
        self.host_subs.pop(topic, None)
        self.client.unsubscribe(topic)
        return True

    def _get(self, params, call):
        rpc.take(params)
        return self.state

    def _report(self, params, call):
        if params is None:  # "reported": null would erase the whole reported state
            raise rpc.RpcError(rpc.INVALID_PARAMS, 'invalid params: the reported state, e.g. {"on": true}')
        self._token += 1
        doc = '{"state":{"reported":%s},"clientToken":"%s-%d"}' % (dumps(params), self.device_id, self._token)

        def done(error):
            if error:
                call.fail(rpc.QUEUE_FULL, error)
            else:
                call.reply(True)

        self.client.publish(self.prefix + "/update", doc, 1, False, done)
        return rpc.LATER

    # -- OTA through the shadow ------------------------------------------------------------------
    def attach_ota(self, receiver):
        self.ota = receiver
        receiver.listeners.append(self._report_ota)

    def _report_ota(self, st):
        """reported.ota follows the receiver: version is what is installed, so the delta on desired.ota
        stays until the update has succeeded."""
        r = {"state": st["state"], "progress": st["progress"], "message": st["message"]}
        if self.ota.current is not None:
            r["version"] = self.ota.current
        if st.get("version") is not None:
            r["target"] = st["version"]
        if self.ota.current_url:
            r["url"] = self.ota.current_url
        self._token += 1
        doc = '{"state":{"reported":{"ota":%s}},"clientToken":"%s-ota-%d"}' % (dumps(r), self.device_id, self._token)
        self.client.publish(self.prefix + "/update", doc, 1)

    def _take_ota(self, d):
        """Strip `ota` from a delta (it is the CCM's, not the host's) and act on it."""
        if type(d) is not dict or "ota" not in d:
            return d
        d = dict(d)
        want = d.pop("ota")
        r = self.ota
        if r is None or type(want) is not dict:
            return d
        url = want.get("url")
        version = want.get("version")
        if type(url) is not str or r.state == 1:
            return d
        if not r.wanted(version):
            r.current = version
            r.current_url = url
            self._report_ota(r.status())  # already installed: say so, do not apply again
            return d
        r.spawn(r.update(url, want.get("commit_timeout", 0) or 0, version, url))
        return d

    # -- cloud → host ---------------------------------------------------------------------------
    def _on_connect(self):
        self.client.publish(self.status_topic, "online", 1, True, control=True)
        # resync what changed while away; only the answer to this get (its clientToken) reaches the host
        self._token += 1
        self._get_token = "%s-get-%d" % (self.device_id, self._token)
        self.client.publish(self.prefix + "/get", '{"clientToken":"%s"}' % self._get_token, 1, control=True)
        self._cloud_status(True, None)

    def _on_disconnect(self, reason):
        self._cloud_status(False, reason)

    def _cloud_status(self, connected, reason):
        st = self.status()
        params = {"connected": connected}
        if reason:
            params["reason"] = reason
        if st["dropped"] != self._dropped_reported:  # losses are reported, never silent
            params["dropped"] = st["dropped"] - self._dropped_reported
            self._dropped_reported = st["dropped"]
        self._host_notify("Cloud.Status", params)

    def _host_notify(self, method, params):
        if self.router.host is not None:
            self.router.host.notify(method, params)

    def _on_message(self, topic, payload):
        if topic.startswith(self.prefix + "/"):
            self._on_shadow(topic[len(self.prefix) + 1 :], payload)
        elif topic == self.rpc_topic:
            self._on_rpc(payload)
        for f in self.host_subs:
            if topic_matches(f, topic):
                try:
                    message = payload.decode()
                except Exception:
                    message = payload.hex()  # binary payloads reach the host as hex text
                self._host_notify("MQTT.Message", {"topic": topic, "message": message})
                return

    def _on_shadow(self, kind, payload):
        try:
            doc = json.loads(payload)
        except Exception:
            return
        if type(doc) is not dict:
            return
        if kind == "update/delta":
            self._on_delta(doc)
        elif kind == "get/accepted":
            self._on_get_accepted(doc)
        elif kind == "update/accepted":
            st = doc.get("state") or {}
            for section in ("desired", "reported"):
                if section in st:
                    self.state[section] = merge_state(self.state[section], st[section])
            self._set_version(doc)
            self.state["delta"] = delta(self.state["desired"], self.state["reported"])

    def _on_delta(self, doc):
        st = doc.get("state")
        self._set_version(doc)
        if st:
            self.state["desired"] = merge_state(self.state["desired"], st)
            self.state["delta"] = st
            st = self._take_ota(st)
            if st:
                self._host_notify("Shadow.Delta", st)

    _get_token = None  # the clientToken of this CCM's own outstanding get

    def _on_get_accepted(self, doc):
        """The shadow as a get answered it. Every client's get is answered on the same topic (a dashboard
        polling, a second CLI): only the answer to this CCM's own get tells the host of the delta; the
        others only refresh what Shadow.Get returns."""
        mine = self._get_token is not None and doc.get("clientToken") == self._get_token
        if mine:
            self._get_token = None
        st = doc.get("state") or {}
        self.state["desired"] = st.get("desired") or {}
        self.state["reported"] = st.get("reported") or {}
        self._set_version(doc)
        d = st.get("delta")
        if d is None:
            d = delta(self.state["desired"], self.state["reported"])
        self.state["delta"] = d or {}
        if not mine:
            return
        d = self._take_ota(d)
        if d:
            self._host_notify("Shadow.Delta", d)

    def _set_version(self, doc):
        v = doc.get("version")
        if type(v) is int:
            self.state["version"] = v

    def _on_rpc(self, payload):
        """RPC over MQTT: {id, src, method, params} on {device.id}/rpc; the answer goes to {src}/rpc.

        Every call is answered (DESIGN §3, overload): a request is taken on only while fewer than
        `mqtt.queue_size` cloud calls are open — from arrival until the broker acknowledged the reply
        (QoS 1) — so its reply always has room; beyond that it is refused at once with -32002, sent
        QoS 0 ahead of the queue (a refusal holds no memory waiting for an acknowledgement)."""
        try:
            msg = rpc.parse(payload)
        except Exception:
            return  # no src to answer to
        if type(msg) is not dict or type(msg.get("src")) is not str or not msg["src"]:
            return
        src = msg.pop("src")
        msg.pop("dst", None)
        topic = src + "/rpc"
        device_id = self.device_id
        client = self.client

        def reply_doc(frame):
            reply = json.loads(frame)
            reply["src"] = device_id
            reply["dst"] = src
            return dumps(reply)

        k = rpc.kind(msg)
        if k == rpc.RESPONSE:
            return  # nobody here called the cloud
        if k == rpc.NOTIFICATION:  # nothing will be sent back
            self.router.dispatch(msg, lambda frame: None, "mqtt:" + src)
            return
        if self.rpc_open >= self.rpc_limit:
            self.rpc_refused += 1
            why = "queue full: %d cloud calls already in progress" % self.rpc_limit
            client.publish(topic, reply_doc(rpc.encode_error(rpc.valid_id(msg), rpc.QUEUE_FULL, why)), 0, control=True)
            return
        self.rpc_open += 1

        def release(error):
            self.rpc_open -= 1

        def send(frame):
            client.publish(topic, reply_doc(frame), 1, on_done=release, reserved=True)

        self.router.dispatch(msg, send, "mqtt:" + src)


def client_from_config(config):
    """An MqttClient for mqtt.* (server "host:port", TLS when a CA or client certificate is set)."""
    from ccm.mqtt import MqttClient

    server = config.get("mqtt.server")
    host, _, port = server.rpartition(":")
    if port and not port.isdigit():
        raise ValueError("mqtt.server %s: expected host:port, the port a number" % server)
    ssl_ctx = None
    if config.get("mqtt.ssl_ca_cert") or config.get("mqtt.ssl_cert"):
        ssl_ctx = _ssl_context(config)
    return MqttClient(
        host or "localhost",
        int(port or (8883 if ssl_ctx else 1883)),
        client_id=config.get("mqtt.client_id") or config.get("device.id"),
        keepalive=config.get("mqtt.keep_alive"),
        user=config.get("mqtt.user") or None,
        password=config.get("mqtt.pass") or None,
        ssl=ssl_ctx,
        queue_size=config.get("mqtt.queue_size"),
        backoff_min_ms=config.get("mqtt.reconnect_timeout_min_ms"),
        backoff_max_ms=config.get("mqtt.reconnect_timeout_max_ms"),
    )


def _ssl_context(config):
    """The TLS context for mqtt.ssl_*; an unreadable or invalid file is named in the error."""
    import ssl
    import sys

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    mpy = sys.implementation.name == "micropython"
    ca = config.get("mqtt.ssl_ca_cert")
    if ca:
        if mpy:  # MicroPython's mbedTLS may take DER only: PEM files are decoded here
            _tls_file("mqtt.ssl_ca_cert", ca, lambda: ctx.load_verify_locations(cadata=der_file(ca)))
        else:
            _tls_file("mqtt.ssl_ca_cert", ca, lambda: ctx.load_verify_locations(cafile=ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if hasattr(ctx, "check_hostname"):
        ctx.check_hostname = bool(ca) and bool(config.get("mqtt.ssl_server_name", True))
    cert = config.get("mqtt.ssl_cert")
    if cert:
        key = config.get("mqtt.ssl_key")
        if mpy:
            load = lambda: ctx.load_cert_chain(der_file(cert), der_file(key))  # noqa: E731
        else:
            load = lambda: ctx.load_cert_chain(cert, key)  # noqa: E731
        _tls_file("mqtt.ssl_cert/ssl_key", cert + ", " + key, load)
    return ctx


def der_file(path):
    """A certificate or key file as DER: PEM (-----BEGIN …----- base64 -----END …-----) is decoded, the
    first block only; DER is returned as it is. The MicroPython unix port's mbedTLS parses no PEM, and
    DER is what MicroPython's own TLS tests use."""
    import binascii

    with open(path, "rb") as f:
        data = f.read()
    start = data.find(b"-----BEGIN")
    if start < 0:
        return data
    body = data.find(b"\n", start) + 1
    end = data.find(b"-----END", body)
    if body <= 0 or end < 0:
        raise ValueError("a PEM block without its -----END line")
    return binascii.a2b_base64(data[body:end].replace(b"\r", b"").replace(b"\n", b""))


def _tls_file(setting, path, load):
    try:
        load()
    except (OSError, ValueError) as e:  # missing file; MicroPython: ValueError("invalid cert")
        raise ValueError("%s %s cannot be used: %s" % (setting, path, e)) from None
