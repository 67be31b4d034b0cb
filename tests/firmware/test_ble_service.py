"""RPC over BLE (ccm/ble.py) on the module's own runtime: the GATT service's framing, pieces and rules run
on MicroPython as on CPython (the whole path over a real Bluetooth stack: tests/test_ble.py, on Bumble).
The radio here is a double with the ESP32 port's semantics: a local value per handle, a client's write
stored then _IRQ_GATTS_WRITE, a read raising _IRQ_GATTS_READ_REQUEST first (synchronous events, so the
handler's gatts_write is what that read returns). Portable (CPython + MicroPython)."""

import asyncio
import json
import struct

from ccm import config as config_mod
from ccm.ble import BleRpc
from ccm.config import Config
from ccm.router import Router

CONN = 7


class Radio:
    """bluetooth.BLE() as the firmware drives it, and what a central does to it."""

    def __init__(self):
        self.values = {}
        self.buffers = {}
        self.handler = None
        self.notified = []
        self.advertising = None
        self.dropped = []
        self.on = False

    # -- the firmware's side (MicroPython's API) --
    def BLE(self):  # noqa: N802 - the module's name
        return self

    def UUID(self, s):  # noqa: N802
        return s

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def config(self, **kw):
        self.cfg = kw

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        self.uuids = {}
        out = []
        h = 10
        for _svc, chars in services:
            hs = []
            for uuid, _flags in chars:
                self.values[h] = b""
                self.uuids[uuid] = h
                hs.append(h)
                h += 1
            out.append(tuple(hs))
        return tuple(out)

    def gatts_set_buffer(self, h, size, append=False):
        self.buffers[h] = size

    def gatts_read(self, h):
        return self.values[h]

    def gatts_write(self, h, data, send_update=False):
        self.values[h] = bytes(data)

    def gatts_notify(self, conn, h, data=None):
        self.notified.append((conn, h, bytes(data)))

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None):
        self.advertising = None if interval_us is None else (adv_data, resp_data)

    def gap_disconnect(self, conn):
        self.dropped.append(conn)
        return True

    # -- a central's side --
    def h(self, name):
        from ccm import ble

        return self.uuids[getattr(ble, name)]

    def connect(self, conn=CONN):
        self.handler(1, (conn, 0, b"\x01\x02\x03\x04\x05\x06"))

    def disconnect(self, conn=CONN):
        self.handler(2, (conn, 0, b"\x01\x02\x03\x04\x05\x06"))

    def mtu(self, n):
        self.handler(21, (CONN, n))

    def write(self, name, data):
        h = self.h(name)
        self.values[h] = bytes(data)[: self.buffers.get(h, 20)]
        self.handler(3, (CONN, h))

    def read(self, name):
        h = self.h(name)
        self.handler(4, (CONN, h))
        return self.values[h]

    def send(self, frame, piece=20, announced=None):
        self.write("TX_CTL", struct.pack(">I", len(frame) if announced is None else announced))
        for i in range(0, len(frame), piece):
            self.write("DATA", frame[i : i + piece])

    def receive(self):
        n = struct.unpack(">I", self.read("RX_CTL"))[0]
        out = b""
        while len(out) < n:
            chunk = self.read("DATA")
            assert chunk, "the module stopped at %d of %d bytes" % (len(out), n)
            out += chunk
        return out


class Wifi:
    def __init__(self, provisioned):
        self.provisioned = provisioned


async def session(provisioned=False, config=None):
    cfg = Config(config or {"rpc": {"auth": {"password": "s3cret-pass"}}})
    router = Router(cfg)
    config_mod.serve(router, cfg)
    router.add("Echo", lambda params, call: params)
    radio = Radio()
    wifi = Wifi(provisioned)
    svc = BleRpc(router, cfg, lambda: not wifi.provisioned, radio)
    task = asyncio.create_task(svc.run())
    await asyncio.sleep(0.01)
    return radio, svc, task


async def answer(radio, frame, piece=20):
    radio.send(frame if type(frame) is bytes else json.dumps(frame).encode(), piece)
    for _ in range(100):
        await asyncio.sleep(0.005)
        if struct.unpack(">I", radio.values[radio.h("RX_CTL")])[0]:
            return json.loads(radio.receive())
    raise AssertionError("no answer")


async def test_a_frame_in_pieces_is_answered_in_pieces_of_the_mtu_and_notified():
    radio, svc, task = await session()
    try:
        assert radio.advertising is not None  # unprovisioned: seen
        name = radio.advertising[0]
        assert name[-len(b"ccm-000000") :] == b"ccm-000000"
        radio.connect()
        radio.mtu(50)
        big = {"text": "é" * 200, "n": list(range(50))}
        r = await answer(radio, {"id": 3, "method": "Sys.GetInfo"}, piece=17)
        assert r["id"] == 3 and r["result"]["device_id"] == "ccm-000000"
        assert radio.notified and radio.notified[-1][0] == CONN  # rx_ctl notified with the length
        r = await answer(
            radio, {"id": 4, "method": "Config.Set", "params": {"config": {"wifi": {"sta": {"ssid": "X"}}}}}
        )
        assert r["result"] is True  # wifi.* while unprovisioned
        r = await answer(radio, {"id": 5, "method": "Echo", "params": big}, piece=47)
        assert r["error"]["code"] == -32003  # the AP's four methods only
        radio.disconnect()
    finally:
        task.cancel()


async def test_once_provisioned_the_password_is_asked_once_per_connection():
    radio, svc, task = await session(provisioned=True)
    try:
        radio.connect()
        radio.mtu(100)
        r = await answer(radio, {"id": 1, "method": "Echo", "params": [1]})
        assert r["error"]["code"] == -32003 and "credentials" in r["error"]["message"]
        r = await answer(
            radio, {"id": 2, "method": "Echo", "params": [1], "auth": {"user": "admin", "password": "nope"}}
        )
        assert r["error"]["code"] == -32003 and "wrong user or password" in r["error"]["message"]
        auth = {"user": "admin", "password": "s3cret-pass"}
        big = {"text": "é" * 300}
        r = await answer(radio, {"id": 3, "method": "Echo", "params": big, "auth": auth}, piece=97)
        assert r["result"] == big
        r = await answer(radio, {"id": 4, "method": "Echo", "params": [2]})  # no auth again: this connection has
        assert r["result"] == [2]
        radio.disconnect()
        radio.connect()
        r = await answer(radio, {"id": 5, "method": "Echo", "params": [3]})  # a new connection asks again
        assert r["error"]["code"] == -32003
    finally:
        task.cancel()


async def test_oversize_frames_and_frames_cut_short_are_dropped_and_the_link_goes_on():
    radio, svc, task = await session()
    try:
        radio.connect()
        radio.write("TX_CTL", struct.pack(">I", 100000))
        await asyncio.sleep(0.01)
        r = json.loads(radio.receive())
        assert r["error"]["code"] == -32600 and "frame too large" in r["error"]["message"]
        frame = json.dumps({"id": 1, "method": "Config.Set", "params": {"config": {"wifi": {"sta": {"ssid": "Y"}}}}})
        radio.write("TX_CTL", struct.pack(">I", len(frame)))
        radio.write("DATA", frame[:20].encode())
        radio.disconnect()  # half a frame, then the central is gone
        await asyncio.sleep(0.01)
        assert svc.config.get("wifi.sta.ssid") == ""
        radio.connect()
        r = await answer(radio, b"{not json", piece=5)
        assert r["error"]["code"] == -32700
        r = await answer(radio, {"id": 9, "method": "Sys.GetInfo"})
        assert r["id"] == 9
    finally:
        task.cancel()


async def test_one_central_at_a_time_and_no_advertising_outside_the_window():
    radio, svc, task = await session(provisioned=True, config={"ble": {"window_s": 0}})
    try:
        await asyncio.sleep(0.02)
        assert radio.advertising is None  # provisioned, window 0: not seen
        radio.connect(CONN)
        radio.connect(CONN + 1)
        assert radio.dropped == [CONN + 1]  # a second central is refused
        assert svc.conn == CONN
    finally:
        task.cancel()
