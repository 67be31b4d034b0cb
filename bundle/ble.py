"""`ccm --port ble://DEVICE` (docs/protocol.md, provisioning): JSON-RPC to a module over BLE, through its
RPC-over-GATT service (ccm/ble.py; Mongoose OS's rpc-gatts), from the PC's own Bluetooth host — Bumble,
on the controller `--hci` names: a USB dongle (`usb:0`, the default), a serial HCI controller
(`serial:/dev/ttyACM0`), or the virtual module's air (`tcp-client:127.0.0.1:PORT`, what `ccm sim ccm
--ble` prints).

    ble://ccm-a1b2c3              the module advertising that name (its device id, or ble.name)
    ble://F0:12:34:56:78:9A       by address
    ble://admin:PASSWORD@ccm-a1b2c3   with the /rpc credentials, sent once (once provisioned they are asked for)

The link is encrypted first: LE Secure Connections pairing ("Just Works": a module has no display), the
bond kept on both sides — here in a JSON key store ($CCM_BLE_KEYS, else Bumble's per-user one) — so the
next connection encrypts with it; a module that forgot it (a factory reset) is paired with anew.

A frame goes out as its length on tx_ctl, then its bytes on data in pieces of MTU-3; the answer is
announced by a notification of rx_ctl (polled too) and read from data in pieces of up to MTU-2, until the
announced length is in.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from typing import Any

from bundle.transport import PortError
from ccm.ble import DATA, RX_CTL, SERVICE, TX_CTL  # the service's UUIDs, as the module serves them

DEFAULT_HCI = "usb:0"


def hci_transport(hci: str | None = None) -> str:
    """--hci, else $CCM_BLE_HCI, else the first USB Bluetooth dongle."""
    return hci or os.environ.get("CCM_BLE_HCI") or DEFAULT_HCI


class BleRpc:
    """Calls over BLE to ble://[USER:PASSWORD@]NAME-OR-ADDRESS, one at a time, with a sync API (its
    Bluetooth host runs on an event loop of its own, in a thread)."""

    def __init__(
        self,
        url: str,
        hci: str | None = None,
        user: str = "admin",
        password: str | None = None,
        timeout: float = 10.0,
        pair: bool = True,
    ):
        from pc.net import url_credentials

        bare, user_in, password_in = url_credentials(url if url.startswith("ble://") else "ble://" + url)
        self.target = bare.removeprefix("ble://").strip("/")
        self.user = user_in or user
        self.password = password_in if password_in is not None else password
        self.hci = hci_transport(hci)
        self.pair = pair
        self.paired = None  # "paired" (a new bond) or "bonded" (encrypted with a kept one), once encrypted
        self.ids = 0
        self.authed = False
        self.mtu = 23
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ble", daemon=True)
        self._thread.start()
        self._notified: asyncio.Queue | None = None
        self.timeout = timeout
        try:
            self._run(self._open(), 2 * timeout + 5)
        except TimeoutError:  # e.g. a connection that never came up, and whose cancel found no controller
            self.close()
            raise PortError(
                f"cannot connect to {self.target} over BLE within {timeout:g} s: out of range, or busy with "
                "another central"
            ) from None
        except Exception:
            self.close()
            raise

    # -- the event loop ------------------------------------------------------------------------------
    def _run(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return fut.result(timeout + 1)
        except TimeoutError:
            fut.cancel()
            raise

    async def _open(self):
        from bumble.core import UUID, AdvertisingData
        from bumble.device import Device, Peer
        from bumble.hci import Address
        from bumble.transport import open_transport

        try:
            self.transport = await open_transport(self.hci)
        except Exception as e:
            raise PortError(
                f"cannot open the Bluetooth controller {self.hci}: {e}. Plug in a BLE dongle, or give --hci "
                "(e.g. tcp-client:127.0.0.1:PORT, what `ccm sim ccm --ble` prints)"
            ) from None
        self.device = Device.with_hci(
            "ccm-cli", Address("F2:00:00:00:00:01"), self.transport.source, self.transport.sink
        )
        if self.pair:
            from bumble.keys import JsonKeyStore
            from bumble.pairing import PairingConfig, PairingDelegate

            self.device.keystore = JsonKeyStore("ccm-cli", os.environ.get("CCM_BLE_KEYS"))
            io = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
            self.device.pairing_config_factory = lambda c: PairingConfig(
                sc=True,
                mitm=False,
                bonding=True,
                delegate=PairingDelegate(io_capability=io),
                identity_address_type=PairingConfig.AddressType.RANDOM,  # the address it connects from
            )
        await self.device.power_on()
        address = self.target if _is_address(self.target) else await self._scan(AdvertisingData)
        try:
            self.connection = await self.device.connect(address, timeout=self.timeout)
        except Exception as e:  # a module in a session with another central does not advertise
            why = str(e) or type(e).__name__
            raise PortError(
                f"cannot connect to {self.target} over BLE ({why}): out of range, or busy with another central"
            ) from None
        if self.pair:
            await self._encrypt()
        self._notified = asyncio.Queue()
        peer = Peer(self.connection)
        self.mtu = await peer.request_mtu(247)
        await peer.discover_services([UUID(SERVICE)])
        services = peer.get_services_by_uuid(UUID(SERVICE))
        if not services:
            raise PortError(f"{self.target} has no RPC-over-GATT service: is ble.enable set on it?")
        await services[0].discover_characteristics()
        chars = {str(c.uuid).lower(): c for c in services[0].characteristics}
        try:
            self.data, self.rx, self.tx = chars[DATA], chars[RX_CTL], chars[TX_CTL]
        except KeyError:
            raise PortError(f"{self.target}: the RPC service lacks a characteristic (not mos's rpc-gatts?)") from None
        await self.rx.discover_descriptors()
        await self.rx.subscribe(lambda v: self._notified.put_nowait(bytes(v)))

    async def _encrypt(self):
        """With the kept bond if there is one, else by pairing (and keeping the new bond)."""
        name = str(self.connection.peer_address)
        if await self.device.keystore.get(name) is not None:
            try:
                await asyncio.wait_for(self.connection.encrypt(), self.timeout)
                self.paired = "bonded"
                return
            except Exception:  # the module forgot us (a factory reset): pair anew
                await self.device.keystore.delete(name)
                if self.connection.is_encrypted:
                    return
        try:
            await asyncio.wait_for(self.connection.pair(), self.timeout)
        except Exception as e:
            raise PortError(f"pairing with {self.target} failed: {str(e) or type(e).__name__}") from None
        self.paired = "paired"

    async def _scan(self, AdvertisingData):  # noqa: N803 - the class, imported with bumble
        found = asyncio.get_running_loop().create_future()

        def on_advertisement(adv):
            name = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or adv.data.get(
                AdvertisingData.SHORTENED_LOCAL_NAME
            )
            if name is not None and not found.done():
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name == self.target:
                    found.set_result(adv.address)

        self.device.on("advertisement", on_advertisement)
        await self.device.start_scanning()
        try:
            return await asyncio.wait_for(found, self.timeout)
        except TimeoutError:
            raise PortError(
                f"no BLE device named {self.target} in range: is it powered, with ble.enable, and in its "
                "provisioning window (unprovisioned, or within ble.window_s of a boot)?"
            ) from None
        finally:
            await self.device.stop_scanning()

    # -- calls ---------------------------------------------------------------------------------------
    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        from ccm.rpc import RpcError

        self.ids += 1
        frame: dict = {"id": self.ids, "method": method}
        if params is not None:
            frame["params"] = params
        if self.password and not self.authed:
            frame["auth"] = {"user": self.user, "password": self.password}
        try:
            reply = self._run(self._call(json.dumps(frame).encode(), self.ids), timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer from {self.target} over BLE within {timeout:g} s") from None
        if "error" in reply:
            e = reply["error"]
            raise RpcError(e.get("code", -32603), e.get("message"), e.get("data"))
        self.authed = self.authed or "auth" in frame
        return reply.get("result")

    def send_frame(self, data: bytes, announced: int | None = None, timeout: float = 10.0) -> dict:
        """Write raw bytes as one frame (`announced`: the length told on tx_ctl, if not theirs) and return
        the next frame the module sends: for tests of what a broken client does."""
        return self._run(self._call(data, None, announced), timeout)

    async def _call(self, data: bytes, rid, announced: int | None = None) -> dict:
        while not self._notified.empty():
            self._notified.get_nowait()
        await self.tx.write_value(struct.pack(">I", len(data) if announced is None else announced), with_response=True)
        piece = max(self.mtu - 3, 20)
        for i in range(0, len(data), piece):
            await self.data.write_value(data[i : i + piece], with_response=True)
        while True:
            reply = json.loads(await self._receive())
            if rid is None or reply.get("id") in (rid, None):
                return reply

    async def _receive(self) -> bytes:
        try:
            n = struct.unpack(">I", (await asyncio.wait_for(self._notified.get(), 1.0))[:4])[0]
        except TimeoutError:
            n = 0
        while not n:  # no notification (or none subscribed): poll rx_ctl as mos's tools do
            n = struct.unpack(">I", bytes(await self.rx.read_value())[:4])[0]
            if not n:
                await asyncio.sleep(0.05)
        out = b""
        while len(out) < n:
            chunk = bytes(await self.data.read_value())
            if not chunk:
                raise PortError(f"{self.target} stopped sending a {n}-byte frame at byte {len(out)}")
            out += chunk
        return out

    def disconnect(self) -> None:
        """Drop the connection (as a phone walking away would), keeping the host."""
        self._run(self.connection.disconnect(), 5)

    def close(self) -> None:
        async def shut():
            try:
                if getattr(self, "connection", None) is not None:
                    await self.connection.disconnect()
            except Exception:
                pass
            t = getattr(self, "transport", None)
            if t is not None:
                await t.close()

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()


def _is_address(s: str) -> bool:
    parts = s.split(":")
    return len(parts) == 6 and all(len(p) == 2 for p in parts)
