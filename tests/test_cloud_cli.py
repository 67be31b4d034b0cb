"""`ccm cloud`, `ccm sim ccm --mqtt`, `ccm --port mqtt://… call|shadow` as a user runs them, in processes."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from conftest import unique_device, wait_until

from host_lib import Host

ENV = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")


def ccm(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "bundle.cli", *args], capture_output=True, text=True, env=ENV, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


class Running:
    def __init__(self, *args, env=None):
        self.p = subprocess.Popen(
            [sys.executable, "-m", "bundle.cli", *args], stdout=subprocess.PIPE, text=True, env=env or ENV
        )
        self.lines = []

    def line_with(self, text):
        while True:
            line = self.p.stdout.readline()
            assert line, f"exited before printing {text!r}: {self.lines}"
            self.lines.append(line)
            if text in line:
                return line

    def stop(self):
        self.p.terminate()
        self.p.wait(20)
        return self.p.returncode


def running_cloud(tmp_path, *args) -> Running:
    """`ccm cloud` with everything it keeps in `tmp_path` (shadows, broker users) and its dashboard on a
    free port."""
    state = ["--db", str(tmp_path / "s.sqlite"), "--state", str(tmp_path / "state"), "--http", "127.0.0.1:0"]
    return Running("cloud", *state, *args)


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto", "amqtt"])
def test_local_cloud_virtual_ccm_and_cli_end_to_end(tmp_path, embedded):
    device = unique_device()
    cloud = running_cloud(tmp_path, "--bundles", str(tmp_path / "bundles"), *(["--embedded"] if embedded else []))
    try:
        assert ("amqtt" in cloud.line_with("MQTT broker")) == embedded
        cloud.line_with("shadow service up")
        api_line = cloud.line_with("REST API:")  # "  REST API:  URL/api/docs  (Authorization: Bearer TOKEN)"
        api = api_line.split()[2].removesuffix("/docs")
        token = api_line.rsplit(" ", 1)[1].strip().rstrip(")")
        # "  set a shadow:  ccm --port mqtt://ccm-cloud:PASSWORD@127.0.0.1:PORT/ccm-000000 shadow desired …"
        broker = cloud.line_with("set a shadow:").split("--port ")[1].split()[0].rsplit("/", 1)[0]
        sim_url = broker
        if not embedded:  # mosquitto lets in only the devices it was told of, each with its own password
            added = ccm("cloud", "add-device", device, "--state", str(tmp_path / "state")).stdout
            sim_url = next(line for line in added.splitlines() if "ccm sim ccm" in line).split("--mqtt ")[1]
            assert sim_url.startswith(f"mqtt://{device}:")
        sim = Running("sim", "ccm", "--device-id", device, "--mqtt", sim_url)
        try:
            path = sim.line_with("host UART is").rsplit(" ", 1)[1].strip()
            deltas = []
            host = Host(path)
            host.export("Sum", lambda p: p[0] + p[1])

            @host.on("Shadow.Delta")
            def delta(state):
                deltas.append(state)
                host.shadow_report(state)

            with host:
                wait_until(lambda: host.call("Sys.GetInfo")["cloud"]["connected"], what="the virtual CCM online")
                port = f"{broker}/{device}"
                assert json.loads(ccm("--port", port, "call", "Sum", "[2,3]").stdout) == 5
                out = json.loads(ccm("--port", port, "shadow", "desired", "on=true", "color.r=255").stdout)
                assert out["state"] == {"desired": {"on": True, "color": {"r": 255}}}
                wait_until(lambda: deltas, what="Shadow.Delta at the host")

                def reported():
                    doc = json.loads(ccm("--port", port, "shadow", "get").stdout)
                    return doc if doc["state"].get("reported") == {"on": True, "color": {"r": 255}} else None

                doc = wait_until(reported, timeout=20, what="the report in the shadow")
                assert "delta" not in doc["state"]
                bad = ccm("--port", port, "call", "No.Such", check=False)
                assert bad.returncode != 0 and "method not found" in bad.stderr
                # the dashboard's API, with the token the command printed
                req = urllib.request.Request(f"{api}/devices", headers={"Authorization": f"Bearer {token}"})
                devices = json.loads(urllib.request.urlopen(req, timeout=10).read())
                assert any(d["id"] == device and d["online"] for d in devices)
                if not embedded:
                    _another_device_cannot_reach_this_one(tmp_path, broker, device, port)
        finally:
            assert sim.stop() == 0
    finally:
        assert cloud.stop() == 0


def test_cli_explains_a_missing_device_and_a_dead_broker():
    p = ccm("--port", "mqtt://127.0.0.1:1", "call", "Sys.GetInfo", check=False)
    assert p.returncode != 0 and "say which device" in p.stderr
    p = ccm("--port", "mqtt://127.0.0.1:1/ccm-x", "call", "Sys.GetInfo", check=False)
    assert p.returncode != 0 and "no MQTT broker at 127.0.0.1:1" in p.stderr
    p = ccm("--port", "/dev/ttyUSB9", "shadow", "get", check=False)
    assert p.returncode != 0 and "mqtt://HOST:PORT/DEVICE_ID" in p.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["--http", "127.0.0.1:99999"], "--http 127.0.0.1:99999: expected HOST:PORT"),
        (["--http", "nonsense"], "expected HOST:PORT"),
        (["--token", "short"], "--token: at least 8 characters"),
        (["--public-url", "example.com"], "--public-url example.com: expected http://"),
        (["--bundles", "/proc/no/such/dir"], "--bundles /proc/no/such/dir: cannot create it"),
    ],
)
def test_cloud_mistakes_end_in_one_error_line(tmp_path, args, says):
    if "--bundles" not in args:
        args = [*args, "--bundles", str(tmp_path / "bundles")]
    p = ccm("cloud", "--db", str(tmp_path / "s.sqlite"), *args, check=False)
    assert p.returncode != 0 and says in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("Error:")


def test_versions_stay_text_on_the_command_line():
    """`shadow desired ota.version=2.0` stored the number 2.0, and 2.10 became 2.1 (issue 27, bug 5)."""
    from bundle.cli.common import parse_dotted

    got = parse_dotted(("ota.version=2.10", "ota.commit_timeout=30", "fw_version=1.0", "on=true", "old.version=null"))
    assert got == {
        "ota": {"version": "2.10", "commit_timeout": 30},
        "fw_version": "1.0",
        "on": True,
        "old": {"version": None},
    }


@pytest.mark.parametrize("host", ["none", "lamp"])
def test_a_stopped_sim_leaves_no_directory_behind(tmp_path, host):
    """Every `ccm sim ccm` run left a /tmp/ccm-fs-* (or ccm-product-*) directory: 242 after a day's use
    (issue 27, bug 4). Stopped as a terminal stops it (SIGTERM here), it takes its filesystem along."""
    sim = Running("sim", "ccm", "--host", host, env=dict(ENV, TMPDIR=str(tmp_path)))
    try:
        sim.line_with("Ctrl-C stops it")
        assert any(d.name.startswith("ccm-") for d in tmp_path.iterdir())  # its filesystem, while it runs
    finally:
        assert sim.stop() == 0
    assert [d.name for d in tmp_path.iterdir()] == []


def test_a_second_sim_with_an_id_already_online_is_refused(mosquitto, cloud):
    """Following the README left one `ccm sim ccm --mqtt` running when the next started: both were
    ccm-000000, both answered, nothing said so (issue 27, bug 3). The second is refused with the reason."""
    device = unique_device()
    server = f"127.0.0.1:{mosquitto.port}"
    first = Running("sim", "ccm", "--device-id", device, "--mqtt", server)
    try:
        first.line_with("Ctrl-C stops it")
        cloud.subscribe(f"{device}/status")
        cloud.wait_message(f"{device}/status", lambda p: p == b"online", timeout=20)
        second = ccm("sim", "ccm", "--device-id", device, "--mqtt", server, check=False)
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"a CCM with device id {device} is online on {server} already" in second.stderr
        assert "--device-id" in second.stderr
        assert cloud.call(device, "Sys.GetInfo")["device_id"] == device  # the first one is untouched
    finally:
        assert first.stop() == 0


def test_serve_dir_is_made_when_missing(tmp_path):
    """The README's `ccm cloud --serve-dir ./bundles` failed unless ./bundles existed (issue 27)."""
    d = tmp_path / "bundles"
    cloud = running_cloud(tmp_path, "--serve-dir", str(d))
    try:
        cloud.line_with("bundles in")
        assert d.is_dir()
    finally:
        assert cloud.stop() == 0


def _another_device_cannot_reach_this_one(tmp_path, cloud_url, device, port):
    """`ccm cloud`'s broker (issue 22, item 4): device B, with its own valid credentials, can neither call
    A's RPC, nor write A's shadow, nor read A's topics; without credentials nobody gets in; B on its own
    topics works."""
    from cloud.client import CloudClient

    other = "b-" + device
    before = json.loads(ccm("--port", port, "call", "Sys.GetInfo").stdout)["uptime"]
    added = ccm("cloud", "add-device", other, "--state", str(tmp_path / "state")).stdout
    b_url = next(line for line in added.splitlines() if "ccm sim ccm" in line).split("--mqtt ")[1]
    with pytest.raises(ConnectionError, match="Not authorized"):
        CloudClient(b_url.replace(f"{other}:", f"{other}:wrong"), client_id="intruder").start()
    with pytest.raises(ConnectionError):
        CloudClient("mqtt://" + cloud_url.rpartition("@")[2], client_id="anonymous").start()
    with CloudClient(cloud_url, client_id="watch") as watch, CloudClient(b_url, client_id=other) as b:
        watch.subscribe("cloud/evil/rpc")
        watch.subscribe(f"{other}/hello")
        b.subscribe(f"{device}/#")  # refused by the ACL: nothing of A's comes
        b.publish(f"{device}/rpc", {"id": 1, "src": "cloud/evil", "method": "Sys.Reboot"})
        b.publish(f"$aws/things/{device}/shadow/update", {"state": {"desired": {"on": False}}})
        b.publish(f"{other}/hello", "mine")  # its own topic: allowed
        watch.wait_message(f"{other}/hello", timeout=10)
        with pytest.raises(TimeoutError):
            watch.wait_message("cloud/evil/rpc", timeout=2)  # A never got the call
        assert not [m for m in b.messages if m[0].startswith(device + "/")]
    doc = json.loads(ccm("--port", port, "shadow", "get").stdout)
    assert doc["state"]["desired"] == {"on": True, "color": {"r": 255}}  # unchanged by B
    assert json.loads(ccm("--port", port, "call", "Sys.GetInfo").stdout)["uptime"] >= before  # not rebooted


def test_the_embedded_broker_does_not_start_for_devices_with_their_own_credentials(tmp_path):
    """It cannot hold a device to its own topics (issue 22, item 4): with devices added, it refuses in one
    line and says what to install. (A device added while a mosquitto cloud runs is let in at once: the
    end-to-end test above adds its device that way.)"""
    state = str(tmp_path / "state")
    added = ccm("cloud", "add-device", "lamp-7", "--state", state).stdout
    assert "MQTT user lamp-7" in added and "no ccm cloud running" in added
    p = ccm("cloud", "--embedded", "--state", state, "--http", "none", "--db", str(tmp_path / "s.db"), check=False)
    assert p.returncode != 0 and "install mosquitto" in p.stderr and "Traceback" not in p.stderr
    bad = ccm("cloud", "add-device", "cloud", "--state", state, check=False)
    assert bad.returncode != 0 and "a device id is" in bad.stderr
