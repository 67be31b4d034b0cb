"""BLE (issue 23): provisioning and RPC over mos's RPC-over-GATT service, the virtual module's radio on
Bumble (sim/ble.py) and the PC's Bluetooth host on Bumble too (bundle/ble.py), across processes through
HCI over TCP, as a dongle would be."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import unique_device, wait_until

from bundle.ble import BleRpc
from ccm.rpc import FORBIDDEN, INVALID_REQUEST, RpcError
from host_lib import Host
from sim.ccm import VirtualCcm

ROOT = Path(__file__).resolve().parent.parent


def ccm(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # with the test's CCM_BLE_KEYS
    return subprocess.run(
        [sys.executable, "-m", "bundle.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def module(tmp_path, monkeypatch):
    monkeypatch.setenv("CCM_BLE_KEYS", str(tmp_path / "pc-bonds.json"))  # the PC's bonds, not the user's
    made = []

    def boot(config=None, **kw):
        device = unique_device()
        cfg = {"device": {"id": device}, "ble": {"enable": True}} | (config or {})
        (tmp_path / device).mkdir()
        v = VirtualCcm(cfg, fs_dir=str(tmp_path / device), ble=True, **kw).start()
        made.append(v)
        wait_until(lambda: v.password, 10, "the /rpc password the module makes at its first boot")
        return v, device

    yield boot
    for v in made:
        v.stop()


def joined(v):
    return v.board.joined is not None


def test_ccm_provision_over_ble_joins_the_wlan_and_the_module_shows_up_on_ccm_cloud(tmp_path, monkeypatch):
    """The manual's third way, as a user runs it, in processes: `ccm cloud`, a device added to it, a
    virtual module with BLE on its broker (`ccm sim ccm --ble`), then one command over BLE provisions its
    WiFi and waits until it joined; the module is then online in ccm cloud's REST API."""
    import urllib.request

    from test_cloud_cli import Running, running_cloud

    monkeypatch.setenv("CCM_BLE_KEYS", str(tmp_path / "pc-bonds.json"))
    device = unique_device()
    cloud = running_cloud(tmp_path)
    try:
        api_line = cloud.line_with("REST API:")  # "  REST API:  URL/api/docs  (Authorization: Bearer TOKEN)"
        api = api_line.split()[2].removesuffix("/docs")
        token = api_line.rsplit(" ", 1)[1].strip().rstrip(")")
        added = ccm("cloud", "add-device", device, "--state", str(tmp_path / "state")).stdout
        mqtt = next(line for line in added.splitlines() if "ccm sim ccm" in line).split("--mqtt ")[1]
        sim = Running(
            "sim",
            "ccm",
            "--ble",
            "--device-id",
            device,
            "--mqtt",
            mqtt,
            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        )
        try:
            hci = sim.line_with("--hci ").split("--hci ")[1].split()[0]
            out = ccm("--hci", hci, "provision", f"ble://{device}", "--ssid", "HomeNet", "--pass", "secret123")
            assert out.returncode == 0, out.stdout + out.stderr
            assert "joined HomeNet" in out.stdout

            def online():
                req = urllib.request.Request(f"{api}/devices", headers={"Authorization": f"Bearer {token}"})
                devices = json.loads(urllib.request.urlopen(req, timeout=10).read())
                return any(d["id"] == device and d["online"] for d in devices)

            wait_until(online, 30, "the module online in ccm cloud")
        finally:
            sim.stop()
    finally:
        cloud.stop()


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
                (
                    host,
                    [
                        ("RPC.List", None),
                        ("Config.Get", None),  # the whole tree, secrets redacted: > 1 KB
                        ("Config.Get", {"key": "device"}),
                        ("Config.Set", {"config": {"no": {"such": 1}}}),
                        ("Config.Set", {"config": {"mqtt": {"keep_alive": "soon"}}}),
                        ("Sys.Reboot", {"delay_ms": -1}),
                        ("Shadow.Get", None),  # no cloud configured: -32001 with the reason
                        ("MQTT.Pub", {"topic": "t", "message": "m"}),
                        ("OTA.Commit", None),
                        ("Wifi.Scan", None),
                    ],
                ),
                (ws, [("Sum", list(range(100))), ("Echo", big), ("No.Such", None), ("Echo", None)]),
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


def test_the_service_is_not_seen_outside_its_window_until_the_button_is_pressed(module):
    """Provisioned and past ble.window_s after the boot: nobody finds it; a press of the provisioning
    button (shorter than its factory-reset hold) opens the window again."""
    v, device = module(
        {
            "wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}},
            "ble": {"enable": True, "window_s": 5},
            "provision": {"btn": {"pin": 0, "hold_ms": 3000}},
        }
    )
    wait_until(lambda: joined(v) and not v.ccm.ble.advertising, 15, "the window closed")
    out = ccm("--hci", v.ble_hci(0), "--port", f"ble://{device}", "call", "Sys.GetInfo")
    assert out.returncode == 1 and "no BLE device named" in out.stderr and "Traceback" not in out.stderr
    v.board.pins[0] = 0  # a press
    time.sleep(0.2)
    v.board.pins[0] = 1
    wait_until(lambda: v.ccm.ble.advertising, 5, "advertising again")
    r = BleRpc(f"ble://admin:{v.password}@{device}", hci=v.ble_hci(0))
    try:
        assert r.call("Sys.GetInfo")["device_id"] == device
    finally:
        r.close()
    assert v.board.boots == 1  # a press, not a factory reset


def test_cli_calls_over_ble(module):
    v, device = module()
    out = ccm("--hci", v.ble_hci(0), "--port", f"ble://{device}", "call", "Sys.GetInfo")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device_id"] == device


def test_the_link_is_paired_and_the_bond_outlives_a_reboot_until_a_factory_reset(module):
    """LE Secure Connections, Just Works (a module has no display): the first connection pairs and both
    sides keep the bond — the module through the stack's secrets, in its filesystem — so after a reboot
    the link is encrypted with it, without pairing; a factory reset forgets it and the next central
    pairs anew."""
    v, device = module({"provision": {"btn": {"pin": 0, "hold_ms": 300}}})
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        assert r.paired == "paired"
        st = r.call("Sys.GetInfo")["ble"]
        assert st["encrypted"] is True and st["bonds"] == 1
    finally:
        r.close()
    bonds = Path(v.board.fs_dir) / "ble_bonds.json"
    assert bonds.exists()
    boots = v.board.boots
    with Host(v.path) as host:
        host.call("Sys.Reboot", {"delay_ms": 0})
    wait_until(lambda: v.board.boots > boots and v.ccm.ble is not None, 20, "the reboot")
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        assert r.paired == "bonded"  # encrypted with the kept bond
        assert r.call("Sys.GetInfo")["ble"]["encrypted"] is True
    finally:
        r.close()
    boots = v.board.boots
    v.board.pins[0] = 0  # the provisioning button, held: factory reset
    wait_until(lambda: v.board.boots > boots, 20, "the factory-reset reboot")
    v.board.pins[0] = 1
    assert not bonds.exists()
    wait_until(lambda: v.ccm.ble is not None, 20, "BLE after the reset")
    r = BleRpc(f"ble://{device}", hci=v.ble_hci(0))
    try:
        assert r.paired == "paired"  # the module forgot the bond: paired anew
        assert r.call("Sys.GetInfo")["ble"]["bonds"] == 1
    finally:
        r.close()


def test_ccm_ota_over_ble_with_a_progress_bar(module, tmp_path):
    """Every command works over BLE, an OTA too: slowly (a frame goes in MTU-sized writes), with the bar."""
    from ccm.ota import fsarchive
    from pc import fwbundle

    v, device = module({"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}})
    files = {"assets/note.txt": bytes(range(256)) * 24}  # 6 KiB: three 2 KiB chunks, each a dozen writes
    part = fwbundle.Part("fs", {"type": "fs", "src": "fs.bin"}, fsarchive.pack(files))
    fwbundle.create(str(tmp_path / "fw.zip"), "ccm", "esp32", [], "7.7.7", parts=[part])
    out = ccm("--hci", v.ble_hci(0), "--port", f"ble://admin:{v.password}@{device}", "ota", str(tmp_path / "fw.zip"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "staged its files" in out.stdout and "100.0%" in out.stderr + out.stdout
    note = tmp_path / device / "assets" / "note.txt"  # unpacked by the boot it rebooted into
    wait_until(lambda: note.exists() and note.read_bytes() == files["assets/note.txt"], 30, "the update's file")


def test_ccm_provision_over_the_uart_and_a_wrong_password_says_so(tmp_path):
    """The same command over the host's serial port; a password the network refuses ends in one line
    with the module's reason, not a traceback."""
    v = VirtualCcm({"device": {"id": unique_device()}}, fs_dir=str(tmp_path)).start()
    try:
        out = ccm("provision", v.path, "--ssid", "HomeNet", "--pass", "wrong-pass", "--wait", "3")
        assert out.returncode == 1 and "did not join HomeNet" in out.stderr and "Traceback" not in out.stderr
        assert "wrong password" in out.stderr
        out = ccm("provision", v.path, "--ssid", "HomeNet", "--pass", "secret123")
        assert out.returncode == 0 and "joined HomeNet" in out.stdout, out.stdout + out.stderr
    finally:
        v.stop()
