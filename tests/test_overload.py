"""Overload over MQTT (issue 10): many cloud callers, bursts beyond rpc.max_pending and mqtt.queue_size.
Every call ends in its result or an explicit error to its own caller; none is lost, none crosses over."""

import pytest
from conftest import cloud_config, unique_device, wait_until

from ccm import rpc
from cloud.load import hammer
from host_lib import Host
from sim.ccm import VirtualCcm


@pytest.fixture
def busy_product(mosquitto):
    device = unique_device()
    v = VirtualCcm(cloud_config(mosquitto.port, device, queue_size=8) | {"rpc": {"max_pending": 4}}).start()
    host = Host(v.path, fw_version="1.0", app="load")
    host.export("Sum", lambda p: p[0] + p[1])
    host.start()
    wait_until(lambda: v.ccm.mqtt.state == 2, what="the CCM to connect to mosquitto")
    yield v, device
    host.close()
    v.stop()


@pytest.mark.parametrize("callers,burst", [(1, 40), (20, 20)])
def test_every_cloud_call_is_answered_under_overload(busy_product, mosquitto, callers, burst):
    v, device = busy_product
    r = hammer(mosquitto.url, device, callers=callers, burst=burst)
    print(f"\n{callers} callers x {burst}: {r.summary()}")
    assert r.lost == 0 and r.crosstalk == 0, r.summary()
    assert set(r.outcomes) <= {"result", rpc.QUEUE_FULL, rpc.HOST_TIMEOUT}, r.summary()
    assert r.outcomes["result"] > 0 and r.outcomes[rpc.QUEUE_FULL] > 0, r.summary()  # the bounds were reached
    cloud_rpc = v.ccm.cloud.rpc
    wait_until(lambda: cloud_rpc.open == 0, what="every reply acknowledged by the broker")
    refused = v.call("Sys.GetInfo")["cloud"].get("rpc_refused", 0)  # up front, by mqtt.queue_size
    assert 0 < refused <= r.outcomes[rpc.QUEUE_FULL]  # the rest: rpc.max_pending calls already at the host
