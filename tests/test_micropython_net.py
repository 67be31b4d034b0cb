"""The firmware's networking on real MicroPython (issue 11): the CCM runs on MicroPython's unix port —
the ESP32 port's interpreter, asyncio, socket and ssl code — with its heap capped at the 64-bit
equivalent of the ESP32's 96 KiB (sim/mpy_unix.py), its code in ROM as a frozen image or a romfs
partition holds it, a host on its pty UART, and real sockets to a real mosquitto."""

import json
import os
import signal
import urllib.error
import urllib.request

import pytest
import websockets.exceptions
import websockets.sync.client as wsclient
from conftest import cloud_config, unique_device, wait_until
from test_cloud import certs  # noqa: F401 - the test CA, server and device certificates

from bundle.transport import HttpRpc, ws_connect
from ccm.rpc import RpcError
from host_lib import Host
from sim.mpy_unix import UnixCcm


@pytest.fixture
def module():
    """UnixCcm(config) at the heap cap; the host on its UART, Cloud.Status notifications in `status`."""
    started = []

    def boot(config, **kw):
        ccm = UnixCcm(config, **kw).start()
        host = Host(ccm.path)
        host.status = []
        host.on("Cloud.Status")(host.status.append)
        host.export("Sum", lambda p: p[0] + p[1])
        host.start()
        started.append((ccm, host))
        return ccm, host

    yield boot
    for ccm, host in started:
        host.close()
        print("\n".join(ccm.output[-30:]))  # shown when the test failed
        ccm.stop()


def connected(host):
    """The cloud's state as the host sees it: asked, not waited for (a Cloud.Status sent while the host
    was still opening the port is not missed)."""
    return host.call("Sys.GetInfo")["cloud"]["connected"]


def test_mqtt_shadow_and_calls_from_the_cloud_at_the_heap_cap(mosquitto, cloud, module):
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device))
    wait_until(lambda: connected(host), 20, "MQTT up on MicroPython")
    cloud.subscribe(f"{device}/out")
    assert host.call("MQTT.Pub", {"topic": f"{device}/out", "message": "hello"}) is True
    assert cloud.wait_message(f"{device}/out")[2] == b"hello"
    assert cloud.call(device, "Sum", [2, 3]) == 5  # cloud → CCM → host → back
    info = cloud.call(device, "Sys.GetInfo")
    assert info["arch"] == "unix" and info["faults"] == {} and info["cloud"]["connected"] is True
    assert host.call("Shadow.Report", {"reported": {"on": True}}) is True
    assert ccm.running()


# what a stock image must not hold while it idles: their bytecode would sit in a plain ESP32's heap (issue 21)
ON_DEMAND = {
    "ccm.http": "the /rpc server's code, while no client is connected",
    "ccm.digest": "the Digest code, likewise",
    "ccm.ws": "the WebSocket session's code, likewise",
    "ccm.ota.receiver": "the OTA receiver, before an OTA call",
    "ccm.ota.states": "the receiver's states, with it",
    "ccm.ota.reboot": "what a reboot left to the receiver, once settled",
    "ccm.ota.selfupdate": "the self-update code, with none under way (ccm/boot.py)",
    "ccm.ota.bundle": "the bundle checker",
    "ccm.ota.zipread": "the zip reader",
    "ccm.ota.apply": "the host bundle's applier",
    "ccm.ota.stage": "the esp32 bundle's applier",
    "ccm.ota.fsarchive": "the fs archive",
    "ccm.ota.host": "the host flash's driver, with none to finish",
    "ccm.ota.stm32": "the host flasher",
    "ccm.ota.an3155": "the bootloader protocol",
    "ccm.ota.stm32_chips": "the chip table",
    "ccm.ota.fetch": "the HTTP(S) pull",
    "ccm.ota.p256": "the signature check",
    "ccm.tls": "TLS's setup: dropped once the context is made",
    "ccm.sntp": "SNTP, with the clock set",
    "ccm.boot": "main.py's first step, done",
    "ccm.ble": "RPC over BLE, with ble.enable off",
    "ccm.parts": "the boot's start of the optional parts, done",
    "ccm.schema": "the configuration's schema, with no change under way",
}


def test_what_loads_on_demand_is_not_held_while_the_module_idles(mosquitto, module):
    """A regression guard CI runs for the stock image's heap (issue 21; its figures need a 32-bit build,
    bench/memory.py): booted and connected, none of the code that loads on demand is in memory; /rpc's
    code comes for a request and goes after it; OTA.Status is answered without the OTA receiver, which
    comes at the first call that needs it (OTA.Begin), and what an update brings along is not there before
    one."""
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device), sample_ms=50)
    wait_until(lambda: connected(host), 20, "MQTT up on MicroPython")

    def held():
        return set(host.call("Sys.GetInfo")["loaded"]) & set(ON_DEMAND)

    assert {"ccm.main", "ccm.mqtt", "ccm.rpc"} <= set(host.call("Sys.GetInfo")["loaded"])  # it does report
    assert held() == set(), {m: ON_DEMAND[m] for m in held()}
    assert HttpRpc(ccm.rpc_url("http")).call("Sum", [1, 2], 10) == 3  # /rpc with its Digest
    wait_until(lambda: not held(), 10, "the /rpc code dropped after the request")
    with ws_connect(ccm.rpc_url(), timeout=10) as ws:  # a WebSocket session holds ccm/ws.py alone
        ws.send(json.dumps({"id": 1, "method": "Sys.GetInfo"}))
        loaded = set(json.loads(ws.recv(timeout=10))["result"]["loaded"])
        assert "ccm.ws" in loaded and not loaded & {"ccm.http", "ccm.digest"}, loaded
    wait_until(lambda: "ccm.ws" not in host.call("Sys.GetInfo")["loaded"], 10, "ccm/ws.py dropped after it")
    assert host.call("OTA.Status")["state"] == 0
    assert held() == set()  # ota/state.json answered it
    assert host.call("OTA.Begin", {"size": 1000}) is True
    assert held() == {"ccm.ota.receiver", "ccm.ota.states"}  # loaded by the upload; nothing of its check yet
    assert host.call("OTA.Status")["stage"] == "receiving"


def test_after_a_self_update_over_websocket_nothing_of_it_is_held(module, tmp_path):
    """A stock image's heap after the update it rebooted into (bench/memory.py's step): the trial settled
    at boot, the receiver, the self-update and the host flasher are dropped again; OTA.Status says what
    is installed without loading the receiver."""
    from bundle.build import fs_bundle
    from bundle.ota_client import push
    from bundle.transport import WsRpc

    ccm, host = module({"device": {"id": unique_device()}, "rpc": {"http": {"enable": True}}}, sample_ms=50)
    wait_until(lambda: _http_up(f"http://127.0.0.1:{ccm.http_port}/rpc"), 20, "/rpc on MicroPython")
    fs_bundle(str(tmp_path / "fw.zip"), "9.9.9")
    link = WsRpc(ccm.rpc_url())
    try:
        st = push(link, (tmp_path / "fw.zip").read_bytes(), 2048, call_timeout=10, apply_timeout=60)
    finally:
        link.close()
    assert st["state"] in (0, 3), st
    wait_until(lambda: ccm.resets > 0, 30, "the reboot into the update")
    wait_until(lambda: _answers(host) and host.call("Sys.GetInfo")["fw_version"] == "9.9.9", 30, "9.9.9 runs")
    loaded = set(host.call("Sys.GetInfo")["loaded"])
    assert not loaded & {"ccm.ota.receiver", "ccm.ota.states", "ccm.ota.selfupdate", "ccm.ota.host"}, loaded
    st = host.call("OTA.Status")
    assert st["installed"] == {"esp32": "9.9.9"} and st["last"]["state"] == 3, st
    assert not set(host.call("Sys.GetInfo")["loaded"]) & {"ccm.ota.receiver", "ccm.ota.states"}


def _answers(host):
    try:
        return host.call("Sys.GetInfo", timeout=2) is not None
    except Exception:
        return False


def test_http_and_websocket_rpc_at_the_heap_cap(module):
    ccm, host = module({"device": {"id": unique_device()}, "rpc": {"http": {"enable": True}}})
    url = f"http://127.0.0.1:{ccm.http_port}/rpc"
    wait_until(lambda: _http_up(url), 20, "/rpc on MicroPython")
    assert HttpRpc(ccm.rpc_url("http")).call("Sum", [4, 5], 10) == 9  # with the module's own password
    with ws_connect(ccm.rpc_url(), timeout=10) as ws:
        for i in range(20):
            ws.send(json.dumps({"id": i, "method": "Sys.GetInfo"}))
            assert json.loads(ws.recv(timeout=10))["result"]["arch"] == "unix"
    assert host.call("Sys.GetInfo")["faults"] == {}


def test_rpc_takes_no_call_without_the_modules_password_on_micropython(module):
    """/rpc is closed by default (issue 22, item 1): Config.Set, OTA.Begin, OTA.Update, OTA.Status (answered
    without the receiver, from ota/state.json) and a batch without credentials get 401 and change or tell
    nothing; with the module's own password they work. A module whose image gave it none made one at its
    first boot and kept it: the host reads it over the UART (Sys.Credentials), nobody else."""
    ccm, host = module({"device": {"id": unique_device()}}, factory_password=False)  # it makes its own
    url = f"http://127.0.0.1:{ccm.http_port}/rpc"
    wait_until(lambda: _http_up(url), 20, "/rpc on MicroPython")
    taken = {"id": 1, "method": "Config.Set", "params": {"config": {"device": {"id": "taken"}}}}
    for body in (
        taken,
        {"id": 1, "method": "OTA.Begin", "params": {"size": 9}},
        {"id": 1, "method": "OTA.Update", "params": {"url": "http://127.0.0.1:9/x.zip"}},
        {"id": 1, "method": "OTA.Status"},
        [taken, {"id": 2, "method": "Config.Save"}],  # a batch (its collector loads for one)
    ):
        body = json.dumps(body).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, body), timeout=10)
        assert e.value.code == 401 and "Digest" in e.value.headers["WWW-Authenticate"]
    with pytest.raises(websockets.exceptions.InvalidStatus):
        wsclient.connect(url.replace("http", "ws"), open_timeout=10)
    assert host.call("Config.Get", {"key": "device.id"}) != "taken"
    assert host.call("OTA.Status")["state"] == 0
    creds = host.call("Sys.Credentials")  # the host, on the UART: physical access
    assert creds["user"] == "admin" and len(creds["password"]) == 16 and creds["open"] is False
    assert any(creds["password"] in line for line in ccm.output)  # and on the module's console
    rpc = HttpRpc(url, "admin", creds["password"])
    with pytest.raises(RpcError) as e:  # nobody but the host
        rpc.call("Sys.Credentials", None, 10)
    assert e.value.code == -32003
    assert rpc.call("Config.Set", {"config": {"device": {"id": "renamed"}}}, 10) is True
    assert host.call("Config.Get", {"key": "device.id"}) == "renamed"


def _http_up(url):
    try:
        urllib.request.urlopen(url.replace("/rpc", "/rpc/RPC.List"), timeout=2).read()
        return True
    except urllib.error.HTTPError:  # an answer: 401 without credentials
        return True
    except OSError:
        return False


def test_keepalive_drops_a_broker_that_goes_silent(mosquitto, module):
    """SIGSTOP: the broker's socket stays open but nothing answers. MicroPython's streams gave no error
    here, so the CCM stayed "connected" for ever; the keepalive must notice (issue 11, item 3)."""
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device, keep_alive=2))
    wait_until(lambda: connected(host), 20, "MQTT up")
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not connected(host), 30, "the silent broker noticed")
        assert host.call("Sys.GetInfo")["cloud"]["connected"] is False
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    wait_until(lambda: connected(host), 30, "back on the broker")


def test_no_socket_leaks_across_20_outages(mosquitto, module):
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device))
    wait_until(lambda: connected(host), 20, "MQTT up")
    base = ccm.sockets()
    counts = []
    for _ in range(20):
        mosquitto.stop()
        wait_until(lambda: not connected(host), 20, "the outage noticed")
        mosquitto.start()
        wait_until(lambda: connected(host), 20, "reconnected")
        counts.append(ccm.sockets())
    assert counts == [base] * 20, counts
    assert ccm.running()


def test_a_broken_tls_path_keeps_the_link_and_says_why(mosquitto, module):
    ccm, host = module(cloud_config(mosquitto.port, unique_device(), ssl_ca_cert="/no/such/ca.pem"))
    wait_until(lambda: "cloud" in host.call("Sys.GetInfo")["faults"], 20, "the cloud's fault")
    info = host.call("Sys.GetInfo")
    assert "ca.pem" in info["faults"]["cloud"] and info["cloud"]["connected"] is False
    assert host.call("Config.Get", {"key": "mqtt.ssl_ca_cert"}) == "/no/such/ca.pem"
    host.call("Config.Set", {"config": {"mqtt": {"ssl_ca_cert": ""}}, "save": True, "reboot": True})
    wait_until(lambda: connected(host), 30, "the cloud after the fix")


def test_mutual_tls_to_mosquitto_at_the_heap_cap(certs, module):  # noqa: F811 - the fixture
    """MQTT over TLS with a client certificate, the CA checked: the unix port's ssl is MicroPython's own
    (mbedTLS: its contexts are Python objects in the capped heap, its buffers come from the C heap, as
    on an ESP32 from ESP-IDF's). The setup's code goes once the context is made."""
    from cloud.broker import Mosquitto
    from cloud.client import CloudClient

    files = {"cafile": "ca.pem", "certfile": "server.pem", "keyfile": "server.key"}
    with Mosquitto(tls={k: str(certs / v) for k, v in files.items()} | {"require_certificate": True}) as broker:
        app_tls = {
            "cafile": str(certs / "ca.pem"),
            "certfile": str(certs / "device.pem"),
            "keyfile": str(certs / "device.key"),
        }
        with CloudClient(broker.url, tls=app_tls) as app:
            device = unique_device()
            cfg = cloud_config(
                broker.port,
                device,
                ssl_ca_cert=str(certs / "ca.pem"),
                ssl_cert=str(certs / "device.pem"),
                ssl_key=str(certs / "device.key"),
            )
            ccm, host = module(cfg, sample_ms=50)  # Sys.GetInfo says what is loaded
            wait_until(lambda: connected(host), 30, "MQTT over TLS on MicroPython")
            assert app.call(device, "Sum", [20, 22]) == 42
            assert "ccm.tls" not in host.call("Sys.GetInfo")["loaded"]


def test_a_clean_reboot_says_offline_then_online_at_the_heap_cap(mosquitto, cloud, module):
    """Sys.Reboot ends the MQTT session with a clean DISCONNECT, which makes the broker drop the last
    will: the CCM publishes it itself first, so the dashboard's presence sees the reboot."""
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device))
    wait_until(lambda: connected(host), 20, "MQTT up on MicroPython")
    cloud.subscribe(f"{device}/status")
    cloud.wait_message(f"{device}/status", lambda p: p == b"online")
    mark = cloud.mark()
    host.call("Sys.Reboot", {"delay_ms": 0})
    i, _, _ = cloud.wait_message(f"{device}/status", lambda p: p == b"offline", timeout=20, after=mark)
    cloud.wait_message(f"{device}/status", lambda p: p == b"online", timeout=30, after=i)
    wait_until(lambda: connected(host), 20, "MQTT up again")
    assert ccm.running()


def test_a_ca_bundle_loads_whole_at_the_heap_cap(certs, tmp_path, module):  # noqa: F811 - the fixture
    """mqtt.ssl_ca_cert may hold a chain or a bundle: here three CA certificates, the broker's own last.
    Only the first one was loaded before, so the broker could not be verified."""
    from netutil import make_ca

    from cloud.broker import Mosquitto

    for name in ("other1", "other2"):
        make_ca(tmp_path, name, f"ccm {name} CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(
        "".join((p).read_text() for p in (tmp_path / "other1.pem", tmp_path / "other2.pem", certs / "ca.pem"))
    )
    assert bundle.read_text().count("BEGIN CERTIFICATE") == 3
    files = {"cafile": "ca.pem", "certfile": "server.pem", "keyfile": "server.key"}
    with Mosquitto(tls={k: str(certs / v) for k, v in files.items()}) as broker:
        ccm, host = module(cloud_config(broker.port, unique_device(), ssl_ca_cert=str(bundle)))
        wait_until(lambda: connected(host), 30, "MQTT over TLS, the CA third in the bundle")


def test_a_module_just_powered_up_sets_its_clock_over_sntp_before_tls_at_the_heap_cap(certs, module):  # noqa: F811
    """SNTP before TLS on MicroPython: the clock reads 2000-01-01 (as an ESP32's after power-up), so the CCM
    says it waits for the time while SNTP is silent, sets it over MicroPython's UDP socket once the server
    answers, then connects over TLS; SNTP's code goes once the clock is set."""
    from netutil import SntpServer

    from cloud.broker import Mosquitto

    files = {"cafile": "ca.pem", "certfile": "server.pem", "keyfile": "server.key"}
    sntp = SntpServer()
    try:
        with Mosquitto(tls={k: str(certs / v) for k, v in files.items()}) as broker:
            cfg = cloud_config(broker.port, unique_device(), ssl_ca_cert=str(certs / "ca.pem"))
            cfg["sntp"] = {"server": f"127.0.0.1:{sntp.port}"}
            ccm, host = module(cfg, rtc=946684800, sample_ms=50)  # Sys.GetInfo says what is loaded
            info = wait_until(lambda: (i := host.call("Sys.GetInfo"))["faults"].get("clock") and i, 20, "no time")
            assert "time unknown: SNTP 127.0.0.1" in info["faults"]["clock"] and not info["cloud"]["connected"]
            sntp.start()
            wait_until(lambda: connected(host), 40, "TLS once the clock is set")
            assert sntp.answered >= 1 and any("clock set to" in line for line in ccm.output)
            info = host.call("Sys.GetInfo")
            assert "clock" not in info["faults"] and "ccm.sntp" not in info["loaded"], info  # its code went
    finally:
        sntp.stop()


def test_a_keyboard_interrupt_does_not_stop_the_ccm_at_the_heap_cap(module):
    """A Ctrl-C reaching MicroPython raises KeyboardInterrupt, which is no Exception: it used to end the
    CCM (on a module: back to the REPL, the host link gone). It is recorded and the CCM boots again."""
    ccm, host = module({"device": {"id": unique_device()}})
    assert host.call("Sys.GetInfo")["device_id"]
    os.kill(ccm.proc.pid, signal.SIGINT)  # the unix port raises KeyboardInterrupt in the running code
    wait_until(lambda: any("KeyboardInterrupt" in line for line in ccm.output), 20, "the interrupt recorded")
    # the module resets (here: the process ends and is started again on the same pty), then answers
    wait_until(lambda: _answers(host), 20, "the link after the interrupt")
    assert ccm.running(), "\n".join(ccm.output[-20:])


def _answers(host):
    try:
        return bool(host.call("Sys.GetInfo")["device_id"])
    except Exception:
        return False


def test_digest_auth_holds_across_requests_while_the_server_code_is_reloaded(module):
    """The HTTP code is dropped between connections on MicroPython (ccm/listener.py): a nonce given in
    one connection's 401 must still be good in the next one, which loads the code again."""
    ccm, host = module({"device": {"id": unique_device()}, "rpc": {"auth": {"password": "s3cret"}}})
    url = f"http://127.0.0.1:{ccm.http_port}/rpc"
    wait_until(lambda: _http_up(url), 20, "/rpc on MicroPython")
    body = json.dumps({"id": 1, "method": "Sum", "params": [4, 5]}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(url, body), timeout=10)
    assert e.value.code == 401
    auth = urllib.request.HTTPDigestAuthHandler()
    auth.add_password("ccm", url, "admin", "s3cret")
    opener = urllib.request.build_opener(auth)
    for _ in range(3):  # each: a 401 with a nonce, then a new connection that answers it
        with opener.open(urllib.request.Request(url, body), timeout=10) as r:
            assert json.loads(r.read())["result"] == 9
    assert host.call("Sys.GetInfo")["faults"] == {}


def test_mqtt_keeps_sending_after_the_broker_stops_reading_for_a_while(mosquitto, module):
    """A broker that stops reading (TCP backpressure: drain() waits), then reads again. On MicroPython a
    read cancelled by its timeout took the socket's poll entry, and with it the writer waiting in
    drain(): nothing was sent again until the keepalive gave up (issue 26, item 2). Now what the CCM
    accepted while the broker stalled waits in the bounded queue and arrives once it reads again, and
    the session stays up. (The unix board's sockets have a module's few-KB send buffer.)"""
    from concurrent.futures import ThreadPoolExecutor

    import paho.mqtt.client as paho
    from netutil import TcpProxy

    from host_lib import RpcError

    device = unique_device()
    got = []
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bp-" + device)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(f"{device}/bulk", 1)
    sub.loop_start()
    proxy = TcpProxy(mosquitto.port, rcvbuf=4096)
    try:
        ccm, host = module(cloud_config(proxy.port, device, keep_alive=60))
        wait_until(lambda: connected(host), 20, "MQTT up")
        proxy.pause()

        def pub(i):
            try:
                return host.call("MQTT.Pub", {"topic": f"{device}/bulk", "message": "%04d" % i + "x" * 996}, 60)
            except RpcError as e:  # the queue is bounded: beyond it a publish is refused, and says why
                assert e.code == -32002 and "queue full" in e.message, e
                return False

        with ThreadPoolExecutor(24) as pool:
            results = [pool.submit(pub, i) for i in range(200)]
            queued = lambda: host.call("Sys.GetInfo")["cloud"]["queued"]  # noqa: E731
            wait_until(lambda: queued() >= 8, 30, "publishes waiting while the broker does not read")
            proxy.resume()
            sent = [i for i, r in enumerate(results) if r.result() is True]
        assert len(sent) >= 40  # through the socket before the stall, or queued during it
        sent += [i for i in range(200, 220) if pub(i) is True]  # and after it
        assert sent[-20:] == list(range(200, 220))
        wait_until(lambda: len(got) >= len(sent), 30, "every accepted message at the broker")
        assert sorted(int(p[:4]) for p in got) == sent
        assert connected(host) and host.call("Sys.GetInfo")["faults"] == {}
    finally:
        proxy.close()
        sub.loop_stop()
        sub.disconnect()


def test_a_reboot_lets_the_disconnect_and_the_reply_leave_first(mosquitto, module):
    """Sys.Reboot: its reply reaches the host and the MQTT session ends with the will and DISCONNECT
    before the reset — on a module machine.reset() cut them off, and the broker saw a dropped
    connection (issue 26, item 8). mosquitto's log says which: "disconnected" or "closed its connection"."""
    device = unique_device()
    ccm, host = module(cloud_config(mosquitto.port, device))
    wait_until(lambda: connected(host), 20, "MQTT up")
    log = mosquitto.dir / "mosquitto.log"
    assert host.call("Sys.Reboot", {"delay_ms": 0}) is True
    wait_until(lambda: f"Client {device} disconnected." in log.read_text(), 10, "a clean DISCONNECT")
    assert f"Client {device} closed its connection." not in log.read_text()
    wait_until(lambda: connected(host), 20, "MQTT up again after the reboot")


def test_the_uart_link_answers_while_a_compressed_update_is_checked_and_applied(tmp_path, module):
    """Hashing, inflating and unpacking a part ran without an await: the UART link, MQTT pings and /rpc
    stalled for the whole check and apply (issue 26, item 3). Now they run in slices (compat.paced), so
    the host's OTA.Status calls keep being answered while the stage is 'verifying' and 'applying'. The
    part is deflated: MicroPython's inflater reads the file itself, not a byte per Python call. Its files
    are unpacked by the boot that follows, before the link is up (ccm/ota/selfupdate.py). (How long the
    link goes unanswered at most is measured in bench/ota.py, not asserted here.)"""
    import threading

    import websockets.sync.client  # noqa: F401 - WsRpc's

    from bundle.ota_client import push
    from bundle.transport import WsRpc
    from ccm.ota import fsarchive
    from pc import fwbundle

    big = os.urandom(1024 * 1024).hex().encode()  # 2 MiB that deflates to about half
    part = fwbundle.Part("fs", {"type": "fs", "src": "fs.bin"}, fsarchive.pack({"big.txt": big}))
    fwbundle.create(str(tmp_path / "fw.zip"), "ccm", "esp32", [], "7.0", compress=True, parts=[part])
    ccm, host = module({"device": {"id": unique_device()}})
    seen = []
    done = threading.Event()

    def ping():
        while not done.is_set():
            try:
                seen.append(host.call("OTA.Status", None, 10).get("stage"))
            except Exception:  # the reboot into the update at the end
                return

    t = threading.Thread(target=ping)
    t.start()
    link = WsRpc(ccm.rpc_url())
    try:
        st = push(link, (tmp_path / "fw.zip").read_bytes(), 2048, call_timeout=30, apply_timeout=120)
    finally:
        done.set()
        link.close()
        t.join(15)
    assert st["state"] in (0, 3), st
    during = seen.count("verifying") + seen.count("applying")  # a frozen loop answers none meanwhile
    assert during >= 4, {s: seen.count(s) for s in set(seen)}
    wait_until(lambda: ccm.resets > 0, 30, "the reboot into the update")  # unpacked at that boot, then swapped in
    wait_until(lambda: (ccm.dir / "big.txt").exists() and _answers(host), 60, "the update's file in place")
    assert (ccm.dir / "big.txt").read_bytes() == big
    assert not (ccm.dir / "ota" / "self.zip").exists() and not (ccm.dir / "ota" / "fs.new").exists()


def test_names_are_resolved_without_stopping_the_link(mosquitto, module):
    """getaddrinfo() holds the whole event loop while the DNS server thinks; at 115200 baud the UART's
    2 KiB RX buffer is full in 180 ms (issue 26, item 7). The CCM resolves through its DNS server over
    non-blocking UDP (ccm/dns.py): the host's calls are answered while the answer is held back, then
    MQTT connects to the name."""
    from netutil import DnsServer

    dns = DnsServer({"broker.test": "127.0.0.1"}, delay=1.5)
    try:
        device = unique_device()
        cfg = cloud_config(mosquitto.port, device)
        cfg["mqtt"]["server"] = f"broker.test:{mosquitto.port}"
        ccm, host = module(cfg, dns=dns.address)
        wait_until(lambda: dns.queries, 20, "the CCM's DNS query")
        answered = []

        def up():  # every call here is answered while the DNS answer is held back
            answered.append(1)
            return connected(host)

        wait_until(up, 30, "MQTT up through the resolved name")
        assert len(answered) >= 5 and dns.queries >= 1
        assert host.call("Sys.GetInfo")["faults"] == {}
        ccm2, host2 = module(dict(cfg, mqtt=dict(cfg["mqtt"], server="nowhere.test:1883")), dns=dns.address)
        why = wait_until(lambda: host2.call("Sys.GetInfo")["cloud"].get("reason"), 20, "the reason")
        assert "cannot resolve nowhere.test" in why or "name not found" in why, why
    finally:
        dns.stop()


def test_a_hundred_slow_clients_do_not_stop_the_link_or_the_server(module):
    """Clients that connect and send nothing (slowloris): on a module each accepted connection costs
    heap, and none was ever closed (issue 22, item 6). At most a few are served at once — the rest are
    closed at once — and a request that does not come within rpc.http.timeout_ms is closed; meanwhile the
    UART link answers, and afterwards /rpc serves again."""
    import socket

    ccm, host = module({"device": {"id": unique_device()}, "rpc": {"http": {"timeout_ms": 1000}}})
    url = f"http://127.0.0.1:{ccm.http_port}/rpc"
    wait_until(lambda: _http_up(url), 20, "/rpc on MicroPython")
    slow = []
    try:
        for _ in range(100):
            slow.append(socket.create_connection(("127.0.0.1", ccm.http_port), timeout=10))
        for _ in range(20):
            assert host.call("Sys.GetInfo")["faults"] == {}
        for s in slow:  # every one is closed by the CCM: at once beyond the cap, else at the timeout
            s.settimeout(15)
            assert s.recv(1) == b""
    finally:
        for s in slow:
            s.close()
    assert HttpRpc(ccm.rpc_url("http")).call("Sum", [4, 5], 10) == 9
    # a WebSocket may idle between messages, but a frame that starts and stalls is closed (1008)
    with ws_connect(ccm.rpc_url(), timeout=10) as ws:
        ws.send(json.dumps({"id": 2, "method": "Sys.GetInfo"}))
        assert "result" in json.loads(ws.recv(timeout=10))
        ws.socket.sendall(bytes([0x81, 0x80 | 100]) + b"\0\0\0\0" + b"{")  # 100 bytes promised, 1 sent
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert host.call("Sys.GetInfo")["faults"] == {}


def test_a_host_flash_with_no_room_beside_the_firmware_is_done_by_a_boot_of_its_own(mosquitto, tmp_path):
    """A product's module on MicroPython with .mpy files at the heap cap, connected to the cloud, its UART
    and BOOT0/NRST wired to a virtual STM32: a signed ccm_host bundle pushed over WebSocket finds no room
    for the checker or the flasher beside the running firmware, so the firmware reboots for them and
    does that work first thing at a boot of its own; `ccm ota`'s client follows it to the host's v2."""
    from bundle.ota_client import push
    from bundle.transport import WsRpc
    from pc import fwbundle
    from sim.stm32 import VirtualStm32, make_app_image, read_marker

    key = str(tmp_path / "signing.pem")
    pub = fwbundle.new_signing_key(key)
    part = fwbundle.Part(
        "host_fw", {"type": "STM32", "src": "FIRMWARE.BIN", "addr": 0x08000000}, make_app_image("2.0", 32768, seed=2)
    )
    manifest = fwbundle.manifest_for("fw", "ccm_host", [part], "2.0", "test")
    bundle = fwbundle.build_bundle(manifest, [part], sign_keys=[fwbundle.load_signing_key(key)])
    mcu = VirtualStm32("f103").start()
    v1 = make_app_image("1.0", 32768, seed=1)
    mcu.core.flash[: len(v1)] = v1
    mcu.reset(boot0=False)
    wires = {14: mcu.set_boot0, 27: lambda level: mcu.set_reset(not level)}  # NRST is active low
    cfg = cloud_config(mosquitto.port, unique_device())
    cfg |= {"rpc": {"http": {"enable": True}}, "ota": {"pubkey": pub, "require_signature": True}}
    ccm = UnixCcm(cfg, rom=False, uart=mcu.path, pins=lambda pin, level: wires[pin](level)).start()
    link = None
    try:
        wait_until(lambda: _http_up(f"http://127.0.0.1:{ccm.http_port}/rpc"), 20, "/rpc on MicroPython")
        link = WsRpc(ccm.rpc_url())
        st = push(link, bundle, 2048, call_timeout=10, apply_timeout=120)
        assert st["message"] == "host updated: it runs 2.0", st
        assert read_marker(bytes(mcu.core.flash))["version"] == "2.0"
        assert ccm.resets >= 2  # a boot of its own for the work, then a normal one
    finally:
        if link is not None:
            link.close()
        ccm.stop()
        mcu.stop()
