"""Pulled updates (docs/protocol.md, OTA): OTA.Update's, the shadow's `desired.ota` and the poll of
`ota.poll_url` — the bundle downloaded over HTTP(S) into the receiver's staging file, then checked and
applied as a pushed one. The receiver's (ccm/ota/receiver.py) other half, loaded only when an update is
pulled or a trigger (the shadow, the poll) asks whether one is wanted: a module updated by push never
holds it, nor does an upload.
"""

import json

from ccm import rpc
from ccm.compat import sleep_ms_async
from ccm.ota.fetch import FetchError, fetch, split_url
from ccm.ota.states import PROGRESS, drop_helpers


def update_rpc(rec, params, call):
    """OTA.Update {url, commit_timeout?, version?}: checked, then pulled and applied in the background."""
    p = rpc.take(params, url=(str, rpc.REQUIRED), commit_timeout=(int, 0), version=((str, None), None))
    if p["commit_timeout"] < 0:
        raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: commit_timeout is whole seconds")
    try:
        split_url(p["url"])
    except FetchError as e:
        raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: %s" % e) from None
    rec._check_idle()
    rec.spawn(update(rec, p["url"], p["commit_timeout"], p["version"]))
    return True


def start(rec, url, commit_timeout_s=0, version=None, retry=None):
    """Pull and apply `url` in the background (the shadow's and the poll's trigger)."""
    rec.spawn(update(rec, url, commit_timeout_s, version, url, retry))


def wanted(rec, version):
    """False when `version` is already installed (a trigger must not apply it again)."""
    return version is None or version not in rec.installed.values()


def held_back(rec, version, retry=None):
    """True when `version` is the self-update that was rolled back and no new `retry` value asks for it
    again: a trigger must not apply it (no update loops)."""
    rb = rec.rolled_back
    return rb is not None and version == rb["version"] and retry == rb.get("retry")


def note_installed(rec, version, url):
    """A trigger found `version` (from `url`) already installed: what reported.ota says runs."""
    rec.current = version
    rec.current_url = url


async def update(rec, url, commit_timeout_s=0, version=None, source_url=None, retry=None):
    """Pull a bundle from `url` into the receiver `rec`, then check and apply it."""
    rec._check_idle()
    rec._cleanup()
    rec.version = version
    rec._retry = retry
    rec._url = source_url or url
    rec.commit_timeout = commit_timeout_s
    rec.state = PROGRESS
    rec._stage("downloading", 0, url)
    rec._save({"stage": "downloading"})
    if url.startswith("https:") and rec.clock is not None and not await rec.clock(3):
        rec._fail(
            "download failed: the clock is not set (%s), so %s's certificate cannot be checked"
            % ("SNTP does not answer" if rec.config.get("sntp.enable") else "sntp.enable is false", url)
        )
        drop_helpers()
        return

    def progress(done, total):
        rec.received = done
        if total:
            rec.progress = done * 100 // total
            rec._notify()

    try:
        with open(rec.bundle_path, "wb") as f:
            rec.size = await fetch(
                url,
                f,
                progress,
                rec.config.get("ota.fetch_stall_s", 10) * 1000,
                rec._free(),
                rec._on_fs(rec.config.get("ota.ssl_ca_cert")) or None,
                opener=rec.opener,
                insecure=rec.config.get("ota.ssl_insecure", False),
            )
    except FetchError as e:
        rec._fail("download failed: %s" % e)
        drop_helpers()
        return
    except OSError as e:
        rec._fail("download failed: cannot write the bundle: %s" % e)
        drop_helpers()
        return
    try:
        await rec._check_and_apply()
    except rpc.RpcError:
        pass  # the state says why


async def poll(rec, url, interval_s):
    """The manual's "periodically poll a given URL": the URL gives {version, url}; a version not
    installed yet is pulled and applied."""
    while True:
        if rec.state != PROGRESS:
            buf = _Buffer(4096)
            try:
                if url.startswith("https:") and rec.clock is not None and not await rec.clock(3):
                    raise FetchError("the clock is not set: %s's certificate cannot be checked" % url)
                await fetch(
                    url,
                    buf,
                    None,
                    10000,
                    4096,
                    rec._on_fs(rec.config.get("ota.ssl_ca_cert")) or None,
                    opener=rec.opener,
                    insecure=rec.config.get("ota.ssl_insecure", False),
                )
                doc = json.loads(buf.data)
                v = doc.get("version")
                target = doc.get("url")
                if type(target) is str and wanted(rec, v) and not held_back(rec, v):
                    if "://" not in target:
                        target = url.rsplit("/", 1)[0] + "/" + target
                    await update(rec, target, doc.get("commit_timeout", 0), v)
            except (FetchError, ValueError, AttributeError, rpc.RpcError) as e:
                rec.poll_error = str(e)
        await sleep_ms_async(interval_s * 1000)


class _Buffer:
    def __init__(self, limit):
        self.data = b""
        self.limit = limit

    def write(self, b):
        self.data += b
