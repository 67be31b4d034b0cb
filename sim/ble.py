"""The virtual module's Bluetooth LE: MicroPython's `bluetooth` API (the subset ccm/ble.py uses) on a Bumble
device, and the air it radiates into.

`VirtualRadio` is a Bumble `LocalLink` with the module's own controller on it, driven in this process by
`BLE` — the firmware's `bluetooth.BLE()` on the virtual board — and `centrals` more controllers, each
served as HCI over TCP on 127.0.0.1: what a phone, or `ccm --port ble://…` with `--hci` (the PC's BLE
dongle), attaches its Bluetooth host to. Everything between them is Bumble's real host stack — LE
advertising and scanning, connections, ATT/GATT with MTU exchange — with no radio.

`BLE` keeps MicroPython's semantics where the firmware depends on them (docs/library/bluetooth.rst; the
ESP32 port runs NimBLE with synchronous events): characteristic values live in a local database that
`gatts_write` sets and a client's read returns; a read first raises `_IRQ_GATTS_READ_REQUEST`, whose
handler may `gatts_write` the value that read then returns; a client's write stores the value (up to the
handle's buffer, 20 bytes unless `gatts_set_buffer` says otherwise) and then raises `_IRQ_GATTS_WRITE`.
"""

from __future__ import annotations

import asyncio
import json
import socket

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_READ_REQUEST = 4
_IRQ_MTU_EXCHANGED = 21
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
DEFAULT_BUFFER = 20  # MicroPython's default characteristic value size


class UUID:
    """bluetooth.UUID: a 16-bit number or a 128-bit UUID string."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return "%04X" % self.value if isinstance(self.value, int) else str(self.value)

    def __eq__(self, other):
        return isinstance(other, UUID) and str(self).lower() == str(other).lower()

    def __hash__(self):
        return hash(str(self).lower())


class VirtualRadio:
    """The module's controller and `centrals` others on one Bumble LocalLink; `hci(i)` is the transport
    spec of central i (tcp-client:127.0.0.1:PORT) for a Bluetooth host in another process."""

    def __init__(self, address: str, centrals: int = 2):
        self.address = address
        self.centrals = centrals
        self.hci_ports: list[int] = []
        self._socks = []
        for _ in range(centrals):  # bound now: the port a test is told is the one that is served
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            self._socks.append(s)
            self.hci_ports.append(s.getsockname()[1])
        self.link = None
        self.controller = None
        self.quiet = None  # the last BLE's shutdown, which the next one waits for
        self._transports = []
        self._controllers = []

    def hci(self, i: int = 0) -> str:
        return f"tcp-client:127.0.0.1:{self.hci_ports[i]}"

    async def start(self):
        """On the event loop the firmware runs on (once; the radio outlives reboots)."""
        if self.link is not None:
            return
        from bumble.controller import Controller
        from bumble.link import LocalLink
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        self.link = LocalLink()
        self.controller = Controller("module", link=self.link, public_address=self.address)
        for i, s in enumerate(self._socks):
            t = await open_tcp_server_transport_with_socket(s)
            self._transports.append(t)
            addr = "F1:00:00:00:00:%02X" % (i + 1)
            self._controllers.append(Controller("central-%d" % i, t.source, t.sink, self.link, addr))

    async def close(self):
        for t in self._transports:
            await t.close()
        self._transports = []


class BLE:
    """bluetooth.BLE() of the virtual module. One per boot (the board makes a fresh one, as a module's
    reset does); the radio and its link stay."""

    def __init__(self, radio: VirtualRadio, name: str = "ccm"):
        self.radio = radio
        self._name = name
        self._mtu = 256
        self._irq = None
        self._active = False
        self.device = None
        self._values = {}  # value handle -> bytes (the local database)
        self._buffers = {}  # value handle -> (size, append)
        self._chars = {}  # value handle -> bumble Characteristic
        self._conns = {}  # conn handle -> bumble Connection
        self._next = 1
        self._adv = None  # (adv_data, resp_data) while advertising
        self._security = {"bond": False, "le_secure": False, "mitm": False, "io": 3}
        self._tasks = set()
        self._powered = None
        self._services = []  # registered GATT services, added to the device as it powers on

    # -- power and settings ------------------------------------------------------------------------
    def active(self, on=None):
        if on is None:
            return self._active
        if on and not self._active:
            self._active = True
            self._powered = self._run(self._power_on())
        elif not on and self._active:
            self._active = False
            self.radio.quiet = self._run(self._shutdown())  # the next boot's BLE waits for it
        return self._active

    async def _power_on(self):
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        if self.radio.quiet is not None:  # the last boot's stack lets go of the controller first
            await asyncio.wait({self.radio.quiet})  # (not gather: cancelling this must not walk the chain)
        c = self.radio.controller
        self.device = Device(name=self._name, address=Address(self.radio.address), host=Host(c, AsyncPipeSink(c)))
        self.device.gatt_server.max_mtu = self._mtu
        self.device.on("connection", self._on_connection)
        self.device.keystore = _IrqKeyStore(self)  # bonds are the firmware's to keep (_IRQ_*_SECRET)
        self.device.pairing_config_factory = self._pairing_config
        for service in self._services:
            self.device.add_service(service)
        await self.device.power_on()

    async def _shutdown(self):
        """As a module's reset: connections dropped, advertising off, the stack gone."""
        # asyncio.wait, not gather: each power-on waits for the shutdown before it, which waits for its
        # power-on — with gather, cancelling the newest at a CCM's stop cancelled down the whole chain
        # recursively (RecursionError seen at the end of a full suite)
        await asyncio.wait({self._powered})
        for conn in list(self._conns.values()):
            try:
                await conn.disconnect()
            except Exception:
                pass
        try:
            await self.device.stop_advertising()
        except Exception:
            pass

    def config(self, *args, **kw):
        if args:
            if args[0] == "mac":
                return (0, bytes.fromhex(self.radio.address.replace(":", "")))
            if args[0] == "gap_name":
                return self._name
            if args[0] == "mtu":
                return self._mtu
            raise ValueError("unknown config param")
        if "gap_name" in kw:
            self._name = kw["gap_name"]
        for k in ("bond", "le_secure", "mitm", "io"):
            if k in kw:
                self._security[k] = kw[k]
        if "mtu" in kw:
            self._mtu = kw["mtu"]
            if self.device is not None:
                self.device.gatt_server.max_mtu = self._mtu
        return None

    def irq(self, handler):
        self._irq = handler

    def _pairing_config(self, connection):
        from bumble.pairing import PairingConfig, PairingDelegate

        sec = self._security
        io = PairingDelegate.IoCapability(sec["io"])  # MicroPython's _IO_CAPABILITY_* are HCI's numbers
        return PairingConfig(
            sc=bool(sec["le_secure"]),
            mitm=bool(sec["mitm"]),
            bonding=bool(sec["bond"]),
            delegate=PairingDelegate(io_capability=io),
            identity_address_type=PairingConfig.AddressType.RANDOM,  # NimBLE hands out its identity: a bond sticks
        )

    # -- advertising ---------------------------------------------------------------------------------
    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        if interval_us is None:
            self._adv = None
            self._run(self.device.stop_advertising())
            return
        self._adv = (bytes(adv_data or b""), bytes(resp_data or b""))
        self._run(self._advertise())

    async def _advertise(self):
        await self._powered  # (the services are in place by then)
        if self._adv is None:
            return
        if self.device.is_advertising:
            await self.device.stop_advertising()
        await self.device.start_advertising(advertising_data=self._adv[0], scan_response_data=self._adv[1])

    # -- GATT server ---------------------------------------------------------------------------------
    def gatts_register_services(self, services):
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        out = []
        for uuid, chars in services:
            handles = []
            made = []
            for uuid_c, flags in chars:
                h = self._next
                self._next += 1
                props = Characteristic.Properties(flags & 0xFF)
                perms = 0
                if flags & FLAG_READ:
                    perms |= Characteristic.READABLE
                if flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
                    perms |= Characteristic.WRITEABLE
                value = CharacteristicValue(read=self._reader(h), write=self._writer(h))
                c = Characteristic(str(uuid_c), props, perms, value)
                self._chars[h] = c
                self._values[h] = b""
                handles.append(h)
                made.append(c)
            svc = Service(str(uuid), made)
            self._services.append(svc)
            if self.device is not None:  # powered on already (else added as it powers on)
                self.device.add_service(svc)
            out.append(tuple(handles))
        return tuple(out)

    def _reader(self, h):
        def read(connection):
            if self._irq is not None:
                r = self._irq(_IRQ_GATTS_READ_REQUEST, (connection.handle, h))
                if r:
                    from bumble.att import ATT_Error

                    raise ATT_Error(r)
            return self._values[h]

        return read

    def _writer(self, h):
        def write(connection, value):
            size, append = self._buffers.get(h, (DEFAULT_BUFFER, False))
            value = bytes(value)
            self._values[h] = (self._values[h] + value)[-size:] if append else value[:size]
            if self._irq is not None:
                self._irq(_IRQ_GATTS_WRITE, (connection.handle, h))

        return write

    def gatts_read(self, h):
        return self._values[h]

    def gatts_write(self, h, data, send_update=False):
        self._values[h] = bytes(data)

    def gatts_set_buffer(self, h, size, append=False):
        self._buffers[h] = (size, append)

    def gatts_notify(self, conn_handle, h, data=None):
        conn = self._conns.get(conn_handle)
        if conn is None:
            raise OSError(128)  # ENOTCONN, as MicroPython raises it
        value = self._values[h] if data is None else bytes(data)
        self._run(self.device.notify_subscriber(conn, self._chars[h], value))

    def gap_disconnect(self, conn_handle):
        conn = self._conns.get(conn_handle)
        if conn is None:
            return False
        self._run(conn.disconnect())
        return True

    # -- events --------------------------------------------------------------------------------------
    def _on_connection(self, connection):
        self._conns[connection.handle] = connection
        addr = bytes(connection.peer_address)
        handle = connection.handle

        def on_mtu():
            if self._irq is not None:
                self._irq(_IRQ_MTU_EXCHANGED, (handle, connection.att_mtu))

        def on_disconnection(reason):
            self._conns.pop(handle, None)
            if self._irq is not None:
                self._irq(_IRQ_CENTRAL_DISCONNECT, (handle, 0, addr))

        def on_encryption():
            if self._irq is not None:
                keys = connection.authenticated
                bonded = self._security["bond"]
                self._irq(_IRQ_ENCRYPTION_UPDATE, (handle, bool(connection.is_encrypted), bool(keys), bool(bonded), 16))

        connection.on("connection_att_mtu_update", on_mtu)
        connection.on("connection_encryption_change", on_encryption)
        connection.on("disconnection", on_disconnection)
        if self._irq is not None:
            self._irq(_IRQ_CENTRAL_CONNECT, (handle, 0, addr))

    def _run(self, coro):
        """MicroPython's calls return at once; Bumble's are coroutines: run them on the firmware's loop."""
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def _done(self, t):
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            print("ble: %r" % t.exception())  # as the module's stack would log it


class _IrqKeyStore:
    """Bumble's KeyStore on the firmware's _IRQ_GET_SECRET / _IRQ_SET_SECRET: as on a module, the stack
    asks the firmware for bonds and hands it new ones to keep (ccm/ble.py keeps them in ble_bonds.json).
    A secret's value is the peer's name and keys, as JSON."""

    SEC_TYPE = 0

    def __init__(self, ble: BLE):
        self.ble = ble

    def _irq(self, event, data):
        return self.ble._irq(event, data) if self.ble._irq is not None else None

    async def get(self, name):
        from bumble.keys import PairingKeys

        v = self._irq(_IRQ_GET_SECRET, (self.SEC_TYPE, 0, name.encode()))
        return None if v is None else PairingKeys.from_dict(json.loads(bytes(v))["keys"])

    async def update(self, name, keys):
        value = json.dumps({"name": name, "keys": keys.to_dict()}).encode()
        self._irq(_IRQ_SET_SECRET, (self.SEC_TYPE, name.encode(), value))

    async def delete(self, name):
        self._irq(_IRQ_SET_SECRET, (self.SEC_TYPE, name.encode(), None))

    async def get_all(self):
        from bumble.keys import PairingKeys

        out = []
        i = 0
        while True:
            v = self._irq(_IRQ_GET_SECRET, (self.SEC_TYPE, i, None))
            if v is None:
                return out
            d = json.loads(bytes(v))
            out.append((d["name"], PairingKeys.from_dict(d["keys"])))
            i += 1

    async def delete_all(self):
        for name, _ in await self.get_all():
            await self.delete(name)

    async def get_resolving_keys(self):
        from bumble.keys import KeyStore

        return await KeyStore.get_resolving_keys(self)  # type: ignore[arg-type]


class BluetoothModule:
    """What `import bluetooth` is on the virtual board: BLE() on its radio, and UUID."""

    UUID = UUID
    FLAG_READ = FLAG_READ
    FLAG_WRITE = FLAG_WRITE
    FLAG_NOTIFY = FLAG_NOTIFY

    def __init__(self, radio: VirtualRadio, name: str):
        self.radio = radio
        self.name = name

    def BLE(self):  # noqa: N802 - MicroPython's name
        return BLE(self.radio, self.name)
