"""The CCM's one MQTT connection and what rides on it (docs/architecture.md, docs/protocol.md).

`Cloud` owns the connection's own topics and events: the last will and presence on `{device.id}/status`,
`Cloud.Status` to the host when the connection comes or goes (with what was lost meanwhile), and the
`cloud` section of Sys.GetInfo. Each capability registers its own methods and topics on it:

- `ccm/mqtt_host.py`   MQTT.Pub / MQTT.Sub / MQTT.Unsub for the host, MQTT.Message back to it
- `ccm/shadow.py`      the device shadow: Shadow.Report / Shadow.Get, Shadow.Delta to the host
- `ccm/cloud_rpc.py`   RPC over MQTT on `{device.id}/rpc`, answered on `{src}/rpc`
- `ccm/ota/shadow_ota.py`  OTA through the shadow's desired.ota, followed in reported.ota
"""

from ccm.mqtt import CONNECTED


class Cloud:
    def __init__(self, config, router, client):
        self.router = router
        self.client = client
        self.device_id = config.get("device.id")
        self.status_topic = self.device_id + "/status"
        self.receivers = []  # fn(topic, payload) for every message from the broker
        self.connect_hooks = []  # fn() once connected, after presence says online
        self.counters = {}  # name -> fn(): figures a capability adds to the status when not zero
        self._dropped_reported = 0
        client.will = (self.status_topic, "offline", 1, True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        router.status["cloud"] = self.status

    def status(self):
        c = self.client
        st = {"connected": c.state == CONNECTED, "queued": len(c.queue), "dropped": c.dropped}
        for name, fn in self.counters.items():
            n = fn()
            if n:
                st[name] = n
        if c.state != CONNECTED and c.last_error:
            st["reason"] = c.last_error
        return st

    def notify_host(self, method, params):
        if self.router.host is not None:
            self.router.host.notify(method, params)

    def _on_message(self, topic, payload):
        for fn in self.receivers:
            fn(topic, payload)

    def _on_connect(self):
        self.client.publish(self.status_topic, "online", 1, True, control=True)
        for fn in self.connect_hooks:
            fn()
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
        self.notify_host("Cloud.Status", params)


def methods():
    """The host's cloud methods: while the cloud cannot start, each answers -32001 with the reason."""
    from ccm.mqtt_host import HostMqtt
    from ccm.shadow import Shadow

    return HostMqtt.METHODS + Shadow.METHODS
