"""The device shadow, AWS IoT's topic scheme (docs/protocol.md): Shadow.Report and Shadow.Get for the host,
Shadow.Delta to it. Where does a `Shadow.Delta` come from? `_on_delta` (an update changed desired) and
`_on_get_accepted` (the CCM's own get after it connected: what changed while it was away).

A capability that owns part of the desired state (OTA's `desired.ota`) adds a taker: `takers` see each
delta first and give back what is left for the host.

`delta(desired, reported)` and `merge_state` are the AWS IoT shadow rules, shared with the cloud/ shadow
service.
"""

import json

from ccm import rpc
from ccm.compat import dumps
from ccm.mqtt_host import answer


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


class Shadow:
    METHODS = ("Shadow.Report", "Shadow.Get")

    def __init__(self, cloud, config, router):
        self.cloud = cloud
        self.client = cloud.client
        self.device_id = cloud.device_id
        self.prefix = (config.get("shadow.topic_prefix") or "$aws/things/{device.id}/shadow").replace(
            "{device.id}", self.device_id
        )
        self.state = {"desired": {}, "reported": {}, "delta": {}, "version": 0}
        self.takers = []  # fn(delta) -> the delta without what that capability took
        self._token = 0
        for t in ("update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected"):
            self.client.subscribe(self.prefix + "/" + t, 1)
        router.add("Shadow.Report", self._report)
        router.add("Shadow.Get", self._get)
        cloud.receivers.append(self._on_message)
        cloud.connect_hooks.append(self._resync)

    def publish_reported(self, reported, done=None, tag=None):
        """Publish `reported` (already JSON text) as state.reported, with a clientToken of our own."""
        self._token += 1
        token = "%s-%s-%d" % (self.device_id, tag, self._token) if tag else "%s-%d" % (self.device_id, self._token)
        doc = '{"state":{"reported":%s},"clientToken":"%s"}' % (reported, token)
        self.client.publish(self.prefix + "/update", doc, 1, False, done)

    def _get(self, params, call):
        rpc.take(params)
        return self.state

    def _report(self, params, call):
        if params is None:  # "reported": null would erase the whole reported state
            raise rpc.RpcError(rpc.INVALID_PARAMS, 'invalid params: the reported state, e.g. {"on": true}')
        self.publish_reported(dumps(params), answer(call))
        return rpc.LATER

    def _resync(self):
        """Ask for the shadow: what changed while away. Only the answer to this get (its clientToken)
        reaches the host."""
        self._token += 1
        self._get_token = "%s-get-%d" % (self.device_id, self._token)
        self.client.publish(self.prefix + "/get", '{"clientToken":"%s"}' % self._get_token, 1, control=True)

    def _to_host(self, d):
        for take in self.takers:
            d = take(d)
        if d:
            self.cloud.notify_host("Shadow.Delta", d)

    def _on_message(self, topic, payload):
        if not topic.startswith(self.prefix + "/"):
            return
        kind = topic[len(self.prefix) + 1 :]
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
            self._to_host(st)

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
        if mine:
            self._to_host(d)

    def _set_version(self, doc):
        v = doc.get("version")
        if type(v) is int:
            self.state["version"] = v
