"""The OTA receiver's core, on CPython and on MicroPython: the zip reader (stored and deflated), the
bundle checks, P-256 signatures made by `cryptography`, and mos's write rules (a repeated chunk is
accepted, a gap or an overlap refused, End before all bytes refused)."""

import asyncio
import binascii
import io
import os

import ota_vectors as vec
from fwtest import raises, scratch_path

from ccm import rpc
from ccm.config import Config
from ccm.files import read_json
from ccm.ota import p256
from ccm.ota.bundle import Bundle, BundleError
from ccm.ota.receiver import ERROR, IDLE, PROGRESS, SUCCESS, OtaReceiver
from ccm.ota.states import idle_status


def blob(text):
    return binascii.a2b_base64(text.encode())  # one str: joining it char by char took 70 KB on MicroPython


def opened(data):
    return Bundle(io.BytesIO(data), len(data))


def test_a_stored_bundle_is_read_and_its_part_checked():
    b = opened(blob(vec.STORED))
    assert b.manifest["platform"] == "ccm_host" and b.manifest["version"] == "2.0"
    assert b.parts["host_fw"]["addr"] == 0x08000000
    out = io.BytesIO()
    assert b.copy_part("host_fw", out) == vec.FIRMWARE_LEN
    assert out.getvalue()[:3] == bytes([7, 38, 69])
    b.check(["ccm_host"])


def test_a_deflated_part_inflates_with_its_small_window():
    b = opened(blob(vec.DEFLATED))
    assert b.parts["host_fw"]["zwbits"] == 12
    out = io.BytesIO()
    assert b.copy_part("host_fw", out) == vec.FIRMWARE_LEN
    assert out.getvalue() == _part(blob(vec.STORED))


def _part(data):
    out = io.BytesIO()
    opened(data).copy_part("host_fw", out)
    return out.getvalue()


def test_a_flipped_byte_is_found():
    data = bytearray(blob(vec.STORED))
    data[len(data) // 2] ^= 0x01  # inside the part's bytes
    e = raises(BundleError, opened(bytes(data)).check, ["ccm_host"])
    assert "CRC-32" in str(e) or "SHA-256" in str(e)


def test_wrong_platform_and_truncation_are_refused_with_the_reason():
    e = raises(BundleError, opened(blob(vec.STORED)).check, ["esp32"])
    assert "platform 'ccm_host'" in str(e)
    data = blob(vec.STORED)
    assert "not a firmware bundle" in str(raises(BundleError, opened, data[:-40]))


def test_signature_made_by_cryptography_verifies_and_a_wrong_key_does_not():
    pub = p256.public_key_from_pem(vec.PUBKEY_PEM)
    signed = opened(blob(vec.SIGNED))
    assert len(signed.signatures()) == 1
    signed.check(["ccm_host"], pub, True)
    unsigned = opened(blob(vec.STORED))
    assert "not signed" in str(raises(BundleError, unsigned.check, ["ccm_host"], pub, True))
    other = (p256.GX, p256.GY)  # the generator as a public key: a valid point, the wrong key
    assert "bad signature" in str(raises(BundleError, signed.check, ["ccm_host"], other, True))
    assert "no public key" in str(raises(BundleError, signed.check, ["ccm_host"], None, True))


def _receiver(applied):
    root = scratch_path("rcv")
    try:
        os.mkdir(root)
    except OSError:
        pass

    async def apply(open_bundle, progress, receiver):
        bundle = open_bundle()
        out = io.BytesIO()
        bundle.copy_part("host_fw", out)
        applied.append(len(out.getvalue()))
        return "applied"

    return OtaReceiver(Config(), root, {"ccm_host": apply}, asyncio.create_task)


async def _settle(r):
    for _ in range(200):
        if r.state != PROGRESS:
            return
        await asyncio.sleep(0.01)


async def test_receiver_takes_mos_chunks_with_retries_and_applies():
    applied = []
    r = _receiver(applied)
    data = blob(vec.STORED)
    r.begin(len(data))
    assert raises(rpc.RpcError, r.begin, 10).code == rpc.BUSY  # one update at a time
    for off in range(0, len(data), 512):
        r.write(off, data[off : off + 512])
        r.write(off, data[off : off + 512])  # mos resends a chunk whose answer it lost
    result = await r.end()
    assert result["version"] == "2.0"
    await _settle(r)
    assert r.state == SUCCESS and applied == [vec.FIRMWARE_LEN]
    assert r._status_rpc(None, None)["state"] == SUCCESS
    st = r._status_rpc(None, None)
    assert st["state"] == IDLE and st["last"]["state"] == SUCCESS  # so `mos ota` can run again


async def test_status_without_a_receiver_is_what_a_receiver_loaded_now_answers():
    """ccm/main.py answers OTA.Status with idle_status while no receiver is loaded (a client polls it
    across the reboot into its update): after an update, the answer a receiver loaded from the same
    ota/state.json gives, the outcome and what is installed included."""
    r = _receiver([])
    data = blob(vec.STORED)
    r.begin(len(data))
    for off in range(0, len(data), 512):
        r.write(off, data[off : off + 512])
    await r.end()
    await _settle(r)
    loaded = OtaReceiver(Config(), r.root, {}, asyncio.create_task)  # the same folder, as at a later boot
    saved = read_json(loaded.state_path)
    assert idle_status(saved) == loaded._status_rpc(None, None)
    assert saved["last"]["state"] == SUCCESS and idle_status(saved)["installed"] == {"ccm_host": "2.0"}


async def test_gaps_overlaps_and_an_early_end_are_refused_and_space_freed():
    r = _receiver([])
    data = blob(vec.STORED)
    r.begin(len(data))
    r.write(0, data[:512])
    assert "gap" in raises(rpc.RpcError, r.write, 1024, data[1024:1536]).message
    r.write(512, data[512:1024])
    assert "overlap" in raises(rpc.RpcError, r.write, 256, data[256:768]).message
    assert "other data" in raises(rpc.RpcError, r.write, 512, data[:512]).message
    try:
        await r.end()
        raise AssertionError("End before all bytes must fail")
    except rpc.RpcError as e:
        assert "truncated" in e.message
    assert r.state == ERROR and "1024 of" in r.message
    assert raises(OSError, os.stat, r.bundle_path)  # the staging space is freed


async def test_a_corrupt_upload_is_refused_at_end_and_nothing_applied():
    applied = []
    r = _receiver(applied)
    data = bytearray(blob(vec.STORED))
    data[-300] ^= 0xFF
    r.begin(len(data))
    r.write(0, bytes(data))
    try:
        await r.end()
        raise AssertionError("a corrupt bundle must be refused")
    except rpc.RpcError as e:
        assert "bad bundle" in e.message
    assert r.state == ERROR and applied == []
