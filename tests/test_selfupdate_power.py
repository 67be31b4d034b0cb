"""Power cuts during a CCM self-update (issue 25, item 3): the module is cut off at every file-system
step of staging, the boot-time swap, the revert and the commit — each mkdir, remove, rmdir and rename,
the journal's own writes included — and booted again. Every time the next boot finishes what was under
way from the journal in ota/self.json and the files are the old version or the new one, complete,
never a mix. (A rename is atomic on LittleFS; a cut is modelled between two steps.)"""

import os

import pytest

from ccm import files as files_mod
from ccm.ota import fsarchive, selfupdate
from ccm.ota.selfupdate import COMMITTED, REVERTED, TRIAL, SelfUpdate

OLD = {f"lib/m{i}.py": b"old %d" % i for i in range(8)} | {"main.py": b"old main", "keep.txt": b"not updated"}
NEW = {f"lib/m{i}.py": b"new %d" % i for i in range(8)} | {"main.py": b"new main", "lib/added.py": b"new file"}


class PowerCut(Exception):
    pass


class CuttingOs:
    """os for selfupdate.py and files.py whose k-th changing call never happens: the power went."""

    def __init__(self, cut_at):
        self.left = cut_at
        self.steps = 0

    def __getattr__(self, name):
        fn = getattr(os, name)
        if name not in ("rename", "remove", "rmdir", "mkdir"):
            return fn

        def step(*a):
            if self.left == 0:
                raise PowerCut(name)
            self.left -= 1
            self.steps += 1
            return fn(*a)

        return step


@pytest.fixture
def cut(monkeypatch):
    def install(k):
        fake = CuttingOs(k)
        monkeypatch.setattr(selfupdate, "os", fake)
        monkeypatch.setattr(files_mod, "os", fake)
        return fake

    yield install
    monkeypatch.setattr(selfupdate, "os", os)
    monkeypatch.setattr(files_mod, "os", os)


def tree(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            if not rel.startswith("ota"):
                out[rel] = open(os.path.join(d, n), "rb").read()
    return out


def module(root):
    for name, data in OLD.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)) or root, exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    return str(root)


def stage(root):
    su = SelfUpdate(root)
    archive = fsarchive.pack(NEW)
    pos = [0]

    def read(n):
        data = archive[pos[0] : pos[0] + n]
        pos[0] += len(data)
        return data

    names = _drain(su.stage_fs(read))
    su.staged(names, False, "2.0", 0)


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as e:
            return e.value


OLD_TREE = dict(OLD)
NEW_TREE = {k: v for k, v in OLD.items() if k not in NEW} | NEW


def steps_of(fn, root_factory, cut):
    """How many changing steps `fn(root)` takes, uncut."""
    root = root_factory()
    counter = cut(10**9)
    fn(root)
    return counter.steps


def test_a_power_cut_anywhere_leaves_the_old_or_the_new_version_complete(tmp_path, cut):
    n = [0]

    def fresh():
        n[0] += 1
        return module(tmp_path / str(n[0]))

    def staged():
        root = fresh()
        stage(root)
        return root

    def on_trial():
        root = staged()
        assert SelfUpdate(root).at_boot() == TRIAL
        return root

    phases = {
        "staging": (fresh, stage),
        "the swap at boot": (staged, lambda r: SelfUpdate(r).at_boot()),
        "a revert": (on_trial, lambda r: SelfUpdate(r).revert("reverted by OTA.Revert")),
        "a reboot on trial": (on_trial, lambda r: SelfUpdate(r).at_boot()),
        "the commit": (on_trial, lambda r: SelfUpdate(r).commit()),
    }
    cuts = 0
    for phase, (make, step) in phases.items():
        total = steps_of(step, make, cut)
        cut(10**9)
        for k in range(total):
            root = make()
            cut(k)
            with pytest.raises(PowerCut):
                step(root)
            cut(10**9)  # the power comes back: the next boot
            state = SelfUpdate(root).at_boot()
            got = tree(root)
            assert got in (OLD_TREE, NEW_TREE), f"{phase}, cut at step {k}: a mix ({state})"
            assert (got == NEW_TREE) == (state in (TRIAL, COMMITTED)), f"{phase}, cut at step {k}: {state}, other tree"
            if state == TRIAL:  # and a reboot without commit from there still brings the old back whole
                assert SelfUpdate(root).at_boot() == REVERTED and tree(root) == OLD_TREE
            cuts += 1
    assert cuts >= 50, cuts
