"""What follows an upload or a download (ccm/ota/receiver.py): the bundle checked, then handed to the
applier for its platform. Loaded only then — the receiver alone is what an upload holds in the heap —
and dropped with the update's other helpers when it ends.

The check goes in three steps, each with only its own code loaded (the directory reader, the P-256
code, the reader again): on a plain ESP32 the three do not fit together beside the running firmware.
"""

import os

from ccm import FW_VERSION, rpc
from ccm.compat import sleep_ms_async, unload
from ccm.files import remove
from ccm.ota.states import PROGRESS, SUCCESS, OtaError, drop_helpers
from ccm.ota.steps import paced

CHECKER = ("ccm.ota.bundle", "ccm.ota.zipread", "ccm.ota.p256")


async def check_and_apply(rec, at_boot=False):
    """Check the staged bundle, then apply it in the background (at boot: before returning)."""
    rec._stage("verifying", 0, "checking the bundle")
    rec._save({"stage": "verifying"})
    await sleep_ms_async(0)
    try:
        platform, version, signed = _manifest(rec)
        required = rec.config.get("ota.require_signature", False)
        if required or rec.config.get("ota.pubkey"):
            _check_signature(rec, signed, required)
        with open(rec.bundle_path, "rb") as f:
            await paced(_bundle(rec, f).parts_steps())
        unload(*CHECKER)  # the applier opens it again: until then, the heap has room for its choice
    except (OtaError, OSError, ValueError) as e:  # a BundleError is a ValueError
        rec._fail("bad bundle: %s; nothing was applied" % e)
        drop_helpers()
        raise rpc.RpcError(rpc.INVALID_PARAMS, rec.message) from None
    except MemoryError as e:  # said, and OTA.End answered: the link and the next try go on
        rec._fail("out of memory while checking the bundle (%s); nothing was applied" % e)
        drop_helpers()
        raise rpc.RpcError(rpc.INTERNAL_ERROR, rec.message) from None
    if rec.version is None:
        rec.version = version
    if at_boot:
        await apply_staged(rec, platform, version)
    else:
        rec.spawn(apply_staged(rec, platform, version))
    return {"state": PROGRESS, "version": version, "platform": platform}


async def check_resumed(rec, job):
    """The check (and apply) a reboot left to this boot: what the job saved, then as after OTA.End."""
    rec.version = job.get("version")
    rec.commit_timeout = job.get("commit_timeout") or 0
    rec._url = job.get("url")
    rec._retry = job.get("retry")
    try:
        await check_and_apply(rec, True)
    except rpc.RpcError:
        pass  # the state says why


def _bundle(rec, f):
    from ccm.ota.bundle import Bundle

    return Bundle(f, os.stat(rec.bundle_path)[6])


def _manifest(rec):
    """The bundle's platform (checked), version, and what its signature covers: the manifest's bytes
    and signatures. The directory reader goes after it."""
    try:
        with open(rec.bundle_path, "rb") as f:
            b = _bundle(rec, f)
            b.check_platform(list(rec.appliers))
            return b.manifest["platform"], b.manifest.get("version"), (b.manifest_bytes, b.signatures())
    finally:
        b = None
        unload(*CHECKER)


def _check_signature(rec, signed, required):
    """The manifest is signed by ota.pubkey (ccm/ota/p256.py, loaded for this only), or OtaError."""
    from ccm.ota import p256

    try:
        p256.check_signed(signed[0], signed[1], _pubkey(rec, p256), required)
    except p256.SignatureError as e:
        raise OtaError(str(e)) from None
    finally:
        unload("ccm.ota.p256")


def _pubkey(rec, p256):
    path = rec.config.get("ota.pubkey")
    if not path:
        return None
    path = rec._on_fs(path)
    try:
        with open(path) as f:
            return p256.public_key_from_pem(f.read())
    except OSError:
        raise OtaError("cannot read the public key %s (ota.pubkey)" % path) from None
    except p256.SignatureError as e:
        raise OtaError("%s (ota.pubkey %s)" % (e, path)) from None


async def apply_staged(rec, platform, version):
    """Hand the checked bundle to its platform's applier; the outcome is the receiver's status."""
    rec.state = PROGRESS
    rec._stage("applying", 0, "applying %s %s" % (platform, version))
    rec._save({"stage": "applying", "platform": platform, "version": version})

    def progress(stage, done, total):
        if stage != rec.stage:
            rec._stage(stage, 0, "")
        rec.progress = done * 100 // total if total else 100
        rec._notify()

    try:
        with open(rec.bundle_path, "rb") as f:  # opened by the applier, which holds it alone
            fn = rec.appliers[platform]
            if type(fn) is str:  # a module's apply(): ccm/ota/apply.py, stage.py
                fn = __import__(fn, None, None, ("apply",)).apply
            message = await fn(lambda: _bundle(rec, f), progress, rec)
    except (OtaError, OSError, ValueError) as e:  # a BundleError is a ValueError
        rec._fail("%s" % e)
        return
    except Exception as e:  # noqa: BLE001 - the flasher's own errors carry their reason
        rec._fail("%s: %s" % (type(e).__name__, e))
        return
    finally:
        drop_helpers()
    if platform == "esp32":  # staged: kept only if its trial ends in a commit (ccm/ota/reboot.py)
        prev = rec.installed.get("esp32") or FW_VERSION
        rec.trial = {"version": version, "previous": prev, "previous_url": rec.current_url, "retry": rec._retry}
    rec.installed[platform] = version
    rec.current = version
    rec.current_url = rec._url
    rec._url = None
    remove(rec.bundle_path)
    rec.stage = "done"
    rec._set(SUCCESS, message or "updated to %s" % version, 100)
    rec._save()
