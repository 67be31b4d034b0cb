"""What the OTA receiver finds in ota/state.json after a reboot (ccm/ota/receiver.py loads this only then):
a job the reboot cut short, and a self-update whose trial ended. Dropped once settled: on a stock image
its bytecode would otherwise sit in the heap through every update."""

from ccm.files import read_json, remove
from ccm.ota.states import ERROR, PROGRESS


def settle(rec, job):
    if job:
        _interrupted(rec, job)
    if rec.trial:
        _trial_ended(rec)


def _interrupted(rec, job):
    """A host flash cut short, or a check left to this boot, is resumed (rec.resume(), once the link is
    up); anything else was dropped, and the status says during what."""
    if job.get("at_boot"):  # left to this boot: no room to check the bundle beside the running firmware
        rec.state = PROGRESS
        rec.stage = "verifying"
        rec.version = job.get("version")
        rec.message = "checking the bundle, first thing at this boot"
        rec._resume_job = job
        return
    resumable = job.get("platform") == "ccm_host" and rec.host_pending is not None and rec.host_pending()
    if job.get("stage") == "applying" and resumable:
        rec.state = PROGRESS
        rec.stage = "applying"
        rec.version = job.get("version")
        deferred = rec.host_pending().get("deferred")
        rec.message = "flashing the host, first thing at this boot" if deferred else "resuming after a reboot"
        rec._resume_job = job
        return
    remove(rec.bundle_path)
    rec._set(ERROR, "interrupted: the CCM rebooted during %s; nothing was applied" % job.get("stage", "the update"))
    rec._save()


def _trial_ended(rec):
    """A self-update was staged: once ota/self.json says how its trial ended, what is installed is what
    runs. Rolled back (OTA.Revert, the commit timeout, a reboot before the commit, files the boot could
    not unpack): the version before it again, the status says why, and triggers leave that version alone
    (`held_back`)."""
    state = read_json(rec.dir + "/self.json")
    t = rec.trial
    if state.get("version") == t["version"] and state.get("state") in ("staged", "swapping", "trial", "reverting"):
        return  # still on trial: settled at a later boot
    rec.trial = None
    if state.get("state") == "reverted" and state.get("version") == t["version"]:
        if t.get("previous") is None:
            rec.installed.pop("esp32", None)
        else:
            rec.installed["esp32"] = t["previous"]
        rec.current, rec.current_url = t.get("previous"), t.get("previous_url")
        why = state.get("why") or "not committed"
        rec.rolled_back = {"version": t["version"], "why": why, "retry": t.get("retry")}
        rec.version = t["version"]
        rec.stage = "rolled back"
        rec._set(ERROR, "rolled back: %s; %s runs" % (why, t.get("previous") or "the version before"))
    rec._save()
