"""The shadow's get on the module's own runtime (issue 13, item 4): every client's shadow get is
answered on the same get/accepted topic; only the answer to the CCM's own get (its clientToken) may
send the host Shadow.Delta. Portable (CPython + MicroPython)."""

import json

from ccm.cloud import Cloud
from ccm.config import Config
from ccm.router import Router
from ccm.shadow import Shadow


class Client:
    """The MQTT client as the bridge uses it: what it publishes is recorded."""

    state = 0
    queue = ()
    dropped = 0
    last_error = None

    def __init__(self):
        self.published = []

    def subscribe(self, topic, qos=0):
        pass

    def publish(self, topic, payload, qos=0, retain=False, done=None, control=False, reserved=False):
        self.published.append((topic, payload))


class Host:
    def __init__(self):
        self.notes = []

    def notify(self, method, params):
        self.notes.append((method, params))


def test_only_the_answer_to_the_ccms_own_get_reaches_the_host():
    cfg = Config({"device": {"id": "lamp-1"}})
    router = Router(cfg)
    router.host = host = Host()
    client = Client()
    bridge = Shadow(Cloud(cfg, router, client), cfg, router)
    prefix = "$aws/things/lamp-1/shadow"
    client.on_connect()
    get = [json.loads(p) for t, p in client.published if t == prefix + "/get"][0]
    answer = {"state": {"desired": {"on": True}, "reported": {}, "delta": {"on": True}}, "version": 4}

    def accepted(token):
        doc = dict(answer)
        if token is not None:
            doc["clientToken"] = token
        client.on_message(prefix + "/get/accepted", json.dumps(doc).encode())

    accepted("dashboard-7")  # another client's get
    accepted(None)  # one without a token
    assert deltas(host) == 0 and bridge.state["delta"] == {"on": True} and bridge.state["version"] == 4
    accepted(get["clientToken"])
    assert deltas(host) == 1 and host.notes[-1] == ("Shadow.Delta", {"on": True})
    accepted(get["clientToken"])  # answered once: a repeat is not the CCM's get any more
    assert deltas(host) == 1


def deltas(host):
    return len([m for m, _ in host.notes if m == "Shadow.Delta"])
