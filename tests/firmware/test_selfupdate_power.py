"""Power cuts during a CCM self-update (issue 25, item 3), portable: on CPython and on MicroPython, whose
os module and filesystem the module has. The module is cut off at every file-system step of staging, the
boot-time swap, a revert, a reboot on trial and the commit — each mkdir, remove, rmdir and rename, the
journal's own writes included — and booted again. Every time the next boot finishes what was under way
from the journal in ota/self.json, and the files are the old version or the new one, complete, never a
mix. (A rename is atomic on LittleFS; a cut is modelled between two steps.)"""

import binascii
import os

import ota_vectors as vec
from fwtest import scratch_path

from ccm import files as files_mod
from ccm.ota import fsarchive, selfupdate
from ccm.ota import stage as stage_mod
from ccm.ota.selfupdate import COMMITTED, REVERTED, TRIAL, SelfUpdate
from ccm.ota.steps import drain

OLD = {"main.py": b"old main", "keep.txt": b"not updated"}
NEW = {"main.py": b"new main", "lib/added.py": b"new file"}
for _i in range(6):
    OLD["lib/m%d.py" % _i] = b"old %d" % _i
    NEW["lib/m%d.py" % _i] = b"new %d" % _i
OLD_TREE = dict(OLD)
NEW_TREE = dict(OLD)
NEW_TREE.update(NEW)  # keep.txt is not in the update: it stays


class PowerCut(Exception):
    pass


class CuttingOs:
    """os for selfupdate.py and files.py whose (k+1)-th changing call never happens: the power went."""

    def __init__(self, cut_at):
        self.left = cut_at
        self.steps = 0

    def _step(self, fn, *a):
        if self.left == 0:
            raise PowerCut()
        self.left -= 1
        self.steps += 1
        return fn(*a)

    def rename(self, a, b):
        return self._step(os.rename, a, b)

    def remove(self, p):
        return self._step(os.remove, p)

    def rmdir(self, p):
        return self._step(os.rmdir, p)

    def mkdir(self, p):
        return self._step(os.mkdir, p)

    def stat(self, p):
        return os.stat(p)

    def listdir(self, p):
        return os.listdir(p)


def _power(k):
    fake = CuttingOs(k)
    selfupdate.os = fake
    stage_mod.os = fake
    files_mod.os = fake
    return fake


def _mains():
    selfupdate.os = os
    stage_mod.os = os
    files_mod.os = os


def _is_dir(p):
    return os.stat(p)[0] & 0x4000 != 0


def tree(root, rel=""):
    out = {}
    for name in os.listdir(root + ("/" + rel if rel else "")):
        r = rel + "/" + name if rel else name
        if r == "ota":
            continue
        p = root + "/" + r
        if _is_dir(p):
            out.update(tree(root, r))
        else:
            with open(p, "rb") as f:
                out[r] = f.read()
    return out


_n = [0]


def fresh():
    _n[0] += 1
    root = scratch_path("pc%d" % _n[0])
    files_mod.makedirs(root + "/lib")
    for name, data in OLD.items():
        with open(root + "/" + name, "wb") as f:
            f.write(data)
    return root


def stage(root):
    su = SelfUpdate(root)
    archive = fsarchive.pack(NEW)
    pos = [0]

    def read(n):
        data = archive[pos[0] : pos[0] + n]
        pos[0] += len(data)
        return data

    stage_mod.staged(root + "/ota", drain(su.stage_fs(read)), False, "2.0", 0)


def staged():
    root = fresh()
    stage(root)
    return root


def stage_bundle(root):
    """As the OTA applier stages an fs part: the checked bundle kept for the next boot to unpack."""
    files_mod.makedirs(root + "/ota")
    with open(root + "/ota/bundle.zip", "wb") as f:
        f.write(binascii.a2b_base64(vec.FS_BUNDLE.encode()))
    stage_mod.staged(root + "/ota", [], False, "2.0", 0, root + "/ota/bundle.zip", ["fs"])


def bundle_staged():
    root = fresh()
    stage_bundle(root)
    return root


def on_trial():
    root = staged()
    assert SelfUpdate(root).at_boot() == TRIAL
    return root


def _swap(root):
    return SelfUpdate(root).at_boot()


def _revert(root):
    return SelfUpdate(root).revert("reverted by OTA.Revert")


def _commit(root):
    return SelfUpdate(root).commit()


PHASES = (
    ("staging", fresh, stage),
    ("staging a bundle", fresh, stage_bundle),
    ("the unpack and swap at boot", bundle_staged, _swap),
    ("the swap at boot", staged, _swap),
    ("a revert", on_trial, _revert),
    ("a reboot on trial", on_trial, _swap),
    ("the commit", on_trial, _commit),
)


def test_a_power_cut_anywhere_leaves_the_old_or_the_new_version_complete():
    cuts = 0
    try:
        for phase, make, step in PHASES:
            root = make()
            counter = _power(10**9)
            step(root)
            total = counter.steps
            _mains()
            for k in range(total):
                root = make()
                _power(k)
                try:
                    step(root)
                    raise AssertionError("%s: no power cut at step %d" % (phase, k))
                except PowerCut:
                    pass
                _mains()  # the power comes back: the next boot
                state = SelfUpdate(root).at_boot()
                got = tree(root)
                assert got in (OLD_TREE, NEW_TREE), "%s, cut at step %d: a mix (%s)" % (phase, k, state)
                assert (got == NEW_TREE) == (state in (TRIAL, COMMITTED)), "%s, cut at %d: %s" % (phase, k, state)
                if state == TRIAL:  # and a reboot without commit from there brings the old back whole
                    assert SelfUpdate(root).at_boot() == REVERTED and tree(root) == OLD_TREE
                cuts += 1
    finally:
        _mains()
    assert cuts >= 70, cuts


def test_a_bundle_that_cannot_be_unpacked_at_boot_changes_nothing():
    """The boot that unpacks a staged bundle finds it corrupt (or no room): the old files run, the bundle
    and whatever was unpacked are gone, and the record says why — as a rollback the receiver reports."""
    root = fresh()
    stage_bundle(root)
    with open(root + "/ota/self.zip", "r+b") as f:  # a byte of the deflated part flipped
        data = bytearray(f.read())
        data[480] ^= 0xFF
        f.seek(0)
        f.write(data)
    assert SelfUpdate(root).at_boot() == REVERTED and tree(root) == OLD_TREE
    rec = SelfUpdate(root).record()
    assert "could not be unpacked" in rec["why"] and not rec["app_rollback"], rec
    for gone in ("/ota/self.zip", "/ota/fs.new"):
        try:
            os.stat(root + gone)
            raise AssertionError(gone + " is left")
        except OSError:
            pass
    assert SelfUpdate(root).at_boot() == REVERTED and tree(root) == OLD_TREE  # and stays so


def test_main_py_imports_the_self_update_code_only_when_one_is_under_way():
    """ccm/boot.py (main.py's first call): with nothing staged it does not import ccm.ota.selfupdate —
    on a stock image that code and its names would take ~3 KB of heap for good at every boot; with an
    update staged it swaps it in, as SelfUpdate.at_boot does."""
    import sys

    from ccm import boot

    saved = {k: v for k, v in sys.modules.items() if k == "ccm" or k.startswith("ccm.")}
    try:
        root = fresh()
        for k in list(saved):
            del sys.modules[k]
        assert boot.at_boot(root) is None and "ccm.ota.selfupdate" not in sys.modules
        stage(root)
        assert boot.at_boot(root) == TRIAL and tree(root) == NEW_TREE
        assert boot.at_boot(root) == REVERTED and tree(root) == OLD_TREE  # rebooted on trial: undone
    finally:
        sys.modules.update(saved)
