"""The mos-style `ccm` commands over every kind of PORT, as a user types them."""

import json
import os
import subprocess
import sys

import pytest
from conftest import wait_until

from host_lib import Host
from sim.ccm import VirtualCcm

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def ccm(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "bundle.cli", *args], capture_output=True, text=True, env=ENV, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode != 0, p.stdout
    return p


@pytest.fixture
def v(tmp_path):
    with VirtualCcm({"device": {"id": "ccm-cli"}, "rpc": {"auth": {"password": "pw"}}}, fs_dir=str(tmp_path)) as v:
        yield v


def test_wifi_config_get_config_set_and_reboot_over_the_uart(v):
    assert "joins it" in ccm("--port", v.path, "wifi", "HomeNet", "secret123").stdout
    wait_until(
        lambda: v.board.boots == 2 and v.ccm.provisioner and v.ccm.provisioner.state == "connected", what="joined"
    )
    sta = json.loads(ccm("--port", v.path, "config-get", "wifi.sta").stdout)
    assert sta == {"enable": True, "ssid": "HomeNet", "pass": "***"}
    ccm("--port", v.path, "config-set", "mqtt.server=1234", "mqtt.keep_alive=30", "--no-reboot")
    assert v.config.get("mqtt.server") == "1234" and v.config.get("mqtt.keep_alive") == 30  # typed by the key
    bad = ccm("--port", v.path, "config-set", "mqtt.keep_alive=soon", "--no-reboot", ok=False)
    assert "mqtt.keep_alive must be a number" in bad.stderr
    assert "rebooting" in ccm("--port", v.path, "reboot").stdout
    wait_until(lambda: v.board.boots == 3, what="the reboot")
    assert json.loads(ccm("--port", v.path, "info").stdout)["device_id"] == "ccm-cli"


def test_http_and_websocket_ports_with_digest_auth(v):
    with Host(v.path) as h:
        h.call("Config.Set", {"config": {"wifi": {"sta": {"enable": True, "ssid": "HomeNet", "pass": "secret123"}}}})
    wait_until(lambda: v.ccm.provisioner.state == "connected")
    http, ws = v.http_url, v.http_url.replace("http://", "ws://")
    for port in (http, ws):
        assert json.loads(ccm("--port", port, "--password", "pw", "info").stdout)["device_id"] == "ccm-cli"
        assert "wants a password: give --password" in ccm("--port", port, "info", ok=False).stderr
        assert (
            "authentication failed for user admin" in ccm("--port", port, "--password", "no", "info", ok=False).stderr
        )
    ccm("--port", ws, "--password", "pw", "config-set", "mqtt.server=b:1883", "--no-reboot")
    assert v.config.get("mqtt.server") == "b:1883"


def test_port_busy_and_no_answer_are_explained(v, tmp_path):
    with Host(v.path):
        assert "port busy" in ccm("--port", v.path, "info", ok=False).stderr
    master, slave = os.openpty()
    try:
        p = ccm("--port", os.ttyname(slave), "--timeout", "0.3", "info", ok=False)
        assert "no answer to Sys.GetInfo within 0.3 s" in p.stderr and "Is the CCM powered" in p.stderr
    finally:
        os.close(master)
        os.close(slave)
    assert "cannot reach http://127.0.0.1:1/rpc" in ccm("--port", "http://127.0.0.1:1/rpc", "info", ok=False).stderr
