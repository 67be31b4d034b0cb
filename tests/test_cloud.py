"""The cloud bridge end to end: host_lib ⇄ pty ⇄ virtual CCM ⇄ real mosquitto ⇄ paho-mqtt (the cloud)."""

import json
import time
from types import SimpleNamespace

import pytest
from conftest import cloud_config, unique_device, wait_until
from netutil import TcpProxy, make_pki

from ccm import rpc
from host_lib import Host, RpcError
from sim.ccm import VirtualCcm


def attach_host(v):
    """A host program on the CCM's UART that records what the CCM tells it."""
    seen = SimpleNamespace(messages=[], deltas=[], status=[], inits=[])
    host = Host(v.path, fw_version="1.0", app="test_host")
    host.on("MQTT.Message")(seen.messages.append)
    host.on("Cloud.Status")(seen.status.append)
    host.on("Sys.Init")(seen.inits.append)
    host.export("Sum", lambda p: p[0] + p[1])
    return host, seen


@pytest.fixture
def product(mosquitto, shadow_service):
    device = unique_device()
    v = VirtualCcm(cloud_config(mosquitto.port, device)).start()
    host, seen = attach_host(v)

    @host.on("Shadow.Delta")
    def delta(state):
        seen.deltas.append(state)
        host.shadow_report(state)

    host.start()
    wait_until(lambda: v.ccm.mqtt.state == 2, what="the CCM to connect to mosquitto")
    yield SimpleNamespace(v=v, host=host, seen=seen, device=device)
    host.close()
    v.stop()


def test_host_mqtt_pub_reaches_a_paho_subscriber_with_qos_0_and_1(product, cloud):
    cloud.subscribe("t1")
    product.host.mqtt_pub("t1", "hello")  # the manual's notification, no id
    assert product.host.mqtt_pub("t1", "acked", qos=1, wait=True) is True  # with an id: true once PUBACKed
    got = [cloud.wait_message("t1", lambda p: p == b"hello")[2], cloud.wait_message("t1", lambda p: p == b"acked")[2]]
    assert got == [b"hello", b"acked"]
    with pytest.raises(RpcError) as e:
        product.host.call("MQTT.Pub", {"topic": "a/#", "message": "x"})
    assert e.value.code == rpc.INVALID_PARAMS


def test_paho_publish_reaches_the_host_as_mqtt_message(product, cloud):
    assert product.host.mqtt_sub("cmd/+", qos=1) is True
    cloud.publish("cmd/lamp", "on")
    cloud.publish("other/topic", "ignored")
    cloud.publish("cmd/fan", b"\x00\xff")
    wait_until(lambda: len(product.seen.messages) >= 2, what="MQTT.Message")
    assert product.seen.messages == [{"topic": "cmd/lamp", "message": "on"}, {"topic": "cmd/fan", "message": "00ff"}]
    product.host.call("MQTT.Unsub", {"topic": "cmd/+"})
    cloud.publish("cmd/lamp", "late")
    cloud.publish(f"{product.device}/nothing", "x")  # something the CCM does get, to know it had time
    assert all(m["message"] != "late" for m in product.seen.messages)


def test_sys_init_makes_the_host_resubscribe_after_a_ccm_reboot(product, cloud):
    host = product.host

    @host.on("Sys.Init")
    def resubscribe(info):
        product.seen.inits.append(info)
        host.mqtt_sub("cmd/#")

    host.mqtt_sub("cmd/#")
    host.call("Sys.Reboot", {"delay_ms": 10})
    wait_until(lambda: product.seen.inits, what="Sys.Init after the reboot")
    assert product.seen.inits[0]["device_id"] == product.device
    wait_until(
        lambda: product.v.ccm.mqtt and product.v.ccm.mqtt.state == 2 and "cmd/#" in product.v.ccm.cloud.host_mqtt.subs
    )
    time.sleep(0.2)  # let SUBSCRIBE reach the broker
    cloud.publish("cmd/x", "after reboot")
    wait_until(lambda: {"topic": "cmd/x", "message": "after reboot"} in product.seen.messages, what="MQTT.Message")


def test_shadow_desired_reaches_the_host_and_its_report_clears_the_delta(product, cloud):
    doc = cloud.shadow_update(product.device, {"desired": {"on": True}})
    assert doc["state"] == {"desired": {"on": True}}
    wait_until(lambda: product.seen.deltas, what="Shadow.Delta")
    assert product.seen.deltas == [{"on": True}]

    def settled():
        d = cloud.shadow_get(product.device)
        return d if d["state"].get("reported") == {"on": True} else None

    doc = wait_until(settled, what="the host's report in the shadow")
    assert "delta" not in doc["state"] and doc["state"]["desired"] == {"on": True}
    got = product.host.call("Shadow.Get")
    assert got["reported"] == {"on": True} and got["delta"] == {} and got["version"] == doc["version"]


def test_cloud_rpc_is_answered_by_the_host_and_unknown_methods_get_not_found(product, cloud):
    assert cloud.call(product.device, "Sum", [2, 3]) == 5
    with pytest.raises(RpcError) as e:
        cloud.call(product.device, "No.Such.Method")
    assert e.value.code == rpc.METHOD_NOT_FOUND
    assert cloud.call(product.device, "Sys.GetInfo")["cloud"]["connected"] is True  # served by the CCM itself
    i, topic, payload = cloud.wait_message(f"cloud/{cloud.client_id}/rpc", lambda p: json.loads(p)["id"] == 1)
    assert json.loads(payload) == {"id": 1, "result": 5, "src": product.device, "dst": f"cloud/{cloud.client_id}"}


def test_presence_is_online_and_the_last_will_says_offline(mosquitto, shadow_service, cloud):
    device = unique_device()
    cloud.subscribe(f"{device}/status")
    proxy = TcpProxy(mosquitto.port)
    v = VirtualCcm(cloud_config(proxy.port, device)).start()
    try:
        cloud.wait_message(f"{device}/status", lambda p: p == b"online")
        proxy.block()  # the module drops off the network without saying goodbye
        cloud.wait_message(f"{device}/status", lambda p: p == b"offline", timeout=30)
    finally:
        v.stop()
        proxy.close()


def test_broker_outage_queues_qos1_reports_loss_and_resyncs_the_shadow(mosquitto, shadow_service, cloud):
    device = unique_device()
    proxy = TcpProxy(mosquitto.port)
    v = VirtualCcm(cloud_config(proxy.port, device, queue_size=5)).start()
    host, seen = attach_host(v)
    host.on("Shadow.Delta")(seen.deltas.append)
    host.start()
    try:
        wait_until(lambda: v.ccm.mqtt.state == 2 and not v.ccm.mqtt.inflight, what="connected and synced")
        cloud.subscribe("outage/#")

        proxy.block()  # keep the CCM away from the broker until the cloud side is ready again
        mosquitto.stop()  # and kill the broker for real
        wait_until(lambda: seen.status and seen.status[-1]["connected"] is False, what="Cloud.Status offline")
        results = []
        for n in range(5):
            host.mqtt_pub(f"outage/{n}", f"m{n}", qos=1)  # notifications: queued
        for n in range(5, 8):
            try:
                results.append(host.mqtt_pub(f"outage/{n}", f"m{n}", qos=1, wait=True))
            except RpcError as e:
                results.append(e.code)
        assert results == [rpc.QUEUE_FULL] * 3  # beyond the bound: refused, not lost silently
        st = host.call("Sys.GetInfo")["cloud"]
        assert (st["connected"], st["queued"], st["dropped"]) == (False, 5, 3) and st["reason"]

        mosquitto.start()
        wait_until(lambda: shadow_service.ready, what="the shadow service back")
        wait_until(cloud.connected.is_set)
        cloud.subscribe("outage/#")
        cloud.shadow_update(device, {"desired": {"mode": "eco"}})  # while the CCM is still offline
        proxy.allow()

        for n in range(5):
            cloud.wait_message(f"outage/{n}", lambda p, n=n: p == f"m{n}".encode(), timeout=20)
        wait_until(lambda: {"mode": "eco"} in seen.deltas, timeout=20, what="the missed desired change")
        back = wait_until(lambda: [s for s in seen.status if s["connected"]], what="Cloud.Status online")
        assert back[-1].get("dropped") == 3
    finally:
        host.close()
        v.stop()
        proxy.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_mutual_tls_against_mosquitto_requiring_client_certificates(certs):
    from cloud.broker import Mosquitto
    from cloud.client import CloudClient

    tls = {
        "cafile": str(certs / "ca.pem"),
        "certfile": str(certs / "server.pem"),
        "keyfile": str(certs / "server.key"),
        "require_certificate": True,
    }
    with Mosquitto(tls=tls) as broker:
        app = CloudClient(
            broker.url,
            tls={
                "cafile": str(certs / "ca.pem"),
                "certfile": str(certs / "device.pem"),
                "keyfile": str(certs / "device.key"),
            },
        )
        with app:
            app.subscribe("tls/t")
            device = unique_device()
            good = cloud_config(
                broker.port,
                device,
                ssl_ca_cert=str(certs / "ca.pem"),
                ssl_cert=str(certs / "device.pem"),
                ssl_key=str(certs / "device.key"),
            )
            with VirtualCcm(good) as v:
                wait_until(lambda: v.ccm.mqtt.state == 2, what="a TLS connection")
                host, _ = attach_host(v)
                with host:
                    assert host.mqtt_pub("tls/t", "secret", qos=1, wait=True) is True
                app.wait_message("tls/t", lambda p: p == b"secret")
            no_cert = cloud_config(broker.port, unique_device(), ssl_ca_cert=str(certs / "ca.pem"))
            with VirtualCcm(no_cert) as v:
                wait_until(lambda: v.ccm.mqtt.last_error, what="a refused handshake")
                assert v.ccm.mqtt.state != 2


def test_a_module_just_powered_up_sets_its_clock_over_sntp_before_tls(certs):
    """An ESP32's RTC starts at 2000-01-01 and MicroPython checks certificate dates against it: the CCM
    says it waits for the time while SNTP is silent, sets the clock once it answers, then connects."""
    import time

    from netutil import SntpServer

    from cloud.broker import Mosquitto

    tls = {"cafile": str(certs / "ca.pem"), "certfile": str(certs / "server.pem"), "keyfile": str(certs / "server.key")}
    sntp = SntpServer()
    with Mosquitto(tls=tls) as broker:
        cfg = cloud_config(broker.port, unique_device(), ssl_ca_cert=str(certs / "ca.pem"))
        cfg["sntp"] = {"server": f"127.0.0.1:{sntp.port}"}
        v = VirtualCcm(cfg)
        v.board.rtc = 946684800  # 2000-01-01: just powered up
        with v:
            host, seen = attach_host(v)
            with host:
                info = wait_until(lambda: (i := host.call("Sys.GetInfo"))["faults"].get("clock") and i, 15, "no time")
                assert "time unknown: SNTP 127.0.0.1" in info["cloud"]["reason"] and v.ccm.mqtt.state != 2
                sntp.start()
                wait_until(lambda: v.ccm.mqtt.state == 2, 30, "TLS once the clock is set")
                assert abs(v.board.rtc - time.time()) < 5 and sntp.answered >= 1
                assert "clock" not in host.call("Sys.GetInfo")["faults"]
    sntp.stop()


def test_broker_user_and_password_are_used_and_a_refusal_is_explained():
    from cloud.broker import Mosquitto

    with Mosquitto(users={"lamp": "s3cret"}) as broker:
        with VirtualCcm(cloud_config(broker.port, unique_device(), user="lamp", **{"pass": "s3cret"})) as v:
            wait_until(lambda: v.ccm.mqtt.state == 2, what="an authenticated connection")
        with VirtualCcm(cloud_config(broker.port, unique_device(), user="lamp", **{"pass": "wrong"})) as v:
            err = wait_until(lambda: v.ccm.mqtt.last_error, what="the refusal")
            assert "not authorized" in err or "bad user name or password" in err
            with Host(v.path) as h:
                st = h.call("Sys.GetInfo")["cloud"]
                assert st["connected"] is False and "broker refused the connection" in st["reason"]


def test_other_clients_shadow_gets_do_not_send_the_host_the_delta_again(mosquitto, shadow_service, cloud):
    """Issue 13, item 4: every shadow get/accepted, whoever asked, used to send the host Shadow.Delta
    again. Only the answer to the CCM's own get (its clientToken) may; a dashboard watching must not."""
    import time

    device = unique_device()
    cloud.shadow_update(device, {"desired": {"on": True}})  # a delta that stands: this host never reports
    proxy = TcpProxy(mosquitto.port)  # the broker is out of reach until the host listens: a Shadow.Delta
    proxy.block()  # sent before the host opened the port would be flushed with the stale input
    v = VirtualCcm(cloud_config(proxy.port, device)).start()
    host, seen = attach_host(v)
    host.on("Shadow.Delta")(seen.deltas.append)
    host.start()
    proxy.allow()
    try:
        wait_until(lambda: seen.deltas, what="the delta from the CCM's own get")
        time.sleep(0.3)
        assert seen.deltas == [{"on": True}]
        for _ in range(3):
            assert cloud.shadow_get(device)["state"]["delta"] == {"on": True}
        time.sleep(0.5)  # what would have come has come: each get/accepted is one broker hop
        assert seen.deltas == [{"on": True}]
        assert host.call("Shadow.Get")["delta"] == {"on": True}
    finally:
        host.close()
        v.stop()
        proxy.close()


def test_tls_without_a_ca_is_refused_unless_asked_for_knowingly(certs):
    """TLS that checks nothing hands the device to whoever answers for the broker's address (issue 22,
    item 2): with a client certificate but no mqtt.ssl_ca_cert the CCM does not connect and says why;
    mqtt.ssl_insecure=true connects, as asked."""
    from cloud.broker import Mosquitto

    tls = {"cafile": str(certs / "ca.pem"), "certfile": str(certs / "server.pem"), "keyfile": str(certs / "server.key")}
    client = {"ssl_cert": str(certs / "device.pem"), "ssl_key": str(certs / "device.key")}
    with Mosquitto(tls=tls) as broker:
        with VirtualCcm(cloud_config(broker.port, unique_device(), **client)) as v:
            host, _ = attach_host(v)
            with host:
                info = wait_until(lambda: (i := host.call("Sys.GetInfo"))["faults"].get("cloud") and i, 15, "the fault")
                why = info["faults"]["cloud"]
                assert "would not check the broker's certificate" in why and "mqtt.ssl_ca_cert" in why, why
                assert info["cloud"]["connected"] is False and "mqtt.ssl_insecure" in info["cloud"]["reason"]
        insecure = cloud_config(broker.port, unique_device(), ssl_insecure=True, **client)
        with VirtualCcm(insecure) as v:
            wait_until(lambda: v.ccm.mqtt is not None and v.ccm.mqtt.state == 2, 20, "TLS, unverified, as asked")


def test_a_broker_whose_certificate_the_module_does_not_trust_gets_no_connection(certs, tmp_path):
    """A man in the middle with a certificate of his own (issue 22, item 2): the broker answers with a
    certificate from another CA than mqtt.ssl_ca_cert; the CCM does not connect and says why, again and
    again, and never sends it a byte of MQTT (nor its client certificate's key, which never leaves it)."""
    from cloud.broker import Mosquitto

    (tmp_path / "attacker").mkdir()
    other = make_pki(tmp_path / "attacker")  # the attacker's CA, server certificate for 127.0.0.1 and all
    tls = {"cafile": str(other / "ca.pem"), "certfile": str(other / "server.pem"), "keyfile": str(other / "server.key")}
    trusted = {"ssl_ca_cert": str(certs / "ca.pem")}  # the module trusts its vendor's CA only
    with Mosquitto(tls=tls) as broker:
        with VirtualCcm(cloud_config(broker.port, unique_device(), **trusted)) as v:
            host, _ = attach_host(v)
            with host:
                why = wait_until(lambda: host.call("Sys.GetInfo")["cloud"].get("reason"), 20, "the reason")
                assert "certificate" in why.lower() or "verify" in why.lower(), why
                time.sleep(1.5)  # a retry or two later: still not connected
                assert host.call("Sys.GetInfo")["cloud"]["connected"] is False
                assert v.ccm.mqtt is None or v.ccm.mqtt.state != 2


def test_a_ca_put_in_the_image_by_ccm_build_checks_the_broker(certs, tmp_path):
    """`ccm build --ca FILE` (issue 22, item 2) puts ca.pem on the module's filesystem and names it
    relative (mqtt.ssl_ca_cert=ca.pem): the CCM finds it there and connects over TLS, the broker checked."""
    import json
    import shutil
    import subprocess
    import sys

    from cloud.broker import Mosquitto
    from pc.fwimage import read_littlefs

    out = subprocess.run(
        [sys.executable, "-m", "bundle.cli", "build", "-o", str(tmp_path / "fs.bin"), "--ca", str(certs / "ca.pem")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    files = read_littlefs((tmp_path / "fs.bin").read_bytes())
    conf = json.loads(files["conf0.json"])
    assert conf["mqtt"]["ssl_ca_cert"] == conf["ota"]["ssl_ca_cert"] == "ca.pem"
    assert files["ca.pem"] == (certs / "ca.pem").read_bytes()
    bad = subprocess.run(
        [sys.executable, "-m", "bundle.cli", "build", "-o", str(tmp_path / "x.bin"), "--ca", str(certs / "ca.key")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode != 0 and "not a PEM certificate file" in bad.stderr
    fs = tmp_path / "module-fs"
    fs.mkdir()
    shutil.copyfile(certs / "ca.pem", fs / "ca.pem")  # where ccm build put it
    tls = {"cafile": str(certs / "ca.pem"), "certfile": str(certs / "server.pem"), "keyfile": str(certs / "server.key")}
    with Mosquitto(tls=tls) as broker:
        cfg = cloud_config(broker.port, unique_device(), ssl_ca_cert="ca.pem")
        with VirtualCcm(cfg, fs_dir=str(fs)) as v:
            wait_until(lambda: v.ccm.mqtt is not None and v.ccm.mqtt.state == 2, 20, "TLS with the image's CA")
