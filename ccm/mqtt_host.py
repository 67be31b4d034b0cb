"""MQTT for the host: MQTT.Pub, MQTT.Sub and MQTT.Unsub on the router, and what arrives on the host's
subscriptions back to it as MQTT.Message notifications (docs/protocol.md)."""

from ccm import rpc
from ccm.compat import dumps
from ccm.mqtt import topic_matches


class HostMqtt:
    METHODS = ("MQTT.Pub", "MQTT.Sub", "MQTT.Unsub")

    def __init__(self, cloud, router):
        self.cloud = cloud
        self.client = cloud.client
        self.subs = {}  # what the host subscribed to: filter -> qos
        router.add("MQTT.Pub", self._pub)
        router.add("MQTT.Sub", self._sub)
        router.add("MQTT.Unsub", self._unsub)
        cloud.receivers.append(self._on_message)

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
        self.client.publish(topic, message, qos, p["retain"], answer(call))
        return rpc.LATER

    def _sub(self, params, call):
        p = rpc.take(params, topic=(str, rpc.REQUIRED), qos=(int, 0))
        topic = p["topic"]
        qos = p["qos"]
        if not topic or qos not in (0, 1):
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: expected {topic, qos: 0|1}")
        self.subs[topic] = qos
        self.client.subscribe(topic, qos)
        return True

    def _unsub(self, params, call):
        topic = rpc.take(params, topic=(str, rpc.REQUIRED))["topic"]
        self.subs.pop(topic, None)
        self.client.unsubscribe(topic)
        return True

    def _on_message(self, topic, payload):
        for f in self.subs:
            if topic_matches(f, topic):
                try:
                    message = payload.decode()
                except Exception:
                    message = payload.hex()  # binary payloads reach the host as hex text
                self.cloud.notify_host("MQTT.Message", {"topic": topic, "message": message})
                return


def answer(call):
    """The publish callback that answers a host's call: true once sent/acknowledged, -32002 if dropped."""

    def done(error):
        if error:
            call.fail(rpc.QUEUE_FULL, error)
        else:
            call.reply(True)

    return done
