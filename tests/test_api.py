"""The REST API of `ccm cloud` over real HTTP (uvicorn), against virtual CCMs on real mosquitto."""

import base64
import json
import urllib.error
import urllib.request
import zipfile
from types import SimpleNamespace

import pytest
from conftest import cloud_config, unique_device, wait_until

from host_lib import Host
from pc import fwbundle
from sim.ccm import VirtualCcm

TOKEN = "test-token-0123456789"


class Http:
    def __init__(self, url, token=TOKEN):
        self.url = url
        self.token = token

    def __call__(self, method, path, body=None, raw=None, headers=None, token=...):
        token = self.token if token is ... else token
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, (
                    json.loads(text) if text and r.headers.get_content_type() == "application/json" else text
                )
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text


def multipart(name, data):
    boundary = "ccm-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture
def dash(mosquitto, shadow_service, tmp_path):
    from cloud.api import Dashboard

    with Dashboard(mosquitto.url, shadow_service, str(tmp_path / "bundles"), token=TOKEN) as d:
        yield SimpleNamespace(d=d, http=Http(d.url), broker=mosquitto)


@pytest.fixture
def device(dash):
    """A virtual CCM with a host program: Sum, and Shadow.Delta reported back."""
    dev = unique_device()
    v = VirtualCcm(cloud_config(dash.broker.port, dev)).start()
    host = Host(v.path, fw_version="1.7", app="api-test")
    host.export("Sum", lambda p: p[0] + p[1])

    def fail(p):
        from host_lib import RpcError

        raise RpcError(-32099, "the lamp is broken", {"why": "test"})

    host.export("Fail", fail)
    host.on("Shadow.Delta")(lambda state: host.shadow_report(state))
    host.start()
    wait_until(lambda: any(d["id"] == dev and d["online"] for d in dash.d.fleet.devices()), what="presence online")
    yield SimpleNamespace(id=dev, v=v, host=host)
    host.close()
    v.stop()


def host_bundle(tmp_path, version="2.0"):
    (tmp_path / "FW.BIN").write_bytes(bytes(range(256)) * 16)
    out = tmp_path / f"fw-{version}.zip"
    fwbundle.create(
        str(out), "fw", "ccm_host", ["host_fw:type=STM32,src=FW.BIN,addr=0x8000000"], version, src_dir=str(tmp_path)
    )
    return out


# -- access ------------------------------------------------------------------------------------


def test_every_api_route_refuses_a_missing_or_wrong_token(dash):
    status, spec = dash.http("GET", "/api/openapi.json", token=None)  # the description itself is public
    assert status == 200 and spec["openapi"].startswith("3.")
    routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p not in ("/api/login", "/api/logout")]
    assert len(routes) >= 14
    for method, path in routes:
        path = path.replace("{device_id}", "x").replace("{method}", "Sum").replace("{name}", "b.zip")
        path = path.replace("{rollout_id}", "1")
        for token in (None, "wrong-token-9876543210"):
            status, body = dash.http(method, path, body={} if method in ("POST", "PATCH") else None, token=token)
            assert status == 401, (method, path, token, status)
            assert "token" in body["detail"]


def test_basic_auth_cookie_login_and_the_printed_link(dash):
    basic = base64.b64encode(f"any:{TOKEN}".encode()).decode()
    assert dash.http("GET", "/api/devices", headers={"Authorization": f"Basic {basic}"}, token=None)[0] == 200
    assert dash.http("POST", "/api/login", {"token": "nope"}, token=None)[0] == 401
    # the link `ccm cloud` prints sets the cookie and drops the token from the address
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(dash.d.login_url) as r:
        assert r.url == dash.d.url + "/" and b"ccm cloud" in r.read()
    with opener.open(dash.d.url + "/api/devices") as r:
        assert r.status == 200
    with opener.open(urllib.request.Request(dash.d.url + "/api/logout", method="POST")):
        pass
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(dash.d.url + "/api/devices")
    assert e.value.code == 401


def test_dashboard_and_docs_assets_are_served_locally(dash):
    status, page = dash.http("GET", "/", token=None)
    assert (
        status == 200
        and b"/static/app.js" in page
        and b"http" not in page.split(b"<body>")[0].replace(b'name="viewport"', b"")
    )
    status, docs = dash.http("GET", "/api/docs", token=None)
    assert status == 200 and b"/static/swagger/swagger-ui-bundle.js" in docs and b"cdn" not in docs.lower()
    for asset in ("/static/app.js", "/static/app.css", "/static/swagger/swagger-ui-bundle.js"):
        assert dash.http("GET", asset, token=None)[0] == 200, asset


def test_a_non_loopback_address_never_runs_without_a_token(mosquitto, shadow_service, tmp_path):
    from cloud.api import Dashboard, create_app

    with pytest.raises(ValueError):
        create_app(None, shadow_service, None, token="")
    d = Dashboard(mosquitto.url, shadow_service, str(tmp_path / "b"), host="0.0.0.0", token=None)
    assert len(d.token) >= 16  # made up, never empty
    d.web.sock.close()


# -- devices, shadow, RPC, config ----------------------------------------------------------------


def test_devices_show_presence_versions_and_going_offline(dash, device):
    mine = wait_until(
        lambda: (
            (d := [x for x in dash.http("GET", "/api/devices")[1] if x["id"] == device.id][0])["host_version"] and d
        ),
        what="versions from Sys.GetInfo and Sys.Info",
    )
    assert mine["online"] and mine["fw_version"] and mine["host_version"] == "1.7" and mine["host_app"] == "api-test"
    status, one = dash.http("GET", f"/api/devices/{device.id}?refresh=true")
    assert status == 200 and one["info"]["device_id"] == device.id
    assert dash.http("GET", "/api/devices/no-such-device")[0] == 404
    device.v.stop()  # a clean stop: the CCM says offline before its DISCONNECT
    wait_until(lambda: not dash.http("GET", f"/api/devices/{device.id}")[1]["online"], what="offline")
    status, body = dash.http("POST", f"/api/devices/{device.id}/rpc/Sum", [1, 2])
    assert status == 503 and "offline" in body["detail"]


def test_shadow_get_patch_reaches_the_host_and_refuses_bad_input(dash, device):
    status, doc = dash.http("PATCH", f"/api/devices/{device.id}/shadow", {"desired": {"on": True, "level": 3}})
    assert status == 200 and doc["state"]["desired"] == {"on": True, "level": 3}
    got = wait_until(
        lambda: (
            (s := dash.http("GET", f"/api/devices/{device.id}/shadow")[1])["state"].get("reported", {}).get("level")
            == 3
            and s
        ),
        what="the host's report",
    )
    assert "delta" not in got["state"] and got["state"]["reported"]["on"] is True
    assert dash.http("PATCH", f"/api/devices/{device.id}/shadow", {"desired": {"on": False}, "version": 1})[0] == 409
    assert (
        dash.http(
            "PATCH", f"/api/devices/{device.id}/shadow", raw=b"{not json", headers={"Content-Type": "application/json"}
        )[0]
        == 400
    )
    status, body = dash.http("PATCH", f"/api/devices/{device.id}/shadow", {"desired": 5})
    assert status == 422 and body["detail"]
    assert dash.http("PATCH", "/api/devices/nobody/shadow", {"desired": {"on": True}})[0] == 404
    hist = dash.http("GET", f"/api/devices/{device.id}/history")[1]
    assert [v for _, v in hist["reported.level"]][-1] == 3


def test_rpc_passes_results_and_the_devices_errors_through(dash, device):
    assert dash.http("POST", f"/api/devices/{device.id}/rpc/Sum", [2, 3]) == (200, {"result": 5})
    status, body = dash.http("POST", f"/api/devices/{device.id}/rpc/Fail", {})
    assert status == 502 and body["error"] == {"code": -32099, "message": "the lamp is broken", "data": {"why": "test"}}
    status, body = dash.http("POST", f"/api/devices/{device.id}/rpc/No.Such")
    assert status == 502 and body["error"]["code"] == -32601
    assert (
        dash.http(
            "POST", f"/api/devices/{device.id}/rpc/Sum", raw=b"[2,", headers={"Content-Type": "application/json"}
        )[0]
        == 400
    )
    assert dash.http("POST", "/api/devices/nobody/rpc/Sum", [1, 1])[0] == 404
    # no Content-Type (curl -d '[2,3]' sends form-urlencoded; some clients send none): still the params
    for headers in ({}, {"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}):
        assert dash.http("POST", f"/api/devices/{device.id}/rpc/Sum", raw=b"[2,3]", headers=headers) == (
            200,
            {"result": 5},
        ), headers
    status, body = dash.http("POST", f"/api/devices/{device.id}/rpc/Sum", raw=b"[2,", headers={})
    assert status == 400 and "must be the method's params as JSON" in json.dumps(body)


def test_config_get_and_set(dash, device):
    status, body = dash.http("GET", f"/api/devices/{device.id}/config?key=mqtt")
    assert status == 200 and body["result"]["server"].startswith("127.0.0.1:")
    status, body = dash.http(
        "PATCH", f"/api/devices/{device.id}/config", {"config": {"rpc": {"host_timeout_ms": 2500}}}
    )
    assert status == 200 and body["result"] is True
    assert dash.http("GET", f"/api/devices/{device.id}/config?key=rpc.host_timeout_ms")[1]["result"] == 2500
    status, body = dash.http("PATCH", f"/api/devices/{device.id}/config", {"config": {"rpc": {"host_timeout_ms": "x"}}})
    assert status == 502 and body["error"]["code"] < 0 and body["error"]["message"]
    assert dash.http("PATCH", f"/api/devices/{device.id}/config", {"save": True})[0] == 422


# -- bundles and OTA -----------------------------------------------------------------------------


def test_bundle_upload_is_checked_and_bad_ones_refused_with_the_reason(dash, tmp_path):
    good = host_bundle(tmp_path).read_bytes()
    status, entry = dash.http("POST", "/api/bundles", raw=(m := multipart("lamp 2.0.zip", good))[0], headers=m[1])
    assert status == 201 and entry["name"] == "lamp_2.0.zip" and entry["version"] == "2.0"
    assert entry["platform"] == "ccm_host" and entry["parts"] == ["host_fw"]
    assert [b["name"] for b in dash.http("GET", "/api/bundles")[1]] == ["lamp_2.0.zip"]

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tmp_path / "fw-2.0.zip") as src, zipfile.ZipFile(tampered, "w") as dst:
        for i in src.infolist():
            data = src.read(i)
            dst.writestr(i, data if i.filename == "manifest.json" else data[:-1] + b"\x00")
    cases = {
        "noise.zip": (b"this is not a zip" * 10, "not a firmware bundle"),
        "empty.zip": (b"", "empty"),
        "tampered.zip": (tampered.read_bytes(), "SHA"),
    }
    for name, (data, reason) in cases.items():
        body, headers = multipart(name, data)
        status, err = dash.http("POST", "/api/bundles", raw=body, headers=headers)
        assert status == 422 and reason.lower() in err["detail"].lower(), (name, err)
    assert [b["name"] for b in dash.http("GET", "/api/bundles")[1]] == ["lamp_2.0.zip"]  # nothing else kept
    assert dash.http("POST", "/api/bundles", raw=b"x", headers={"Content-Type": "application/zip"})[0] == 422
    assert dash.http("DELETE", "/api/bundles/nope.zip")[0] == 404
    assert dash.http("DELETE", "/api/bundles/lamp_2.0.zip")[0] == 204
    assert dash.http("GET", "/api/bundles")[1] == []


def test_ota_start_refuses_unknown_bundles_and_devices(dash, device, tmp_path):
    body, headers = multipart("fw.zip", host_bundle(tmp_path).read_bytes())
    assert dash.http("POST", "/api/bundles", raw=body, headers=headers)[0] == 201
    assert dash.http("POST", "/api/ota", {"bundle": "nope.zip", "devices": [device.id]})[0] == 404
    status, err = dash.http("POST", "/api/ota", {"bundle": "fw.zip", "devices": [device.id, "ghost"]})
    assert status == 404 and "ghost" in err["detail"]
    assert dash.http("POST", "/api/ota", {"bundle": "fw.zip", "devices": []})[0] == 422
    assert (
        dash.http("POST", "/api/ota", {"bundle": "fw.zip", "devices": [device.id], "via": "carrier pigeon"})[0] == 422
    )
    assert dash.http("GET", "/api/ota/99")[0] == 404


@pytest.mark.parametrize("via", ["shadow", "rpc"])
def test_ota_updates_the_host_and_reports_progress(dash, tmp_path, via):
    """The lamp product (virtual STM32 with real firmware) updated to v2 from an uploaded bundle."""
    from sim.lamp_fw import lamp_image
    from sim.product import LampProduct

    (tmp_path / "lamp.bin").write_bytes(lamp_image("2.0")[0])
    path = tmp_path / "lamp-2.0.zip"
    fwbundle.create(
        str(path), "lamp", "ccm_host", ["host_fw:type=STM32,src=lamp.bin,addr=0x8000000"], "2.0", src_dir=str(tmp_path)
    )
    body, headers = multipart(path.name, path.read_bytes())
    assert dash.http("POST", "/api/bundles", raw=body, headers=headers)[0] == 201
    dev = unique_device()
    with LampProduct(dev, dash.broker.url, str(tmp_path / "fs")):
        wait_until(lambda: dash.http("GET", f"/api/devices/{dev}")[1].get("host_version") == "1.0", 20, "v1 seen")
        status, r = dash.http("POST", "/api/ota", {"bundle": path.name, "devices": [dev], "via": via})
        assert status == 202 and r["devices"][dev]["state"] == "pending" and "/fw/" in r["url"]
        seen = set()

        def done():
            view = dash.http("GET", f"/api/ota/{r['id']}")[1]
            seen.add(view["devices"][dev]["state"])
            return view["done"] and view

        view = wait_until(done, 120, "the rollout")
        assert view["devices"][dev]["state"] == "success" and view["succeeded"] == 1, view
        assert "progress" in seen
        wait_until(lambda: dash.http("GET", f"/api/devices/{dev}")[1]["host_version"] == "2.0", 20, "v2 seen")
        assert dash.http("GET", "/api/ota")[1][0]["id"] == r["id"]
    # devices fetch bundles by a secret path; guessing it gives nothing
    assert dash.http("GET", f"/fw/wrong-key/{path.name}", token=None)[0] == 404
