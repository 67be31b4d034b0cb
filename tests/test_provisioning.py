"""Provisioning, configuration and the network /rpc endpoint against the virtual CCM, through the UART,
plain HTTP (curl, urllib) and WebSocket clients."""

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets.sync.client as wsclient
from conftest import wait_until
from websockets.exceptions import InvalidStatus

from bundle.transport import ws_connect
from ccm import rpc
from host_lib import Host, RpcError
from sim.ccm import VirtualCcm

WIFI = {"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}}


@pytest.fixture
def ccm(tmp_path):
    with VirtualCcm({"device": {"id": "ccm-prov"}}, fs_dir=str(tmp_path)) as v:
        yield v


@pytest.fixture
def host(ccm):
    with Host(ccm.path) as h:
        yield h


def curl(*args):
    p = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


def wifi_state(host):
    return host.call("Sys.GetInfo")["wifi"]


def test_provisioning_over_the_uart_as_in_the_manual(ccm, host):
    inits = []
    host.on("Sys.Init")(inits.append)
    assert wifi_state(host)["state"] == "ap"
    # the manual's frames (§10), with its "ssid" typo fixed: the typo itself is refused by name
    with pytest.raises(RpcError) as e:
        host.call("Config.Set", {"config": {"wifi": {"ssid": {"enable": True, "ssid": "NAME", "pass": "PASS"}}}})
    assert e.value.code == rpc.INVALID_PARAMS and "wifi.ssid" in e.value.message
    assert host.call("Config.Set", {"config": WIFI}) is True
    assert host.call("Config.Save", {"reboot": True}) is True
    wait_until(lambda: inits, what="Sys.Init after the reboot")
    assert ccm.board.boots == 2
    st = wait_until(lambda: (s := wifi_state(host))["state"] == "connected" and s, what="joined")
    assert (st["ssid"], st["ip"]) == ("HomeNet", "192.168.1.100")
    assert ccm.board.ap is None  # the provisioning AP closes once joined
    saved = json.loads((ccm.board.fs_dir + "/conf.json") and open(ccm.board.fs_dir + "/conf.json").read())
    assert saved["wifi"]["sta"] == WIFI["wifi"]["sta"]


def test_unsaved_settings_do_not_survive_a_reboot(ccm, host):
    host.call("Config.Set", {"config": {"device": {"id": "temporary"}}})
    assert host.call("Config.Get", {"key": "device.id"}) == "temporary"
    host.call("Sys.Reboot", {"delay_ms": 0})
    wait_until(lambda: ccm.board.boots == 2)
    time.sleep(0.1)
    assert host.call("Config.Get", {"key": "device.id"}) == "ccm-prov"


def test_access_point_provisioning_with_the_manuals_curl_command(ccm):
    assert ccm.board.ap == ("CCM-" + "".join(ccm.board.mac.split(":"))[-6:], "192.168.4.1")
    url = ccm.http_url  # 192.168.4.1/rpc on the module; loopback on the virtual board
    code, body = curl("-d", '{"config": {"wifi":{"sta":{"enable":true,"ssid":"HomeNet","pass":"secret123"}}}}', url)
    assert code == 200 and json.loads(body)["result"] is True
    wait_until(lambda: ccm.ccm.provisioner.state == "connected", what="the station to join")
    assert ccm.board.joined == "HomeNet" and ccm.board.ap is None


def test_unprovisioned_ap_serves_only_wifi_settings_and_four_methods(ccm):
    url = ccm.http_url
    code, body = curl("-d", '{"config":{"mqtt":{"server":"evil:1883"}}}', url + "/Config.Set")
    assert code == 403 and "conf_acl" in json.loads(body)["error"]["message"]
    code, body = curl("-X", "POST", url + "/Config.Get")
    assert code == 403 and "unprovisioned" in json.loads(body)["error"]["message"]
    code, body = curl("-X", "POST", url + "/Wifi.Scan")
    assert code == 200 and {n["ssid"] for n in json.loads(body)} == {"HomeNet", "Office", "CoffeeShop"}
    code, body = curl("-X", "POST", url + "/Sys.GetInfo")
    assert code == 200 and json.loads(body)["wifi"]["state"] == "ap"


def test_wrong_wifi_password_is_reported_and_a_new_one_is_tried(ccm, host):
    host.call("Config.Set", {"config": {"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "not-it-123"}}}})
    st = wait_until(lambda: (s := wifi_state(host)).get("reason") and s, what="the join failure")
    assert st["state"] == "connecting" and "wrong password" in st["reason"]
    host.call("Config.Set", {"config": WIFI})
    wait_until(lambda: wifi_state(host)["state"] == "connected", what="joined with the right password")


def test_passwords_the_radio_would_refuse_are_refused_at_config_set(ccm, host):
    for key, value in (("ap", "short"), ("sta", "x" * 64)):
        with pytest.raises(RpcError) as e:
            host.call("Config.Set", {"config": {"wifi": {key: {"pass": value}}}})
        assert e.value.code == rpc.INVALID_PARAMS and "8 to 63 characters" in e.value.message
    with pytest.raises(RpcError) as e:
        host.call("Config.Set", {"config": {"mqtt": {"server": "broker.local:18S3"}}})
    assert "port a number" in e.value.message


def test_a_short_factory_ap_password_is_reported_and_the_link_serves_on(tmp_path):
    """The vendor's build set an AP password the radio refuses: provisioning says so and waits; the
    host can still mend it (before, the OSError ended WiFi, LED and button until a reboot)."""
    with VirtualCcm({"device": {"id": "ccm-ap"}, "wifi": {"ap": {"pass": "1234"}}}, fs_dir=str(tmp_path)) as v:
        with Host(v.path) as h:
            st = wait_until(lambda: (s := wifi_state(h)).get("reason") and s, what="the AP failure")
            assert "Wifi Invalid Password" in st["reason"] and v.board.ap is None
            h.call("Config.Set", {"config": {"wifi": {"ap": {"pass": "long-enough"}}}})
            wait_until(lambda: v.board.ap is not None, what="the AP with a valid password")
            assert "reason" not in wifi_state(h)


def test_a_flaky_radio_is_retried_until_it_joins(ccm, host):
    ccm.board.wlan_faults = ["Wifi Internal Error", "sta is connecting, cannot set config"]
    host.call("Config.Set", {"config": WIFI})
    wait_until(lambda: wifi_state(host)["state"] == "connected", timeout=20, what="joined after the radio's errors")
    assert ccm.board.wlan_faults == [] and "wifi" not in host.call("Sys.GetInfo")["faults"]


def test_conf_acl_locks_what_the_vendor_locked(tmp_path):
    with VirtualCcm({"device": {"id": "ccm-acl"}, "conf_acl": "wifi.*,device.name*"}, fs_dir=str(tmp_path)) as v:
        with Host(v.path) as h:
            assert h.call("Config.Set", {"config": WIFI}) is True
            for patch, key in (({"mqtt": {"server": "x:1"}}, "mqtt.server"), ({"conf_acl": "*"}, "conf_acl")):
                with pytest.raises(RpcError) as e:
                    h.call("Config.Set", {"config": patch})
                assert e.value.code == rpc.FORBIDDEN and key in e.value.message
            assert h.call("Config.Get", {"key": "mqtt.server"}) == ""


def test_secrets_are_redacted_and_a_redacted_value_sent_back_changes_nothing(ccm, host):
    host.call("Config.Set", {"config": {"mqtt": {"pass": "p1"}, "rpc": {"auth": {"password": ""}}, **WIFI}})
    cfg = host.call("Config.Get")
    assert cfg["wifi"]["sta"]["pass"] == "***" and cfg["mqtt"]["pass"] == "***" and cfg["rpc"]["auth"]["password"] == ""
    assert "secret123" not in json.dumps(cfg) and "p1" not in json.dumps(cfg)
    host.call("Config.Set", {"config": {"wifi": cfg["wifi"]}})  # what Get returned, sent back
    assert ccm.config.get("wifi.sta.pass") == "secret123"


def test_config_set_is_type_checked_against_the_defaults(host):
    cases = [
        ({"wifi": {"sta": {"enable": "yes"}}}, "wifi.sta.enable must be a boolean"),
        ({"mqtt": {"keep_alive": "60"}}, "mqtt.keep_alive must be a number"),
        ({"mqtt": {"nope": 1}}, "unknown key mqtt.nope"),
        ({"wifi": 5}, "wifi must be an object"),
    ]
    for patch, message in cases:
        with pytest.raises(RpcError) as e:
            host.call("Config.Set", {"config": patch})
        assert e.value.code == rpc.INVALID_PARAMS and message in e.value.message
    with pytest.raises(RpcError) as e:
        host.call("Config.Get", {"key": "no.such"})
    assert e.value.code == rpc.INVALID_PARAMS


def test_factory_reset_by_holding_the_button(tmp_path):
    factory = {"device": {"id": "ccm-btn"}, "provision": {"btn": {"pin": 0, "hold_ms": 300}}}
    with VirtualCcm(factory, fs_dir=str(tmp_path)) as v:
        with Host(v.path) as h:
            h.call("Config.Set", {"config": {**WIFI, "mqtt": {"server": "kept:1883"}}, "save": True})
            wait_until(lambda: v.ccm.provisioner.state == "connected")
            v.board.pins[0] = 0  # a short press does nothing
            time.sleep(0.1)
            v.board.pins[0] = 1
            time.sleep(0.2)
            assert v.board.boots == 1
            v.board.pins[0] = 0  # held past hold_ms
            wait_until(lambda: v.board.boots == 2, what="the factory-reset reboot")
            v.board.pins[0] = 1
            wait_until(lambda: v.ccm.provisioner and v.ccm.provisioner.state == "ap", what="AP mode")
            assert h.call("Config.Get", {"key": "wifi.sta"}) == {"enable": False, "ssid": "", "pass": ""}
            assert h.call("Config.Get", {"key": "mqtt.server"}) == "kept:1883"  # vendor settings stay


def test_an_active_high_button_with_pull_up_false_resets_when_held_high(tmp_path):
    """provision.btn.pull_up was ignored: an active-high button read as held the moment it booted."""
    factory = {"device": {"id": "ccm-btn"}, "provision": {"btn": {"pin": 4, "hold_ms": 200, "pull_up": False}}}
    with VirtualCcm(factory, fs_dir=str(tmp_path)) as v:
        time.sleep(0.5)
        assert v.board.boots == 1  # undriven, the pin reads low: not pressed
        v.board.pins[4] = 1
        wait_until(lambda: v.board.boots == 2, what="the factory-reset reboot")


def test_status_led_blinks_while_unprovisioned_and_is_solid_once_joined(tmp_path):
    with VirtualCcm({"provision": {"led": {"pin": 2}}}, fs_dir=str(tmp_path)) as v:
        wait_until(lambda: len({val for _, _, val in v.board.led}) == 2, what="blinking in AP mode")
        with Host(v.path) as h:
            h.call("Config.Set", {"config": WIFI})
        wait_until(lambda: v.ccm.provisioner.state == "connected")
        time.sleep(0.4)
        n = len(v.board.led)
        time.sleep(0.4)
        assert {val for _, _, val in v.board.led[n - 1 :]} == {1}  # on, and staying on


def provisioned(tmp_path, password=""):
    cfg = {"device": {"id": "ccm-net"}, **WIFI, "rpc": {"host_timeout_ms": 300}}
    if password:
        cfg["rpc"]["auth"] = {"password": password}
    v = VirtualCcm(cfg, fs_dir=str(tmp_path)).start()
    wait_until(lambda: v.ccm.provisioner.state == "connected")
    return v


def test_digest_auth_on_http(tmp_path):
    v = provisioned(tmp_path, "hunter2")
    try:
        url = v.http_url + "/Sys.GetInfo"
        code, body = curl("-X", "POST", url)
        assert code == 401 and "unauthorized" in body
        code, _ = curl("--digest", "-u", "admin:wrong", "-X", "POST", url)
        assert code == 401
        code, body = curl("--digest", "-u", "admin:hunter2", "-X", "POST", url)
        assert code == 200 and json.loads(body)["device_id"] == "ccm-net"
        mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, v.http_url, "admin", "hunter2")
        opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(mgr))
        frame = json.dumps({"id": 7, "method": "RPC.List"}).encode()
        reply = json.loads(opener.open(urllib.request.Request(v.http_url, data=frame)).read())
        assert reply["id"] == 7 and "Config.Set" in reply["result"]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(v.http_url, data=frame))
        assert e.value.code == 401 and e.value.headers["WWW-Authenticate"].startswith("Digest ")
    finally:
        v.stop()


def ws_url(v):
    return v.http_url.replace("http://", "ws://")


def auth(v):
    """curl's arguments for the CCM's /rpc password (the one it made at its first boot)."""
    return ("--digest", "-u", "admin:" + v.password)


def test_digest_auth_on_websocket(tmp_path):
    from bundle.transport import digest_header

    v = provisioned(tmp_path, "hunter2")
    try:
        with pytest.raises(InvalidStatus) as e:
            wsclient.connect(ws_url(v))
        assert e.value.response.status_code == 401
        challenge = e.value.response.headers.get_all("WWW-Authenticate")[0]
        bad = digest_header(challenge, "GET", "/rpc", "admin", "wrong")
        with pytest.raises(InvalidStatus) as e:
            wsclient.connect(ws_url(v), additional_headers={"Authorization": bad})
        assert e.value.response.status_code == 401
        good = digest_header(challenge, "GET", "/rpc", "admin", "hunter2")
        with wsclient.connect(ws_url(v), additional_headers={"Authorization": good}) as ws:
            ws.send(json.dumps({"id": 3, "src": "me", "method": "Sys.GetInfo", "tag": "t1"}))
            reply = json.loads(ws.recv(10))
            assert (reply["id"], reply["tag"], reply["dst"]) == (3, "t1", "me")
            assert reply["result"]["device_id"] == "ccm-net"
    finally:
        v.stop()


def test_malformed_http_bodies_and_websocket_frames_get_json_rpc_errors(tmp_path):
    v = provisioned(tmp_path)
    try:
        url = v.http_url
        code, body = curl(*auth(v), "-d", "{nope", url)
        assert code == 200 and json.loads(body)["error"]["code"] == rpc.PARSE_ERROR
        code, body = curl(*auth(v), "-d", "42", url)
        assert json.loads(body)["error"]["code"] == rpc.INVALID_REQUEST
        code, body = curl(*auth(v), "-d", "{nope", url + "/Config.Set")
        assert code == 400 and json.loads(body)["error"]["code"] == rpc.PARSE_ERROR
        code, body = curl(*auth(v), "-d", '{"id":1,"method":"RPC.List","params":"' + "x" * 10000 + '"}', url)
        assert code == 413 and "max_frame_size" in json.loads(body)["error"]["message"]
        code, body = curl(*auth(v), "-X", "POST", url + "/No.Such")  # forwarded to the host, who is not there
        assert code == 504 and json.loads(body)["error"]["code"] == rpc.HOST_TIMEOUT
        with ws_connect(v.rpc_url()) as ws:
            ws.send("garbage")
            assert json.loads(ws.recv(10))["error"]["code"] == rpc.PARSE_ERROR
            ws.send("[1,2]")
            assert json.loads(ws.recv(10))["error"]["code"] == rpc.INVALID_REQUEST
            ws.send(json.dumps({"id": 9, "method": "RPC.List", "tag": 5}))
            reply = json.loads(ws.recv(10))
            assert reply["id"] == 9 and reply["tag"] == 5 and "Wifi.Scan" in reply["result"]
            for hostile in ('{"id":1,"method":"Config.Get","tag":"\\ud800"}', '{"id":[[[1]]],"method":"X","n":NaN}'):
                ws.send(hostile)  # a lone surrogate that would be echoed back in `tag`, NaN
                assert json.loads(ws.recv(10))["error"]["code"] == rpc.PARSE_ERROR
        code, body = curl(*auth(v), "-d", '{"id":1,"method":"Config.Get","params":{"key":"\\udc00"}}', url)
        assert json.loads(body)["error"]["code"] == rpc.PARSE_ERROR
        code, body = curl(*auth(v), "-d", "[1e999]", url + "/Sys.Reboot")
        assert code == 400 and json.loads(body)["error"]["code"] == rpc.PARSE_ERROR
        code, _ = curl(*auth(v), "-X", "POST", url + "/Sys.GetInfo")
        assert code == 200  # the server lives on
    finally:
        v.stop()


def test_http_and_websocket_calls_reach_the_host(tmp_path):
    v = provisioned(tmp_path)
    try:
        with Host(v.path) as h:
            h.export("Sum", lambda p: p[0] + p[1])
            code, body = curl(*auth(v), "-d", "[2,3]", v.http_url + "/Sum")
            assert (code, json.loads(body)) == (200, 5)
            with ws_connect(v.rpc_url()) as ws:
                ws.send(json.dumps({"id": 1, "src": "dash", "method": "Sum", "params": [40, 2]}))
                assert json.loads(ws.recv(10))["result"] == 42
    finally:
        v.stop()


def test_a_websocket_message_there_is_no_heap_for_is_answered_under_its_id(tmp_path, monkeypatch):
    """On a module a 2 KiB OTA chunk may find no room in a fragmented heap: the reply says so under the
    request's id (read from the frame's first bytes), so the client's call fails at once and it can send
    smaller chunks, instead of waiting for an answer that never comes; the connection serves on."""
    import ccm.ws

    real = ccm.ws._read

    async def short_of_heap(reader, n):
        if n > 1000:
            raise MemoryError("memory allocation failed, allocating %d bytes" % n)
        return await real(reader, n)

    monkeypatch.setattr(ccm.ws, "_read", short_of_heap)
    v = provisioned(tmp_path)
    try:
        with ws_connect(v.rpc_url()) as ws:
            ws.send(json.dumps({"id": 7, "method": "OTA.Write", "params": {"offset": 0, "data": "QUJD" * 500}}))
            reply = json.loads(ws.recv(10))
            assert reply["id"] == 7 and reply["error"]["code"] == rpc.INTERNAL_ERROR
            assert "out of memory" in reply["error"]["message"]
            ws.send(json.dumps({"id": "s8", "method": "Sys.GetInfo"}))
            assert json.loads(ws.recv(10))["id"] == "s8"
    finally:
        v.stop()


def _post(url, body, headers=None):
    """(status, headers, body) of one POST, errors included."""
    req = urllib.request.Request(url, body, headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_a_thousand_wrong_passwords_are_slowed_down_and_the_right_one_works_after(tmp_path):
    """Digest guessing (issue 22, item 1): after LOGIN_FREE wrong passwords a client waits, doubling up to
    8 s (429 with Retry-After, nothing checked meanwhile), so 1,000 guesses get a handful of answers; the
    owner's password works once the wait is over. A captured Authorization header is not accepted twice."""
    from bundle.transport import digest_header

    v = provisioned(tmp_path, "right-password")
    try:
        url = v.http_url
        body = json.dumps({"id": 1, "method": "Config.Set", "params": {"config": {"device": {"id": "x"}}}}).encode()
        status, headers, _ = _post(url, body)
        assert status == 401
        challenge = headers.get_all("WWW-Authenticate")[0]
        seen = {401: 0, 429: 0}
        for i in range(1000):
            wrong = digest_header(challenge, "POST", "/rpc", "admin", "guess-%d" % i)
            status, headers, reply = _post(url, body, {"Authorization": wrong})
            seen[status] += 1
        assert seen[401] <= 10 and seen[429] >= 990, seen  # checked a handful of times at most
        assert "too many wrong passwords" in json.loads(reply)["error"]["message"]
        wait = int(headers["Retry-After"])
        assert 1 <= wait <= 8
        assert v.config.get("device.id") == "ccm-net"  # nothing changed
        time.sleep(wait)
        status, headers, _ = _post(url, body)
        challenge = headers.get_all("WWW-Authenticate")[0]
        right = digest_header(challenge, "POST", "/rpc", "admin", "right-password")
        status, _, reply = _post(url, body, {"Authorization": right})
        assert status == 200 and json.loads(reply)["result"] is True
        assert v.config.get("device.id") == "x"
        status, _, _ = _post(url, body, {"Authorization": right})  # the same header again: a replay
        assert status == 401
    finally:
        v.stop()


def test_an_open_rpc_is_a_choice_and_says_so(tmp_path):
    """rpc.auth.open=true: no password (the vendor's explicit choice), and Sys.GetInfo warns about it."""
    cfg = {"device": {"id": "ccm-open"}, **WIFI, "rpc": {"auth": {"open": True}}}
    v = VirtualCcm(cfg, fs_dir=str(tmp_path)).start()
    try:
        wait_until(lambda: v.ccm.provisioner.state == "connected")
        status, _, reply = _post(v.http_url, json.dumps({"id": 1, "method": "Sys.GetInfo"}).encode())
        assert status == 200
        assert "rpc.auth.open" in json.loads(reply)["result"]["warnings"][0]
        assert v.password == ""
    finally:
        v.stop()
