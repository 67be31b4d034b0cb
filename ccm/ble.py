"""RPC over BLE (docs/protocol.md, provisioning; the manual's third way to provision): Mongoose OS's
"RPC over GATT" service (mongoose-os-libs/rpc-gatts), so `mos --port ble://…`, its phone apps and
`ccm --port ble://…` speak to the module, on the same router as the UART, /rpc and MQTT.

    service  5f6d4f53-5f52-5043-5f53-56435f49445f  "_mOS_RPC_SVC_ID_"
    data     …-5f64-6174615f5f5f  read/write  a frame's bytes, in pieces: each write appends (up to the
                                              length announced on tx_ctl), each read gives the next
                                              MTU-2 bytes of the frame going out
    tx_ctl   …-5f74-785f63746c5f  write       the length of the frame about to be written, big-endian
                                              u32; it starts a frame anew (a half-written one is dropped)
    rx_ctl   …-5f72-785f63746c5f  read/notify the length of the frame waiting to be read (0: none);
                                              notified when one is ready; a read restarts it

One central at a time: another one is disconnected while a session is open. A connection opened while
the module is unprovisioned is a provisioning session, with the access point's rules for its whole
length (only wifi.* may be set; Config.Set/Save, Wifi.Scan, Sys.GetInfo). Once provisioned, a frame
must carry `"auth": {"user", "password"}` (the /rpc credentials) until one did on that connection; a
wrong password is answered -32003 with the reason, and the fifth ends the connection. The service
advertises (under `ble.name`, default the device id) while unprovisioned, and for `ble.window_s` after
a boot or a press of the provisioning button (provision.btn, shorter than its hold_ms) once provisioned;
outside that it is not seen.

A frame longer than rpc.max_frame_size is answered -32600 and its bytes are dropped; a connection lost
mid-frame drops the frame, never half-applies it. The module only loads this when `ble.enable`.
"""

import asyncio
import struct
from binascii import hexlify, unhexlify

from ccm import rpc
from ccm.compat import const, ticks_diff, ticks_ms, wait_ms
from ccm.files import read_json, write_json
from ccm.router import Caller, provisioning_caller

SERVICE = "5f6d4f53-5f52-5043-5f53-56435f49445f"
DATA = "5f6d4f53-5f52-5043-5f64-6174615f5f5f"
RX_CTL = "5f6d4f53-5f52-5043-5f72-785f63746c5f"
TX_CTL = "5f6d4f53-5f52-5043-5f74-785f63746c5f"

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IO_NO_INPUT_OUTPUT = const(3)
_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_ADV_INTERVAL_US = const(250000)
MAX_WRONG = 5  # wrong passwords on one connection before it is closed
MAX_BONDS = 8  # centrals whose bond is kept; the oldest goes first
_Flag = getattr(asyncio, "ThreadSafeFlag", asyncio.Event)  # MicroPython's may be set from the radio's events


class BleRpc:
    def __init__(self, router, config, provisioning, bluetooth=None, bonds_path=None):
        """`provisioning()`: True while unprovisioned. `bluetooth`: MicroPython's module, or the virtual
        board's stand-in (what Board.bluetooth() gives). `bonds_path`: where the pairing bonds are kept
        (files.BLE_BONDS on the board's filesystem; a factory reset removes it)."""
        if bluetooth is None:  # the module's own (and what pyright checks this file against)
            import bluetooth
        self.router = router
        router.status["ble"] = self.status
        self.config = config
        self.provisioning = provisioning
        self.limit = config.get("rpc.max_frame_size")
        self.name = config.get("ble.name") or config.get("device.id")
        self.ble = ble = bluetooth.BLE()
        ble.active(True)
        ble.config(gap_name=self.name)
        # LE Secure Connections, bonded, without MITM protection: a module has no display or keys
        ble.config(bond=True, le_secure=True, mitm=False, io=_IO_NO_INPUT_OUTPUT)
        self.bonds_path = bonds_path
        self.bonds = (read_json(bonds_path) if bonds_path else {}).get("bonds") or []  # [[type:key, value]]
        ble.irq(self._irq)
        uuid = bluetooth.UUID
        svc = (
            uuid(SERVICE),
            (
                (uuid(DATA), _FLAG_READ | _FLAG_WRITE),
                (uuid(RX_CTL), _FLAG_READ | _FLAG_NOTIFY),
                (uuid(TX_CTL), _FLAG_WRITE),
            ),
        )
        ((self.h_data, self.h_rx, self.h_tx),) = ble.gatts_register_services((svc,))
        ble.gatts_set_buffer(self.h_data, 512)
        ble.gatts_set_buffer(self.h_tx, 4)
        ble.gatts_write(self.h_rx, b"\0\0\0\0")
        self.conn = None  # the central of the open session
        self.caller = Caller("ble")  # set at each connection
        self.mtu = 23
        self.started = ticks_ms()
        self.advertising = False
        self.encrypted = False
        self._reset()
        self._incoming = []  # frames (bytes) waiting to be dispatched
        self._woken = _Flag()

    def _reset(self):
        self.expected = 0  # bytes of the frame being written (tx_ctl), 0: none
        self.buf = bytearray()
        self.sending = None  # the frame being read out
        self.offset = 0
        self.queue = []  # frames waiting for it
        self.authed = False
        self.wrong = 0

    # -- advertising: the provisioning window -------------------------------------------------------
    def open_window(self):
        """A press of the provisioning button: seen again for ble.window_s."""
        self.started = ticks_ms()
        self._woken.set()

    def window_open(self):
        if self.provisioning():
            return True
        return ticks_diff(ticks_ms(), self.started) < self.config.get("ble.window_s") * 1000

    def _advertise(self, on):
        if on == self.advertising:
            return
        self.advertising = on
        if not on:
            # None stops it (docs/library/bluetooth.rst); the 1.26 stubs type interval_us as int only
            self.ble.gap_advertise(None)  # pyright: ignore[reportArgumentType]
            return
        # flags and the complete local name (what mos's tools and apps pick a device by) in the advertising
        # data; the service's 128-bit UUID in the scan response
        adv = bytes((2, 0x01, 0x06)) + _field(0x09, self.name.encode()[:26])
        self.ble.gap_advertise(_ADV_INTERVAL_US, adv, resp_data=_field(0x07, _uuid128(SERVICE)))

    async def run(self):
        """Dispatch the frames that arrive and keep the advertising to the window, until cancelled."""
        try:
            while True:
                self._advertise(self.conn is None and self.window_open())
                while self._incoming:
                    conn, frame = self._incoming.pop(0)
                    await self._dispatch(conn, frame)
                self._woken.clear()
                try:
                    await wait_ms(self._woken.wait(), 1000)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.ble.active(False)

    # -- the radio's events (MicroPython runs them from the scheduler: no waiting here) ---------------
    def _irq(self, event, data):
        if event == _IRQ_GET_SECRET:  # the stack's bonds are ours to keep
            return self._get_secret(data[0], data[1], data[2])
        if event == _IRQ_SET_SECRET:
            return self._set_secret(data[0], data[1], data[2])
        if event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self.conn is not None:  # one session at a time: a second central is refused
                self.ble.gap_disconnect(conn)
                return
            self.conn = conn
            self.mtu = 23
            self._reset()
            self.caller = provisioning_caller("ble") if self.provisioning() else Caller("ble")
            self.encrypted = False
            self.advertising = False  # a connection ends advertising
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self._reset()  # a frame cut short is dropped, never dispatched
                self._woken.set()
        elif data[0] != self.conn:
            return None
        elif event == _IRQ_GATTS_WRITE:
            self._written(data[1])
        elif event == _IRQ_GATTS_READ_REQUEST:
            self._read(data[1])
        elif event == _IRQ_MTU_EXCHANGED:
            self.mtu = data[1]
        elif event == _IRQ_ENCRYPTION_UPDATE:
            self.encrypted = bool(data[1])
        return None

    # -- bonds: the stack hands them to us, we keep them on the filesystem --------------------------------
    def _get_secret(self, sec_type, index, key):
        prefix = "%d:" % sec_type
        if key is None:  # the index-th of this type
            found = [v for k, v in self.bonds if k.startswith(prefix)]
            return unhexlify(found[index]) if index < len(found) else None
        k = prefix + hexlify(bytes(key)).decode()
        for kk, v in self.bonds:
            if kk == k:
                return unhexlify(v)
        return None

    def _set_secret(self, sec_type, key, value):
        k = "%d:%s" % (sec_type, hexlify(bytes(key)).decode())
        self.bonds = [b for b in self.bonds if b[0] != k]
        if value is not None:
            self.bonds.append([k, hexlify(bytes(value)).decode()])
            self.bonds = self.bonds[-MAX_BONDS:]
        if self.bonds_path:
            try:
                write_json(self.bonds_path, {"bonds": self.bonds})
            except OSError as e:  # a full filesystem: bonded for this boot only
                print("ccm: ble: bonds not saved: %s" % e)
        return True

    def status(self):
        """Sys.GetInfo `ble`."""
        return {
            "advertising": self.advertising,
            "connected": self.conn is not None,
            "encrypted": self.encrypted,
            "bonds": len(self.bonds),
        }

    def _written(self, handle):
        value = self.ble.gatts_read(handle)
        if handle == self.h_tx:
            n = struct.unpack(">I", bytes(value[:4]))[0] if len(value) >= 4 else -1
            self.buf = bytearray()
            self.expected = 0
            if n > self.limit:
                msg = "frame too large: %d bytes, rpc.max_frame_size is %d" % (n, self.limit)
                self.send(rpc.encode_error(None, rpc.INVALID_REQUEST, msg))
            elif n > 0:
                self.expected = n
        elif handle == self.h_data:
            if not self.expected:
                return  # data without a length first: not a frame
            self.buf += value
            if len(self.buf) > self.expected:
                msg = "frame longer than the %d bytes announced on tx_ctl" % self.expected
                self._reset_frame()
                self.send(rpc.encode_error(None, rpc.INVALID_REQUEST, msg))
            elif len(self.buf) == self.expected:
                self._incoming.append((self.conn, bytes(self.buf)))
                self._reset_frame()
                self._woken.set()

    def _reset_frame(self):
        self.buf = bytearray()
        self.expected = 0

    def _read(self, handle):
        if handle == self.h_rx:
            self.offset = 0
            self.ble.gatts_write(self.h_rx, struct.pack(">I", len(self.sending) if self.sending else 0))
        elif handle == self.h_data:
            if self.sending is None:
                self.ble.gatts_write(self.h_data, b"")
                return
            # MTU-2, not MTU-1: a full MTU-1 read would make the client go on with a long read
            end = self.offset + max(self.mtu - 2, 1)
            self.ble.gatts_write(self.h_data, self.sending[self.offset : end])
            self.offset = min(end, len(self.sending))
            if self.offset >= len(self.sending):
                self.sending = None
                self._next()

    # -- frames out ----------------------------------------------------------------------------------
    def send(self, frame):
        """Queue a frame for the central: it learns of it through rx_ctl."""
        if self.conn is None:
            return
        if type(frame) is str:
            frame = frame.encode()
        if frame.endswith(b"\n"):
            frame = frame[:-1]
        self.queue.append(frame)
        if self.sending is None:
            self._next()

    def _next(self):
        if not self.queue or self.conn is None:
            self.ble.gatts_write(self.h_rx, b"\0\0\0\0")
            return
        self.sending = self.queue.pop(0)
        self.offset = 0
        n = struct.pack(">I", len(self.sending))
        self.ble.gatts_write(self.h_rx, n)
        try:
            # (conn_handle, value_handle, data): the 1.26 stubs leave conn_handle out
            self.ble.gatts_notify(self.conn, self.h_rx, n)  # pyright: ignore[reportCallIssue]
        except OSError:
            pass  # not subscribed, or gone: a central may also poll rx_ctl

    async def _dispatch(self, conn, frame):
        try:
            msg = rpc.parse(frame)
        except rpc.ParseError as e:
            self.send(rpc.encode_error(rpc.request_id(frame), e.code, str(e)))
            return
        if type(msg) is not dict:
            self.send(rpc.encode_error(None, rpc.INVALID_REQUEST, "invalid request: expected an object"))
            return
        why = self._authenticate(msg)
        if why is not None:
            self.send(rpc.encode_error(rpc.valid_id(msg), rpc.FORBIDDEN, "forbidden: " + why))
            if self.wrong >= MAX_WRONG:
                self.ble.gap_disconnect(conn)
            return
        me = self.name if "src" in msg or "tag" in msg else None  # mos's envelope, when the frame uses it
        reply = await self.router.answer(msg, self.caller, me)
        if reply is None or conn != self.conn:
            return
        self.send(reply)

    def _authenticate(self, msg):
        """None when the frame may be served; else why not. Once provisioned, the /rpc credentials
        (`auth`, once per connection) are asked for, unless rpc.auth.open."""
        auth = msg.pop("auth", None)
        if self.caller.methods is not None or self.authed or self.config.get("rpc.auth.open"):
            return None
        if type(auth) is not dict:
            return 'the module is provisioned: send the /rpc credentials once, "auth": {"user", "password"}'
        from ccm.digest import same

        user = self.config.get("rpc.auth.user")
        if same(str(auth.get("user")), user) and same(str(auth.get("password")), self.config.get("rpc.auth.password")):
            self.authed = True
            return None
        self.wrong += 1
        return "wrong user or password for %s (%d of %d tries)" % (self.name, self.wrong, MAX_WRONG)

    def stop(self):
        if self.conn is not None:
            self.ble.gap_disconnect(self.conn)
        self.ble.active(False)


def _field(kind, data):
    return bytes((len(data) + 1, kind)) + data


def _uuid128(s):
    """A 128-bit UUID as advertising data carries it: little-endian."""
    b = bytes.fromhex(s.replace("-", ""))
    return bytes(reversed(b))


async def serve(ccm):
    """RPC over BLE for the CCM's boot (Ccm.run_ble): the provisioning button opens its window."""
    from ccm.files import BLE_BONDS

    bonds = (ccm.fs_root() or "") + "/" + BLE_BONDS
    ccm.ble = ble = BleRpc(ccm.router, ccm.config, ccm.unprovisioned, ccm.board.bluetooth(), bonds)
    if ccm.provisioner is not None:
        ccm.provisioner.on_press.append(ble.open_window)
    try:
        await ble.run()
    finally:
        ccm.ble = None
        if ccm.provisioner is not None:
            ccm.provisioner.on_press.remove(ble.open_window)
