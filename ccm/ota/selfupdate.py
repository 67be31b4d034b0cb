"""The CCM updating itself (docs/protocol.md, OTA, mos's semantics): staged, switched at the next boot, kept only
when committed.

- `fs` part: the checked bundle is kept (ota/self.zip). At the next boot, before any other firmware
  module is imported (main.py calls `at_boot` first), its files are unpacked beside the running ones
  (ota/fs.new/) — on a heap nothing else uses yet: on a plain ESP32 the running firmware has no room
  for the unpacking code besides its own — then each is swapped in and the one it replaces kept in
  ota/fs.old/. That boot is a *trial*. A bundle that cannot be unpacked (no room, corrupt) changes
  nothing: the old files run, and the reason is recorded as a rollback.
- `app` part: a MicroPython image written to the next OTA partition (`esp32.Partition`) and set to
  boot; ESP-IDF's bootloader rolls it back unless it is marked valid.
- A trial ends with `OTA.Commit` (old files dropped, the app marked valid), or `OTA.Revert`, or the
  `commit_timeout` running out, or any reboot before a commit: the old files come back (and the old
  app: the bootloader's rollback). commit_timeout 0 commits as soon as the trial boot is up.

Everything is recorded in ota/self.json, written atomically, so a power cut at any point leaves a
state this module can finish or undo.
"""

import os

from ccm.files import makedirs, read_json, remove, write_json

STAGED = "staged"
SWAPPING = "swapping"  # at boot, staged files going into place (a power cut: the next boot goes on)
TRIAL = "trial"
COMMITTED = "committed"
REVERTING = "reverting"  # the old files coming back (a power cut: the next boot goes on)
REVERTED = "reverted"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _rmtree(path):
    try:
        items = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in items:
        _rmtree(path + "/" + name)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _move(src, dst):
    d = dst.rsplit("/", 1)[0]
    if d:
        makedirs(d)
    remove(dst)
    os.rename(src, dst)


class SelfUpdate:
    def __init__(self, root, board=None):
        self.root = root.rstrip("/") if root else ""
        self.dir = self.root + "/ota"
        self.path = self.dir + "/self.json"
        self.new = self.dir + "/fs.new"
        self.old = self.dir + "/fs.old"
        self.zip = self.dir + "/self.zip"  # a staged bundle whose fs parts the next boot unpacks
        self.board = board

    def _file(self, name):
        return (self.root + "/" if self.root else "/") + name

    def record(self):
        return read_json(self.path)

    def _save(self, rec):
        makedirs(self.dir)
        write_json(self.path, rec)

    # -- boot ---------------------------------------------------------------------------------------
    def stage_fs(self, read, readinto=None):
        """Unpack an fs archive (read(n) gives its bytes; readinto(buf) too, when given) into ota/fs.new,
        beside what is there already: a generator that returns the file names."""
        from ccm.ota.fsarchive import unpack_steps

        makedirs(self.new)

        def open_out(name):
            p = self.new + "/" + name
            makedirs(p.rsplit("/", 1)[0])
            return open(p, "wb")

        return (yield from unpack_steps(read, open_out, readinto=readinto))

    def at_boot(self):
        """Call once per boot, before the firmware is imported. Returns the state this boot runs in.

        Every step is journaled in self.json before it starts and written so that doing it again is
        harmless: a power cut anywhere — in the swap, the revert or the commit — is finished by the
        next boot, which then runs the old files or the new ones, complete."""
        rec = self.record()
        state = rec.get("state")
        if state == STAGED and "parts" in rec:
            if not self._unpack(rec):
                return REVERTED
        remove(self.zip)  # unpacked before a power cut, or left by an update that was not staged
        if state == STAGED:
            _rmtree(self.old)  # a previous update's leftovers; nothing of this one is in there yet
            rec["state"] = SWAPPING
            self._save(rec)
            state = SWAPPING
        if state == SWAPPING:
            self._swap(rec)
            return TRIAL
        if state == TRIAL:  # rebooted without a commit: undo
            self._restore(rec, "not committed before the reboot")
            return REVERTED
        if state == REVERTING:  # a power cut during a revert: finish it
            self._restore(rec, rec.get("why") or "reverted")
            return REVERTED
        if state == COMMITTED and _exists(self.old):
            _rmtree(self.old)  # a power cut after the commit was recorded
        return state

    def _unpack(self, rec):
        """The staged bundle's fs parts into ota/fs.new, recorded with their file names (then the bundle
        goes). A power cut in here: the next boot unpacks again from the start. A bundle that cannot be
        unpacked is dropped, the reason recorded as a rollback (an app staged with it rolls back too,
        when the boot that follows finds `app_rollback`); False then."""
        from ccm.ota.bundle import Bundle
        from ccm.ota.steps import drain

        _rmtree(self.new)
        files = []
        try:
            with open(self.zip, "rb") as f:
                b = Bundle(f, os.stat(self.zip)[6])
                for name in rec["parts"]:
                    r = b.reader(name)
                    files += drain(self.stage_fs(r.read, r.readinto))
        except Exception as e:  # no room, a corrupt file: nothing was swapped, the old files run on
            _rmtree(self.new)
            remove(self.zip)
            rec["state"] = REVERTED
            rec["why"] = "the update could not be unpacked at boot (%s: %s)" % (type(e).__name__, e)
            rec["app_rollback"] = rec.get("app")
            self._save(rec)
            return False
        rec["files"] = files
        del rec["parts"]
        self._save(rec)
        return True

    def _swap(self, rec):
        """Each staged file into place, the one it replaces kept in ota/fs.old. Idempotent: a file
        still in fs.new has not been swapped; one whose old version is already in fs.old is not moved
        there again."""
        for name in rec.get("files", []):
            new = self.new + "/" + name
            if not _exists(new):
                continue  # swapped before the power cut
            cur, old = self._file(name), self.old + "/" + name
            if _exists(cur) and not _exists(old):
                _move(cur, old)
            _move(new, cur)
        rec["existed"] = [n for n in rec.get("files", []) if _exists(self.old + "/" + n)]
        rec["state"] = TRIAL
        self._save(rec)
        _rmtree(self.new)

    def _restore(self, rec, why):
        """The old files back, those the update added removed. Journaled as REVERTING first; idempotent."""
        if rec.get("state") != REVERTING:
            rec["state"] = REVERTING
            rec["why"] = why
            self._save(rec)
        existed = rec.get("existed", [])
        for name in rec.get("files", []):
            cur = self._file(name)
            if name in existed:
                if _exists(self.old + "/" + name):
                    _move(self.old + "/" + name, cur)
            else:
                try:
                    os.remove(cur)
                except OSError:
                    pass
        _rmtree(self.old)
        rec["state"] = REVERTED
        self._save(rec)

    def commit(self):
        rec = self.record()
        if rec.get("state") != TRIAL:
            return False
        if rec.get("app") and self.board is not None:
            self.board.app_mark_valid()
        rec["state"] = COMMITTED  # recorded first: a power cut while fs.old goes cannot undo half of it
        self._save(rec)
        _rmtree(self.old)
        return True

    def revert(self, why="reverted by OTA.Revert"):
        """Undo a trial now (the caller reboots into the old firmware)."""
        rec = self.record()
        if rec.get("state") != TRIAL:
            return False
        self._restore(rec, why)
        if rec.get("app") and self.board is not None:
            self.board.app_rollback()
        return True


# -- OTA.Commit, OTA.Revert and the commit timeout (Ccm.on_demand loads these for the call) ----------
def commit_rpc(ccm, params, call):
    from ccm import rpc

    rpc.take(params)
    if not SelfUpdate(ccm.fs_root(), ccm.board).commit():
        raise rpc.RpcError(rpc.INVALID_REQUEST, "nothing to commit: no update is on trial")
    return True


def revert_rpc(ccm, params, call):
    from ccm import rpc

    rpc.take(params)
    if not SelfUpdate(ccm.fs_root(), ccm.board).revert():
        raise rpc.RpcError(rpc.INVALID_REQUEST, "nothing to revert: no update is on trial")
    ccm.router.request_reboot(300)
    return True


async def trial_deadline(ccm, timeout):
    """A self-update on trial that asked for an explicit commit is reverted without one in time."""
    from ccm.compat import sleep_ms_async

    await sleep_ms_async(timeout * 1000)
    if SelfUpdate(ccm.fs_root(), ccm.board).revert("no OTA.Commit within %d s" % timeout):
        ccm.router.request_reboot(100)


def at_boot(root=""):
    """main.py's first call on the module. The firmware modules imported to get here (the `ccm` package
    itself: its FW_VERSION) are forgotten after it, so what main.py imports next is the files as they are
    now — a swapped-in update's, or the old ones back."""
    import sys

    state = SelfUpdate(root).at_boot()
    for name in list(sys.modules):
        if name == "ccm" or name.startswith("ccm."):
            del sys.modules[name]
    return state
