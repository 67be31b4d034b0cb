"""BLE (issue 23): provisioning and RPC over mos's RPC-over-GATT service, the virtual module's radio on
Bumble (sim/ble.py) and the PC's Bluetooth host on Bumble too (bundle/ble.py), across processes through
HCI over TCP, as a dongle would be."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unique_device, wait_until

from bundle.ble import BleRpc
from ccm.rpc import FORBIDDEN, INVALID_REQUEST, RpcError
from host_lib import Host
from sim.ccm import VirtualCcm

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def ccm(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "bundle.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


@pytest.fixture
def module(tmp_path):
    made = []

    def boot(config=None, **kw):
        device = unique_device()
        cfg = {"device": {"id": device}, "ble": {"enable": True}} | (config or {})
        (tmp_path / device).mkdir()
        v = VirtualCcm(cfg, fs_dir=str(tmp_path / device), ble=True, **kw).start()
        made.append(v)
        return v, device

    yield boot
    for v in made:
        v.stop()


def joined(v):
    return v.board.joined is not None


def test_ccm_provision_over_ble_joins_the_wlan_and_the_module_reaches_the_cloud(module, mosquitto, tmp_path):
    """The manual's third way, as a phone app does it: one command, over BLE, waits until the module says
    it joined; the module then shows up on the cloud's broker."""
    from cloud.client import CloudClient

    v, device = module({"mqtt": {"enable": True, "server": f"127.0.0.1:{mosquitto.port}"}})
    with CloudClient(mosquitto.url, client_id="app-" + device) as cloud:
        cloud.subscribe(f"{device}/status")
        out = ccm("--hci", v.ble_hci(0), "provision", f"ble://{device}", "--ssid", "HomeNet", "--pass", "secret123")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "joined HomeNet" in out.stdout
        assert v.board.joined == "HomeNet" and v.config.get("wifi.sta.ssid") == "HomeNet"
        assert cloud.wait_message(f"{device}/status", lambda p: p == b"online", timeout=20)
        assert cloud.call(device, "Sys.GetInfo")["wifi"]["state"] == "connected"


def test_unprovisioned_ble_serves_only_wifi_settings_and_four_methods(module):
    v, device = module()
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        assert r.call("Sys.GetInfo")["wifi"]["state"] == "ap"
        with pytest.raises(RpcError) as e:
            r.call("Config.Get")
        assert e.value.code == FORBIDDEN and "unprovisioned" in e.value.message
        with pytest.raises(RpcError) as e:
            r.call("Config.Set", {"config": {"mqtt": {"server": "evil:1883"}}})
        assert e.value.code == FORBIDDEN
        assert v.config.get("mqtt.server") == ""
    finally:
        r.close()


def test_once_provisioned_ble_wants_the_password_and_config_get_is_redacted(module):
    v, device = module({"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}})
    wait_until(lambda: joined(v), 10, "joined")
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        with pytest.raises(RpcError) as e:
            r.call("Config.Get", {"key": "wifi"})
        assert e.value.code == FORBIDDEN and "credentials" in e.value.message
    finally:
        r.close()
    r = BleRpc(f"ble://admin:wrong-password@{device}", hci=v.ble_hci(0))
    try:
        with pytest.raises(RpcError) as e:  # the reason comes back over BLE
            r.call("Sys.GetInfo")
        assert e.value.code == FORBIDDEN and "wrong user or password" in e.value.message
    finally:
        r.close()
    r = BleRpc(f"ble://admin:{v.password}@{device}", hci=v.ble_hci(0))
    try:
        wifi = r.call("Config.Get", {"key": "wifi"})
        assert wifi["sta"]["pass"] == "***" and wifi["sta"]["ssid"] == "HomeNet"
    finally:
        r.close()


def test_every_call_answers_over_ble_as_over_the_uart_frames_beyond_the_mtu_included(module):
    """The CCM's own methods answer over BLE as the host gets them on the UART; the host's methods as a
    WebSocket client gets them — errors included, and frames many MTUs long each way."""
    from bundle.transport import WsRpc

    v, device = module({"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}})
    big = {"text": "é" * 300, "list": list(range(200))}  # > 2 KB of JSON
    with Host(v.path) as host:
        host.export("Sum", lambda p: sum(p))
        host.export("Echo", lambda p: p)
        r = BleRpc(f"ble://admin:{v.password}@{device}", hci=v.ble_hci(0))
        ws = WsRpc(v.rpc_url())
        try:
            assert r.mtu > 23
            for caller, calls in (
                (host, [("RPC.List", None), ("Config.Get", {"key": "device"}), ("Sys.Reboot", {"delay_ms": -1})]),
                (ws, [("Sum", list(range(100))), ("Echo", big), ("No.Such", None)]),
            ):
                for method, params in calls:
                    expected = _outcome(caller.call, method, params)
                    assert _outcome(r.call, method, params) == expected, method
            assert r.call("Echo", big) == big
            info = r.call("Sys.GetInfo")
            assert info["device_id"] == device and info["fw_version"] == host.call("Sys.GetInfo")["fw_version"]
        finally:
            ws.close()
            r.close()


def _outcome(call, method, params):
    try:
        return ("result", call(method, params))
    except RpcError as e:
        return ("error", e.code, e.message)


def test_an_oversize_frame_is_refused_and_the_session_goes_on(module):
    v, device = module()
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        limit = v.config.get("rpc.max_frame_size")
        reply = r.send_frame(b"{}", announced=limit + 1)
        assert reply["error"]["code"] == INVALID_REQUEST and "frame too large" in reply["error"]["message"]
        reply = r.send_frame(b'{"id":1,"method":"Sys.GetInfo"}' + b" " * 10, announced=20)  # longer than announced
        assert reply["error"]["code"] == INVALID_REQUEST
        assert r.call("Sys.GetInfo")["device_id"] == device
    finally:
        r.close()


def test_a_connection_lost_mid_frame_drops_the_frame(module):
    """Half a Config.Set, then the central walks away: nothing of it is applied, and the next central is
    served."""
    v, device = module()
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    frame = json.dumps(
        {"id": 1, "method": "Config.Set", "params": {"config": {"wifi": {"sta": {"ssid": "HomeNet"}}}, "save": True}}
    ).encode()
    try:
        r._run(r.tx.write_value(struct.pack(">I", len(frame)), with_response=True), 10)
        r._run(r.data.write_value(frame[: len(frame) // 2], with_response=True), 10)
        r.disconnect()
    finally:
        r.close()
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(1))
    try:
        assert r.call("Sys.GetInfo")["wifi"]["state"] == "ap"
        assert v.config.get("wifi.sta.ssid") == ""
    finally:
        r.close()


def test_a_second_central_is_refused_while_one_is_provisioning(module):
    """One session at a time: while a central is connected the module does not advertise, so another
    finds nothing by name and cannot connect by address; the first session goes on."""
    from bundle.transport import PortError

    v, device = module()
    first = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        with pytest.raises(PortError) as e:
            BleRpc(f"ble://{device}", hci=v.ble_hci(1), timeout=3)
        assert "no BLE device named" in str(e.value)
        with pytest.raises(PortError) as e:
            BleRpc(f"ble://{v.board.ble_radio.address}", hci=v.ble_hci(1), timeout=3)
        assert "busy with another central" in str(e.value)
        assert first.call("Sys.GetInfo")["device_id"] == device
    finally:
        first.close()


def test_the_service_is_not_seen_outside_its_window(module):
    """Provisioned and past ble.window_s after the boot: nobody finds it (a power cycle opens it again)."""
    v, device = module(
        {
            "wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}},
            "ble": {"enable": True, "window_s": 1},
        }
    )
    wait_until(lambda: joined(v) and not v.ccm.ble.advertising, 10, "the window closed")
    out = ccm("--hci", v.ble_hci(0), "--port", f"ble://{device}", "call", "Sys.GetInfo")
    assert out.returncode == 1 and "no BLE device named" in out.stderr and "Traceback" not in out.stderr


def test_cli_calls_over_ble(module):
    v, device = module()
    out = ccm("--hci", v.ble_hci(0), "--port", f"ble://{device}", "call", "Sys.GetInfo")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device_id"] == device
