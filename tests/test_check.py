"""`ccm check` (issue 21, item 4): the acceptance a CI run does, as a user runs it against a module —
here the virtual product: the lamp (a virtual STM32 running the C firmware) behind a virtual CCM, with a
real mosquitto and the shadow service."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import cloud_config, unique_device, wait_until

from pc.uart import open_raw_pty
from sim.ccm import VirtualCcm
from sim.product import LampProduct

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
LAMP_V2 = ROOT / "examples/stm32-lamp/prebuilt/lamp-2.0.bin"


def ccm(*args):
    return subprocess.run(
        [sys.executable, "-m", "bundle.cli", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


def rows(out):
    """check name -> PASS / FAIL / skip, from the printed table."""
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in ("PASS", "FAIL", "skip"):
            found[parts[1][:20].strip()] = parts[0]
    return found


def test_check_passes_against_the_virtual_product_with_a_host_ota(mosquitto, shadow_service, tmp_path):
    device = unique_device()
    with LampProduct(device, mqtt=f"127.0.0.1:{mosquitto.port}", fs_dir=str(tmp_path / "fs")) as p:
        wait_until(lambda: p.ccm.call("Sys.GetInfo")["cloud"]["connected"], what="the product online")
        ws = p.ccm.rpc_url()
        out = ccm("--port", ws, "check", "--broker", mosquitto.url, "--host-image", str(LAMP_V2))
        assert out.returncode == 0, out.stdout + out.stderr
        got = rows(out.stdout)
        for name in (
            "link: Sys.GetInfo",
            "config",
            "cloud connection",
            "RPC from the cloud",
            "shadow round trip",
            "host OTA",
        ):
            assert got[name] == "PASS", out.stdout
        assert "round trip" in out.stdout and "checks: " in out.stdout
        assert p.ccm.host_call("Sys.Info")["fw_version"] == "2.0"  # the OTA really flashed the lamp


def test_check_names_the_fix_for_a_broker_nobody_runs(tmp_path):
    dead = cloud_config(1, unique_device())  # port 1: nothing listens
    with VirtualCcm(dead, fs_dir=str(tmp_path)) as v:
        out = ccm("--port", v.path, "check")
        assert out.returncode == 1
        got = rows(out.stdout)
        assert got["link: Sys.GetInfo"] == "PASS" and got["cloud connection"] == "FAIL", out.stdout
        assert "mqtt.server" in out.stdout and "ccm cloud" in out.stdout
        assert got["RPC from the cloud"] == "skip"


def test_check_names_the_wiring_when_the_uart_is_silent():
    master, slave, path = open_raw_pty()  # a UART with nothing on the other end: TX/RX not connected
    try:
        out = ccm("--port", path, "--timeout", "1", "check")
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1
    got = rows(out.stdout)
    assert got["link: Sys.GetInfo"] == "FAIL" and got["config"] == "skip", out.stdout
    assert "cross TX and RX" in out.stdout and "Traceback" not in out.stdout + out.stderr
