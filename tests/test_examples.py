"""The examples run, against the virtual CCM."""

import os
import subprocess
import sys
import time

import pytest

from sim.ccm import VirtualCcm


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_lamp_host_follows_the_shadow_and_answers_calls():
    reports = []
    with VirtualCcm({"device": {"id": "ccm-lamp"}}) as v:
        v.ccm.router.add("Shadow.Report", lambda params, call: reports.append(params))
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        p = subprocess.Popen(
            [sys.executable, "examples/lamp_host.py", v.path], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert "talking to CCM ccm-lamp" in p.stdout.readline()
            assert v.call("Lamp.Set", {"on": True, "brightness": 40}) == {"on": True, "brightness": 40}
            v.notify_host("Shadow.Delta", {"on": False})
            wait_until(lambda: reports and reports[-1] == {"on": False, "brightness": 40})
            assert v.call("Sum", [20, 22]) == 42
            assert v.call("Sys.GetInfo")["device_id"] == "ccm-lamp"  # the CCM's own method, not the host's
        finally:
            p.terminate()
            p.wait(10)
    assert p.returncode == 0


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto", "amqtt"])
def test_ccm_demo_runs_the_whole_virtual_product(embedded, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), TMPDIR=str(tmp_path))
    args = [sys.executable, "-m", "bundle.cli", "demo", *(["--embedded"] if embedded else [])]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [d.name for d in tmp_path.iterdir()] == []  # nothing left behind (issue 27, bug 4)
    for frame in (
        '{"id":1,"method":"Sum","params":[2,3]}',
        '{"id":2,"error":{"code":-32601,"message":"method not found"}}',
        '{"method":"Shadow.Delta","params":{"on":true}}',
        '{"method":"Shadow.Report","params":{"on":true,"brightness":100}}',
        '{"method":"MQTT.Message","params":{"topic":"lamp/cmd","message":"off"}}',
        '{"method":"MQTT.Pub","params":{"topic":"lamp/status","message":"off"}}',
    ):
        assert frame in p.stdout
    assert "amqtt" in p.stdout if embedded else "mosquitto" in p.stdout
    assert '"reported": {"on": true, "brightness": 100}' in p.stdout
    assert "emulated Cortex-M3" in p.stdout and "the LED is off" in p.stdout  # the real firmware ran
    # the manual's host OTA: bundled with its command, pushed over WebSocket, the host reports v2
    assert "--platform ccm_host host_fw:type=STM32,src=FIRMWARE.BIN,addr=0x8000000" in p.stdout
    assert "Uploading" in p.stdout + p.stderr and "host updated: it runs 2.0" in p.stdout
    assert '"fw_version": "2.0"' in p.stdout.split("through the cloud")[-1]
    assert "No data from" not in p.stdout + p.stderr
