"""What main.py runs before any other firmware module: a self-update that ota/self.json says is under way is
swapped in, or undone (ccm/ota/selfupdate.py) — and only then is the self-update code imported. On every
other boot its bytecode, and the names it interns for good, stay out of the heap (~3.5 KB of a plain
ESP32's with .mpy files, measured on 32-bit)."""

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
