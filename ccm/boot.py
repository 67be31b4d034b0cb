"""What main.py runs before any other firmware module: a self-update that ota/self.json says is under way is
swapped in, or undone (ccm/ota/selfupdate.py) — and only then is the self-update code imported. On every
other boot its bytecode, and the names it interns for good, stay out of the heap (~3.5 KB of a plain
ESP32's with .mpy files, measured on 32-bit)."""

from ccm.files import read_json, write_json

SAFE_AFTER = 3  # boots in a row that failed before one runs in safe mode

# ccm/ota/selfupdate.py's states that leave work for the next boot
UNDER_WAY = ("staged", "swapping", "trial", "reverting")


def at_boot(root=""):
    """The self-update state this boot runs in (None: none recorded). The firmware modules imported to
    get here (the `ccm` package) are forgotten after it, so what main.py imports next is the files as
    they are now."""
    import json
    import os
    import sys

    ota = (root.rstrip("/") if root else "") + "/ota"
    try:
        with open(ota + "/self.json") as f:
            state = json.load(f).get("state")
    except (OSError, ValueError, AttributeError):  # none, half-written or not an object: nothing to do
        state = None
    leftovers = False
    if state == "committed":  # a power cut after the commit was recorded left the old files
        try:
            os.stat(ota + "/fs.old")
            leftovers = True
        except OSError:
            pass
    if state in UNDER_WAY or leftovers:
        from ccm.ota.selfupdate import at_boot as swap

        return swap(root)
    for name in list(sys.modules):
        if name == "ccm" or name.startswith("ccm."):
            del sys.modules[name]
    return state


class BootGuard:
    """Counts the boots in a row that did not last (a crash, a MemoryError, a setting that breaks the
    start): after SAFE_AFTER of them the next boot is in safe mode — only the UART link and Config.*,
    on the factory settings of the link — so the host can still mend the configuration."""

    def __init__(self, fs_dir):
        self.path = (fs_dir + "/" if fs_dir else "/") + "boot_failures.json"

    def _write(self, d):
        try:
            write_json(self.path, d)
        except OSError:
            pass

    def begin(self):
        """Count this boot; the reason for safe mode, or None for a normal boot."""
        d = read_json(self.path)
        n = d.get("count", 0) + 1
        self._write({"count": n, "last": d.get("last")})
        if n > SAFE_AFTER:
            return "%d boots in a row failed; the last: %s" % (n - 1, d.get("last") or "no reason recorded")
        return None

    def failed(self, why):
        d = read_json(self.path)
        d["last"] = why
        self._write(d)

    def healthy(self):
        if read_json(self.path).get("count"):
            self._write({"count": 0})
