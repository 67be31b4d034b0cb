"""OTA through the shadow (docs/protocol.md): `desired.ota {url, version, commit_timeout?, retry?}` starts an
update unless that version is installed or one is in progress, or it is a self-update that was rolled back
(until `retry` takes a value it did not have then); `reported.ota {state, progress, message,
version, target, url}` follows the OTA receiver, `version` being what is installed — so the delta on
desired.ota stays until the update has succeeded. `ota` is taken out of every delta: it is the CCM's,
not the host's.

Loaded only for a delta that holds `ota` and while the receiver reports (ccm/main.py's take_ota_delta
and report_ota): on a stock image a module that waits is heap."""

from ccm.compat import dumps, unload


def report(shadow, rec, st):
    """reported.ota from the receiver `rec`'s status `st`."""
    r = {"state": st["state"], "progress": st["progress"], "message": st["message"]}
    if rec.current is not None:
        r["version"] = rec.current
    if st.get("version") is not None:
        r["target"] = st["version"]
    if rec.current_url:
        r["url"] = rec.current_url
    shadow.publish_reported('{"ota":%s}' % dumps(r), tag="ota")


def take(shadow, load, d):
    """The delta `d` without `ota`, after acting on it; `load()`: the OTA receiver (loaded on first use)."""
    if type(d) is not dict or "ota" not in d:
        return d
    d = dict(d)
    want = d.pop("ota")
    if type(want) is not dict:
        return d
    url = want.get("url")
    version = want.get("version")
    if type(url) is not str:
        return d
    rec = load()
    if rec.busy():
        return d
    from ccm.ota import pull

    try:
        retry = want.get("retry")  # a new value asks again for a version that was rolled back
        if pull.held_back(rec, version, retry):
            report(shadow, rec, rec.status())  # rolled back: say so, do not apply it again
        elif not pull.wanted(rec, version):
            pull.note_installed(rec, version, url)
            report(shadow, rec, rec.status())  # already installed: say so, do not apply again
        else:
            pull.start(rec, url, want.get("commit_timeout", 0) or 0, version, retry)
    finally:  # a pull started holds what it runs; the modules go (a stock image's heap)
        unload("ccm.ota.pull", "ccm.ota.fetch")
    return d
