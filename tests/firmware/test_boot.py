"""Boot faults on the module's own runtime (issue 11, item 1): an optional part that fails to start is
reported and the link serves on; boots that keep failing end in safe mode. Portable (CPython + MicroPython)."""

import asyncio
import json
import os

from fwtest import FakeHost, scratch_path, uart_pair

from ccm import board, mqtt
from ccm.boot import SAFE_AFTER, BootGuard
from ccm.compat import sleep_ms_async
from ccm.main import Ccm, run_forever


class Board(board.Board):
    """Just enough of a board: a UART in memory, a directory for files, reboots that are counted."""

    arch = "test"
    fw_id = "test"
    mac = "00:00:00:00:00:00"

    def __init__(self, name, uart):
        self.fs_dir = scratch_path(name)
        try:
            os.mkdir(self.fs_dir)
        except OSError:
            pass
        self.config_path = self.fs_dir + "/conf.json"
        self.uart = uart
        self.boots = 0

    async def open_uart(self, config):
        self.boots += 1
        return self.uart

    def reboot(self):
        return True


def test_boot_guard_counts_failed_boots_and_a_lasting_boot_resets_it():
    g = BootGuard(scratch_path(""))
    g.healthy()
    for _ in range(SAFE_AFTER):
        assert g.begin() is None
        g.failed("MemoryError: memory allocation failed")
    why = g.begin()
    assert "%d boots in a row failed" % SAFE_AFTER in why and "MemoryError" in why
    g.healthy()
    assert g.begin() is None


async def test_a_cloud_that_cannot_start_is_reported_and_the_link_serves_on():
    ccm_end, host_end = uart_pair()
    board = Board("boot-cloud", ccm_end)
    BootGuard(board.fs_dir).healthy()  # earlier runs' unfinished boots count too: start from none
    cfg = {"mqtt": {"enable": True, "server": "broker.local:18S3"}}  # a typo (tests/test_boot_faults.py: TLS)
    task = asyncio.create_task(run_forever(board, cfg, switch=False))
    host = FakeHost(host_end)
    assert (await host.frame())["method"] == "Sys.Init"
    status = await host.frame()
    assert status["method"] == "Cloud.Status" and "18S3" in status["params"]["reason"], status
    host.write(b'{"id":1,"method":"Sys.GetInfo"}\n{"id":2,"method":"MQTT.Pub","params":{"topic":"t"}}\n')
    info = await host.frame()
    assert "port a number" in info["result"]["faults"]["cloud"] and info["result"]["cloud"]["connected"] is False
    assert (await host.frame())["error"]["code"] == -32001
    task.cancel()


async def test_a_fault_with_no_heap_left_to_tell_it_does_not_stop_the_part_starting_again():
    """On a full heap even the Cloud.Status telling the host why the cloud stopped can fail (MemoryError):
    the supervisor must still start the cloud again after its back-off (it used to end there, for good)."""
    ccm_end, _ = uart_pair()
    c = Ccm(Board("fault-heap", ccm_end), {})

    class NoHeapLink:
        def notify(self, method, params=None):
            raise MemoryError("memory allocation failed, allocating 144 bytes")

    c.link = NoHeapLink()
    runs = []

    async def cloud():
        runs.append(1)
        if len(runs) == 1:
            raise OSError("the broker is away")

    await asyncio.wait_for(c.supervise("cloud", cloud, backoff_ms=10), 5)
    assert len(runs) == 2  # the fault was said as far as the heap allowed, and cleared for the retry


async def test_boots_that_keep_failing_run_in_safe_mode_with_the_link_up():
    ccm_end, host_end = uart_pair()
    board = Board("boot-safe", ccm_end)
    BootGuard(board.fs_dir).healthy()
    with open(board.config_path, "w") as f:
        f.write(json.dumps({"device": {"id": "bad"}}))

    def setup(ccm):  # a saved setting that breaks every boot until safe mode leaves it out
        if ccm.safe_mode is None and ccm.config.get("device.id") == "bad":
            raise RuntimeError("device.id bad breaks the boot")

    task = asyncio.create_task(run_forever(board, None, switch=False, setup=setup))
    host = FakeHost(host_end)
    init = await host.frame()
    assert init["method"] == "Sys.Init" and "device.id bad" in init["params"]["safe_mode"]
    host.write(
        b'{"id":1,"method":"Config.Set","params":{"config":{"device":{"id":"good"}},"save":true,"reboot":true}}\n'
    )
    assert (await host.frame())["result"] is True
    init = await host.frame()
    assert init["method"] == "Sys.Init" and "safe_mode" not in init["params"], init
    assert init["params"]["device_id"] == "good"
    await sleep_ms_async(1)
    task.cancel()


async def test_a_reboot_lets_the_reply_the_will_and_the_disconnect_leave_first():
    """A module resets the moment Ccm.run() returns: by then the reply to Sys.Reboot is on the UART and
    the MQTT session has ended with the will and DISCONNECT (issue 26, item 8: machine.reset() cut them
    off, so the broker saw a dropped connection)."""
    from test_mqtt_session import Broker

    broker = Broker()
    ccm_end, host_end = uart_pair()
    b = Board("boot-reset", ccm_end)
    b.open_connection = broker.open_connection
    c = Ccm(b, {"device": {"id": "lw"}, "mqtt": {"enable": True, "server": "broker:1883"}})
    task = asyncio.create_task(c.run())
    host = FakeHost(host_end)
    assert (await host.frame())["method"] == "Sys.Init"
    for _ in range(2000):
        if c.mqtt is not None and c.mqtt.state == mqtt.CONNECTED:
            break
        await sleep_ms_async(5)
    host.write(b'{"id":7,"method":"Sys.Reboot","params":{"delay_ms":0}}\n')
    assert await task is True  # the reset: nothing more runs on a module
    assert b'"id":7' in host_end.rx.buf or any(f.get("id") == 7 for f in host.frames), "the reply"
    last = mqtt.encode_publish("lw/status", "offline", 0, True, 0) + mqtt.DISCONNECT_PACKET
    assert broker.streams[-1].sent.endswith(last), broker.streams[-1].sent[-40:]


async def test_what_the_board_could_not_do_with_the_uart_is_a_fault():
    ccm_end, host_end = uart_pair()
    b = Board("boot-uart-note", ccm_end)
    b.uart_note = "host.rpc.uart.fc_enable is set without rts_pin and cts_pin: no flow control"
    c = Ccm(b, {"device": {"id": "un"}})
    task = asyncio.create_task(c.run())
    host = FakeHost(host_end)
    assert (await host.frame())["method"] == "Sys.Init"
    host.write(b'{"id":1,"method":"Sys.GetInfo"}\n')
    info = await host.frame()
    assert info["result"]["faults"]["uart"] == b.uart_note
    task.cancel()
