"""The CCM manual's examples (§6–§9), byte for byte, over a real pty between host_lib and the virtual CCM.

The manual prints frames with spaces for reading; on the wire both ends send the compact form, which is
what these tests pin (`{"id":12007,"method":"Sum","params":[2,3]}`).
"""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import serial

from ccm import rpc
from host_lib import Host, RpcError, RpcTimeout
from sim.ccm import VirtualCcm


class Wire:
    """Every complete line on the virtual UART, per direction: 'tx' CCM→host, 'rx' host→CCM."""

    def __init__(self):
        self.lines = {"tx": [], "rx": []}
        self._partial = {"tx": b"", "rx": b""}
        self._cv = threading.Condition()

    def __call__(self, direction, data):
        with self._cv:
            buf = self._partial[direction] + data
            *lines, self._partial[direction] = buf.split(b"\n")
            self.lines[direction].extend(line + b"\n" for line in lines)
            self._cv.notify_all()

    def wait_for(self, direction, frame, timeout=5.0):
        with self._cv:
            if not self._cv.wait_for(lambda: frame in self.lines[direction], timeout):
                raise AssertionError(f"{frame!r} never crossed the wire ({direction}); saw {self.lines[direction]}")


@pytest.fixture
def wire():
    return Wire()


@pytest.fixture
def ccm(wire):
    v = VirtualCcm({"device": {"id": "ccm-test01"}}, trace=wire)
    with v:
        yield v


@pytest.fixture
def host(ccm):
    h = Host(ccm.path, fw_version="1.0", arch="unknown", fw_id="Nov 24 2018 09:10:27", app="posix_device")
    yield h
    h.close()


def test_sum_is_forwarded_from_a_caller_to_the_host_and_back(ccm, wire):
    """Manual §6: `{"id": 12007, "method": "Sum", "params": [2,3]}` → `{"id": 12007, "result": 5}`."""
    port = serial.Serial(ccm.path, timeout=5)
    port.reset_input_buffer()
    ccm.ccm.link.pending.next_id = 12007
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(ccm.call, "Sum", [2, 3])
        assert port.readline() == b'{"id":12007,"method":"Sum","params":[2,3]}\n'
        port.write(b'{"id":12007,"result":5}\n')
        assert answer.result(5) == 5
    port.close()


def test_host_lib_answers_sum_and_not_found_as_in_the_manual(ccm, host, wire):
    host.export("Sum", lambda p: p[0] + p[1])
    host.start()
    ccm.ccm.link.pending.next_id = 12007
    assert ccm.call("Sum", [2, 3]) == 5
    wire.wait_for("rx", b'{"id":12007,"result":5}\n')
    with pytest.raises(RpcError) as e:
        ccm.call("This_Function_Does_Not_Exist", True)
    assert (e.value.code, e.value.message) == (-32601, "method not found")
    wire.wait_for("tx", b'{"id":12008,"method":"This_Function_Does_Not_Exist","params":true}\n')
    wire.wait_for("rx", b'{"id":12008,"error":{"code":-32601,"message":"method not found"}}\n')


def test_shadow_delta_makes_the_host_report(ccm, host, wire):
    """Manual §9: Shadow.Delta (no id) → the host's Shadow.Report (no id)."""
    got = []
    ccm.ccm.router.add("Shadow.Report", lambda params, call: got.append(params))

    @host.on("Shadow.Delta")
    def delta(state):
        host.shadow_report({**state, "uptime": 132})

    host.start()
    ccm.notify_host("Shadow.Delta", {"on": True})
    wire.wait_for("tx", b'{"method":"Shadow.Delta","params":{"on":true}}\n')
    wire.wait_for("rx", b'{"method":"Shadow.Report","params":{"on":true,"uptime":132}}\n')
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [{"on": True, "uptime": 132}]
    assert not any(b'"id"' in line for line in wire.lines["rx"])  # notifications are never answered


def test_host_builtins_rpc_list_and_sys_info(ccm, host, wire):
    """Manual §9: the built-in RPC.List and Sys.Info of every host."""
    host.on("Shadow.Delta")(lambda state: None)
    host.start()
    ccm.ccm.link.pending.next_id = 1
    assert ccm.host_call("RPC.List") == ["Shadow.Delta", "RPC.List", "Sys.Info"]
    wire.wait_for("tx", b'{"id":1,"method":"RPC.List"}\n')
    wire.wait_for("rx", b'{"id":1,"result":["Shadow.Delta","RPC.List","Sys.Info"]}\n')
    ccm.ccm.link.pending.next_id = 1
    ccm.host_call("Sys.Info")
    wire.wait_for("tx", b'{"id":1,"method":"Sys.Info"}\n')
    wire.wait_for(
        "rx",
        b'{"id":1,"result":{"fw_version":"1.0","arch":"unknown","fw_id":"Nov 24 2018 09:10:27","app":"posix_device"}}\n',
    )


def test_host_notifications_match_the_manuals_frames(ccm, host, wire):
    """Manual §6 and §8: MQTT.Pub and Shadow.Report as mjson's jsonrpc_call prints them."""
    seen = []
    ccm.ccm.router.add("MQTT.Pub", lambda params, call: seen.append(params))
    host.start()
    host.mqtt_pub("t1", "hello")
    host.mqtt_pub("t1", "hello", qos=1)
    host.shadow_report({"on": True})
    wire.wait_for("rx", b'{"method":"MQTT.Pub","params":{"topic":"t1","message":"hello"}}\n')
    wire.wait_for("rx", b'{"method":"MQTT.Pub","params":{"topic":"t1","message":"hello","qos":1}}\n')
    wire.wait_for("rx", b'{"method":"Shadow.Report","params":{"on":true}}\n')
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [{"topic": "t1", "message": "hello"}, {"topic": "t1", "message": "hello", "qos": 1}]


def test_host_calls_ccm_methods_and_gets_typed_errors(ccm, host):
    host.start()
    info = host.call("Sys.GetInfo")
    assert info["device_id"] == "ccm-test01" and info["arch"] == "virtual" and "uptime" in info
    assert "Sys.Reboot" in host.call("RPC.List")
    with pytest.raises(RpcError) as e:
        host.call("Sum", [1, 2])  # the host asking for a method only a host would serve
    assert e.value.code == rpc.METHOD_NOT_FOUND
    with pytest.raises(RpcError) as e:
        host.call("Sys.Reboot", {"delay_ms": "soon"})
    assert e.value.code == rpc.INVALID_PARAMS and "delay_ms" in e.value.message


def test_sys_reboot_boots_again_and_sends_sys_init(ccm, host, wire):
    inits = []
    host.on("Sys.Init")(inits.append)
    host.start()
    assert host.call("Sys.Reboot", {"delay_ms": 10}) is True
    deadline = time.monotonic() + 5
    while not inits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inits == [{"fw_version": "0.1.0", "device_id": "ccm-test01"}]
    assert ccm.board.boots == 2
    assert host.call("Sys.GetInfo")["uptime"] == 0


def test_garbage_from_the_host_gets_errors_and_the_link_lives_on(ccm, wire):
    port = serial.Serial(ccm.path, timeout=5)
    port.reset_input_buffer()
    port.write(
        b"\x00\xff\xfe boot noise\r\n{not json}\n"
        + b'{"id":1,"p":"'
        + b"x" * 5000
        + b'"}\n{"id":2,"method":"RPC.List"}\n'
    )
    first, second, third = (json.loads(port.readline()) for _ in range(3))
    assert first["error"]["code"] == rpc.PARSE_ERROR and first["id"] is None
    assert second["error"]["code"] == rpc.INVALID_REQUEST and "max_frame_size is 4096" in second["error"]["message"]
    assert third["id"] == 2 and "Sys.GetInfo" in third["result"]
    port.close()


def test_host_call_times_out_when_nobody_answers():
    master, slave = os.openpty()
    try:
        with Host(os.ttyname(slave)) as h, pytest.raises(RpcTimeout):
            h.call("Sys.GetInfo", timeout=0.2)
    finally:
        os.close(master)
        os.close(slave)


def test_cli_call_against_the_virtual_ccm(ccm):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    ok = subprocess.run(
        [sys.executable, "-m", "bundle.cli", "--port", ccm.path, "call", "RPC.List"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Sys.GetInfo" in json.loads(ok.stdout)
    bad = subprocess.run(
        [sys.executable, "-m", "bundle.cli", "--port", ccm.path, "call", "No.Such"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode != 0 and "method not found" in bad.stderr
    noport = subprocess.run(
        [sys.executable, "-m", "bundle.cli", "--port", "/dev/does-not-exist", "info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert noport.returncode != 0 and "cannot open /dev/does-not-exist" in noport.stderr


def test_ccm_sim_ccm_prints_its_port_and_serves_it():
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "bundle.cli", "sim", "ccm", "--device-id", "ccm-cli42"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [p.stdout.readline() for _ in range(4)]  # the module's console may come first
        first = next(line for line in lines if "its host UART is" in line)
        path = first.rsplit(" ", 1)[1].strip()
        assert path.startswith("/dev/pts/"), first
        with Host(path) as h:
            assert h.call("Sys.GetInfo")["device_id"] == "ccm-cli42"
            password = h.call("Sys.Credentials")["password"]  # made at its first boot, printed for the user
        assert any(f"password {password}" in line for line in lines), lines
    finally:
        p.terminate()
        p.wait(10)
    assert p.returncode == 0


def test_ccm_sim_ccm_trace_shows_every_host_frame_at_once_even_without_newlines():
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "bundle.cli", "sim", "ccm", "--trace"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = p.stdout.readline()
        while "host UART is" not in line:  # the Sys.Init at link-up is traced first
            line = p.stdout.readline()
        fd = os.open(line.rsplit(" ", 1)[1].strip(), os.O_RDWR | os.O_NOCTTY)
        import tty

        tty.setraw(fd)
        try:
            seen = []

            def traced(text):
                while not any(text in line for line in seen):
                    seen.append(p.stdout.readline())
                return next(line for line in seen if text in line)

            os.write(fd, b'{"id":1,"method":"RPC.List"}')  # no newline: the host's answer and the trace come now
            assert traced('{"id":1,"method":"RPC.List"}').endswith("// Host -> CCM\n")
            assert "// CCM -> Host" in traced('{"id":1,"result":[')
            os.write(fd, b'{"id":2,"method":"No.Such"}{"id":3,"method":"No.Such"}\n')  # glued: one line each
            assert traced('{"id":2,"method":"No.Such"}').strip().startswith('{"id":2,"method":"No.Such"} ')
            assert traced('{"id":3,"method":"No.Such"}').strip().startswith('{"id":3,"method":"No.Such"} ')
        finally:
            os.close(fd)
    finally:
        p.terminate()
        p.wait(10)


def test_virtual_ccm_on_a_tcp_port_serves_pyserial_socket_urls():
    with VirtualCcm({"device": {"id": "ccm-tcp"}}, uart="tcp:0") as v:
        assert v.path.startswith("socket://127.0.0.1:")
        with Host(v.path) as h:
            assert h.call("Sys.GetInfo")["device_id"] == "ccm-tcp"
        with Host(v.path) as h:  # a second host after the first hung up
            assert "RPC.List" in h.call("RPC.List")


def test_virtual_ccm_on_an_existing_serial_device():
    """The virtual CCM can sit on a real serial port; here the port is one end of a pty we made."""
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    try:
        with VirtualCcm({"device": {"id": "ccm-dev"}}, uart=os.ttyname(slave)) as v:
            v.ccm.link.pending.next_id = 12007
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(v.call, "Sum", [2, 3])
                got = b""
                while not got.endswith(b'"params":[2,3]}\n'):
                    got += os.read(master, 256)
                assert got.splitlines()[-1] == b'{"id":12007,"method":"Sum","params":[2,3]}'
                os.write(master, b'{"id":12007,"result":5}\n')
                assert answer.result(5) == 5
    finally:
        os.close(master)
        os.close(slave)


def test_ccm_sim_stm32_says_how_to_reach_what_runs():
    """With --image the app runs: the hint is a JSON-RPC call to it, not stm32flash, which its running
    app would not answer (issue 27); without one the chip waits in its bootloader for stm32flash."""
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    for args, says, not_says in (
        (["--image", "examples/stm32-lamp/prebuilt/lamp-1.0.bin"], "call Sys.Info", "stm32flash"),
        ([], "stm32flash -m 8n1", "call Sys.Info"),
    ):
        p = subprocess.Popen(
            [sys.executable, "-m", "bundle.cli", "sim", "stm32", *args], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            lines = []
            while not lines or "Ctrl-C" not in lines[-1]:
                lines.append(p.stdout.readline())
                assert lines[-1], lines
            text = "".join(lines)
            assert says in text and not_says not in text, text
        finally:
            p.terminate()
            p.wait(10)
