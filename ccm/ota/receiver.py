"""The OTA receiver (docs/protocol.md, OTA): `OTA.*` on the router, the bundle staged on the filesystem, checked,
then handed to the applier for its platform.

    OTA.Status            {state: 0 idle | 1 in progress | 2 error | 3 success, progress, message, stage,
                          chunk: the OTA.Write size this module's free heap takes best, …}
    OTA.Begin             {size, timeout = 600, commit_timeout = 0}   → true; -32004 while another runs
    OTA.Write             {offset, data: base64} → true; the same chunk again is accepted (mos retries),
                          a gap or an overlap is refused
    OTA.End               the bundle is checked (manifest, platform, sizes, SHA-256, signature); the
                          answer comes once it is; applying goes on in the background (poll Status).
                          With no heap for the check beside the running firmware, the answer says the
                          CCM reboots to check it: the next boot checks and applies first thing
    OTA.Update            {url, commit_timeout?, version?}: the same from an HTTP(S) pull
    OTA.Commit, Revert    for a CCM self-update on trial (see ccm/ota/selfupdate.py)

mos's client refuses to start unless Status says 0 or 2, so a success (3) is reported once, then Status
is back to 0 with the outcome under `last`. What a reboot interrupts is known at the next boot from
ota/state.json: an upload is dropped (its space freed, state 2 saying why); a host flash is done again
from the staged image.
"""

import binascii

from ccm import rpc
from ccm.compat import sleep_ms_async, ticks_diff, ticks_ms, unload
from ccm.files import makedirs, read_json, remove, write_json
from ccm.ota.states import (  # noqa: F401 - theirs too
    ERROR,
    IDLE,
    PROGRESS,
    SUCCESS,
    OtaError,
    chunk_hint,
    status_fields,
)

# free heap a check beside the running firmware wants: its code (~12 KB as .mpy), data, room for fragmentation
CHECK_HEAP = 32 * 1024


def _invalid(msg):
    return rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: " + msg)


def _from_base64(text):
    """The bytes of a chunk's base64, decoded from the str as it is: a copy of the chunk is heap that a
    plain ESP32 does not have while it uploads (MicroPython 1.27's WebAssembly port takes bytes only)."""
    try:
        return binascii.a2b_base64(text)
    except TypeError:
        return binascii.a2b_base64(text.encode())


class OtaReceiver:
    """One CCM's OTA state. `appliers[platform](open_bundle, progress, receiver) -> result` (async) does
    the platform's work, `open_bundle()` giving it the checked bundle (its reader loaded then); an
    applier named by its module (a str) is that module's apply(), loaded with the update's helpers.
    `spawn(coro)` runs background work that belongs to this boot; `fs_free()` is the room left;
    `host_pending()` is the host flash a reboot cut short (ccm/ota/host.py's record), if any: the one
    thing that decides whether an interrupted ccm_host apply is resumed."""

    def __init__(self, config, root, appliers, spawn, fs_free=None, host_pending=None):
        self.config = config
        self.root = root.rstrip("/") if root else ""
        self.dir = self.root + "/ota"
        makedirs(self.dir)
        self.bundle_path = self.dir + "/bundle.zip"
        self.state_path = self.dir + "/state.json"
        self.appliers = appliers
        self.spawn = spawn
        self.fs_free = fs_free
        self.host_pending = host_pending
        self.listeners = []  # fn(status) on every change worth reporting (the shadow's reported.ota)
        self.clock = None  # async clock(tries) -> True once the clock is set (certificates have dates)
        self.heap_short = None  # (bytes) -> True when fewer are free (the board's): checks wait for a boot
        self.reboot = None  # (delay_ms): the router's
        self.opener = None  # open_connection for downloads (the board's connect()), None: asyncio's
        self.state = IDLE
        self.stage = ""
        self.progress = 0
        self.message = ""
        self.version = None  # of the bundle in flight
        self.size = 0
        self.received = 0
        self._file = None
        self._chunk = None  # (offset, length, crc) of the last write: a retry of it is accepted
        self._deadline = None
        self._reported = None
        self.commit_timeout = 0
        saved = self._load()
        self.last = saved.get("last")
        self.installed = saved.get("installed") or {}
        self.current = saved.get("current")  # the version last installed (any platform)
        self.current_url = saved.get("current_url")
        self._url = None
        self._retry = None
        # a self-update staged and not known to be kept yet: {version, previous, previous_url, retry}
        self.trial = saved.get("trial")
        self.rolled_back = saved.get("rolled_back")  # {version, why, retry}: the last self-update undone
        job = saved.get("job")
        if job or self.trial:  # what a reboot left: ccm/ota/reboot.py, loaded only then
            from ccm.ota import reboot

            reboot.settle(self, job)
            unload("ccm.ota.reboot")

    # -- persistence ----------------------------------------------------------------------------
    def _load(self):
        return read_json(self.state_path)

    def _save(self, job=None):
        state = {"installed": self.installed, "current": self.current, "current_url": self.current_url, "job": job}
        state["trial"] = self.trial
        state["rolled_back"] = self.rolled_back
        state["last"] = self.last  # an outcome a reboot right after it must not lose (a host flashed at boot)
        write_json(self.state_path, state)

    _resume_job = None

    def resume(self):
        """At boot, after the link is up: finish an apply a reboot cut short or left (the host flash).
        Its task, or None."""
        job = self._resume_job
        if job is None:
            return None
        self._resume_job = None
        if job.get("at_boot"):
            from ccm.ota import finish

            return self.spawn(finish.check_resumed(self, job))
        return self.spawn(self._apply_staged(job.get("platform"), job.get("version")))

    # -- status ---------------------------------------------------------------------------------
    def status(self):
        st = status_fields(self.state, self.progress, self.message, self.stage, self.version, self.last, self.installed)
        if self.state == PROGRESS and self.stage == "receiving":
            st["size"] = self.size
            st["received"] = self.received
        return st

    def _status_rpc(self, params, call):
        rpc.take(params)
        st = self.status()
        st["chunk"] = chunk_hint()
        if self.state == SUCCESS:  # reported once; then idle, so `mos ota` can run again
            self.last = {"state": SUCCESS, "message": self.message, "version": self.version}
            self.state = IDLE
            self.stage = ""
        return st

    def _set(self, state, message, progress=None):
        self.state = state
        self.message = message
        if progress is not None:
            self.progress = progress
        if state in (ERROR, SUCCESS):
            self.last = {"state": state, "message": message, "version": self.version}
        self._notify(True)

    def _notify(self, force=False):
        key = (self.state, self.stage, self.progress // 10)
        if not force and key == self._reported:
            return
        self._reported = key
        st = self.status()
        for fn in self.listeners:
            try:
                fn(st)
            except Exception:  # a listener must not break an update
                pass

    def _stage(self, stage, progress=0, message=""):
        self.stage = stage
        self.progress = progress
        self.message = message
        self._notify(True)

    # -- receiving ------------------------------------------------------------------------------
    def _check_idle(self):
        if self.state == PROGRESS:
            raise rpc.RpcError(rpc.BUSY, "busy: an update is in progress (%s)" % (self.stage or "starting"))

    def _free(self):
        return self.fs_free() if self.fs_free else None

    def begin(self, size, timeout_s=600, commit_timeout_s=0, version=None):
        self._check_idle()
        self._cleanup()
        free = self._free()
        if free is not None and size > free:
            raise rpc.RpcError(
                rpc.INVALID_PARAMS,
                "no room: the bundle is %d bytes and the CCM's filesystem has %d bytes free" % (size, free),
            )
        self._file = open(self.bundle_path, "wb")
        self.size = size
        self.received = 0
        self._chunk = None
        self.version = version
        self._url = None
        self._retry = None
        self.commit_timeout = commit_timeout_s
        self._deadline = ticks_ms() + timeout_s * 1000 if timeout_s else None
        self.state = PROGRESS
        self._stage("receiving", 0, "receiving %d bytes" % size)
        self._save({"stage": "receiving"})
        if self._deadline is not None:
            self.spawn(self._watchdog(ticks_ms(), timeout_s * 1000))

    async def _watchdog(self, started, limit_ms):
        while self.state == PROGRESS and self.stage == "receiving":
            if ticks_diff(ticks_ms(), started) >= limit_ms:
                self._fail(
                    "timed out: no OTA.End within %d s of OTA.Begin; the upload was dropped" % (limit_ms // 1000)
                )
                return
            await sleep_ms_async(200)

    def write(self, offset, data):
        if self.state != PROGRESS or self.stage != "receiving":
            raise rpc.RpcError(rpc.INVALID_REQUEST, "no upload in progress: call OTA.Begin first")
        crc = binascii.crc32(data)
        c = self._chunk
        if c is not None and offset == c[0] and len(data) == c[1]:
            if crc == c[2]:
                return  # mos resends a chunk whose answer it lost: already written
            raise _invalid("offset %d was already written with other data" % offset)
        if offset != self.received:
            what = "overlap" if offset < self.received else "gap"
            raise _invalid("%s: offset %d, the next byte expected is %d" % (what, offset, self.received))
        if self.received + len(data) > self.size:
            raise _invalid(
                "%d bytes beyond the size given to OTA.Begin (%d)" % (self.received + len(data) - self.size, self.size)
            )
        try:
            self._file.write(data)
        except OSError as e:
            self._fail("cannot write the bundle to the filesystem: %s" % e)
            raise rpc.RpcError(rpc.INTERNAL_ERROR, self.message) from None
        self.received += len(data)
        self._chunk = (offset, len(data), crc)
        self.progress = self.received * 100 // self.size
        self._notify()

    async def end(self):
        """Close the upload, check the bundle; applying continues in the background."""
        if self.state != PROGRESS or self.stage != "receiving":
            raise rpc.RpcError(rpc.INVALID_REQUEST, "no upload in progress: call OTA.Begin first")
        self._file.close()
        self._file = None
        if self.received < self.size:
            self._fail("truncated: OTA.End after %d of %d bytes; nothing was applied" % (self.received, self.size))
            raise rpc.RpcError(rpc.INVALID_PARAMS, self.message)
        return await self._check_and_apply()

    async def _check_and_apply(self, at_boot=False):
        """Check the staged bundle, then apply it in the background (at boot: before returning): the
        code is ccm/ota/finish.py's, loaded only then. With no room for it beside the running firmware
        (a plain ESP32's stock image), the next boot does both before it starts the network (parts.py)."""
        if not at_boot and self._short_of_heap():
            return self._check_at_boot()
        from ccm.ota import finish

        return await finish.check_and_apply(self, at_boot)

    def _short_of_heap(self):
        return self.heap_short is not None and self.heap_short(CHECK_HEAP)

    def _check_at_boot(self):
        """Leave the check and the apply to the next boot: the job (and what it needs) is saved."""
        job = {"stage": "verifying", "at_boot": True, "version": self.version, "commit_timeout": self.commit_timeout}
        job["url"] = self._url
        job["retry"] = self._retry
        self._save(job)
        self._stage("rebooting to check the bundle", 0, "no room to check it beside the running firmware")
        self.reboot(500)
        return {"state": PROGRESS, "stage": self.stage}

    def _on_fs(self, path):
        """A relative file setting is on the module's filesystem, as `ccm build` puts it (ota.pub.pem)."""
        return self.root + "/" + path if path and not path.startswith("/") else path

    def _apply_staged(self, platform, version):
        from ccm.ota import finish

        return finish.apply_staged(self, platform, version)

    def _fail(self, message):
        self._cleanup()
        self.stage = "error"
        self._set(ERROR, message)
        self._save()

    def _cleanup(self):
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        remove(self.bundle_path)

    # -- RPC ----------------------------------------------------------------------------------------
    def serve(self, router):
        router.add("OTA.Status", self._status_rpc)
        router.add("OTA.Begin", self._begin_rpc)
        router.add("OTA.Write", self._write_rpc)
        router.add("OTA.End", self._end_rpc)
        router.add("OTA.Update", self._update_rpc)

    def _begin_rpc(self, params, call):
        p = rpc.take(
            params, size=(int, rpc.REQUIRED), timeout=(int, 600), commit_timeout=(int, 0), version=((str, None), None)
        )
        if p["size"] <= 0:
            raise _invalid("size must be the bundle's size in bytes")
        if p["timeout"] < 0 or p["commit_timeout"] < 0:
            raise _invalid("timeout and commit_timeout are whole seconds")
        self.begin(p["size"], p["timeout"], p["commit_timeout"], p["version"])
        return True

    def _write_rpc(self, params, call):
        p = rpc.take(params, offset=(int, rpc.REQUIRED), data=(str, rpc.REQUIRED))
        if p["offset"] < 0:
            raise _invalid("offset must not be negative")
        try:
            data = _from_base64(p["data"])
        except ValueError:
            raise _invalid("data is not base64") from None
        self.write(p["offset"], data)
        return True

    def _end_rpc(self, params, call):
        rpc.take(params)

        async def go():
            try:
                call.reply(await self.end())
            except rpc.RpcError as e:
                call.fail(e.code, e.message)
            except Exception as e:  # noqa: BLE001 - e.g. MemoryError: OTA.End is answered, never left hanging
                call.fail(rpc.INTERNAL_ERROR, "%s: %s" % (type(e).__name__, e))

        self.spawn(go())
        return rpc.LATER

    def _update_rpc(self, params, call):
        from ccm.ota import pull  # pulled updates' code loads only for them

        return pull.update_rpc(self, params, call)

    # -- triggers -----------------------------------------------------------------------------------
    def busy(self):
        return self.state == PROGRESS

    def settled(self):
        """Nothing in flight, to resume or to report: a receiver loaded again from ota/state.json would
        be this one, so this one may go (its code is heap on a stock image)."""
        return self.state == IDLE and self.trial is None and self._resume_job is None  # `last` is saved too

    poll_error = None


def attach(ccm):
    """The receiver of one boot of the CCM (ccm/main.py's load_ota), wired to it: the appliers of the
    bundles it takes (a host's firmware, the CCM's own files: modules loaded when one is applied), its
    clock, network, heap and reboot, the listeners told of every change, and OTA.* on its router. Here,
    not in main.py: this code need only be in the heap once an update needs the receiver."""
    board = ccm.board
    appliers = {"ccm_host": "ccm.ota.apply", "esp32": "ccm.ota.stage"}
    r = OtaReceiver(ccm.config, ccm.fs_root(), appliers, ccm.spawn, board.fs_free, lambda: ccm.host_update.pending())
    r.ccm = ccm  # what the appliers work with
    r.clock = ccm.set_clock
    r.opener = board.connect
    r.heap_short = board.heap_short
    r.reboot = ccm.router.request_reboot
    r.listeners = ccm.ota_listeners  # one list: who registers later (the shadow) is told too
    r.serve(ccm.router)
    return r
