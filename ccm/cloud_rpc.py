"""RPC over MQTT (docs/protocol.md): requests `{id, src, method, params}` on `{device.id}/rpc`, answered on
`{src}/rpc` — the CCM's own methods, or forwarded to the host like any other caller's."""

import json

from ccm import rpc
from ccm.compat import dumps


class CloudRpc:
    def __init__(self, cloud, config, router):
        self.router = router
        self.client = cloud.client
        self.device_id = cloud.device_id
        self.topic = self.device_id + "/rpc"
        self.limit = config.get("mqtt.queue_size")  # cloud calls in progress at once (their replies included)
        self.open = 0
        self.refused = 0
        self.client.subscribe(self.topic, 1)
        cloud.receivers.append(self._on_message)
        cloud.counters["rpc_refused"] = lambda: self.refused

    def _on_message(self, topic, payload):
        if topic == self.topic:
            self._on_rpc(payload)

    def _on_rpc(self, payload):
        """RPC over MQTT: {id, src, method, params} on {device.id}/rpc; the answer goes to {src}/rpc.

        Every call is answered (docs/protocol.md, overload): a request is taken on only while fewer than
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
        if self.open >= self.limit:
            self.refused += 1
            why = "queue full: %d cloud calls already in progress" % self.limit
            client.publish(topic, reply_doc(rpc.encode_error(rpc.valid_id(msg), rpc.QUEUE_FULL, why)), 0, control=True)
            return
        self.open += 1

        def release(error):
            self.open -= 1

        def send(frame):
            client.publish(topic, reply_doc(frame), 1, on_done=release, reserved=True)

        self.router.dispatch(msg, send, "mqtt:" + src)
