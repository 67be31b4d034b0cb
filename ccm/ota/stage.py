"""An `esp32` bundle on the running CCM (docs/protocol.md, OTA): what is staged before the reboot into
it. Loaded only for that; the boot that follows does the rest (ccm/ota/selfupdate.py: the fs parts
unpacked and swapped in, the trial).

- `app` parts: written into the next OTA partition now (esp32.Partition), which is set to boot.
- `fs` parts: the checked bundle is kept as ota/self.zip, for the next boot to unpack.

The receiver's applier is `apply` (apply_self on the receiver's `ccm`); it returns a message and raises
OtaError with a reason.
"""

import os

from ccm.files import makedirs, remove, write_json
from ccm.ota.states import OtaError
from ccm.ota.steps import paced


def apply(open_bundle, progress, receiver):
    """The receiver's applier for esp32 bundles (ccm/ota/finish.py)."""
    return apply_self(receiver.ccm, open_bundle, progress, receiver)


async def apply_self(ccm, open_bundle, progress, receiver):
    bundle = open_bundle()
    kinds = []
    for name, p in bundle.parts.items():
        kind = p.get("type")
        if kind not in ("fs", "app"):
            raise OtaError("bad bundle: esp32 part %s has type %r (fs or app)" % (name, kind))
        kinds.append(kind)
    part = ccm.board.ota_partition() if "app" in kinds else None
    if "app" in kinds and part is None:  # said before a byte is written
        raise OtaError(
            "this module's partition table has no free OTA app slot, so the bundle's app part cannot be "
            "written (ESP32_GENERIC has none): flash a build with OTA partitions (ESP32_GENERIC-OTA), or "
            "update the firmware files only (an fs part: ccm build --bundle)"
        )
    fs = []
    for name, p in bundle.parts.items():
        if p.get("type") == "fs":  # unpacked by the next boot, on a heap the running firmware does not hold
            fs.append(name)
        else:
            await paced(stage_app(part, bundle.reader(name).read, p["size"], progress))
    bundle.f.close()
    if part is not None:
        part.set_boot()
    keep = receiver.bundle_path if fs else None
    staged(receiver.dir, [], part is not None, bundle.manifest.get("version"), receiver.commit_timeout, keep, fs)
    ccm.router.request_reboot(500)
    what = [w for w, has in (("its files", fs), ("an app image", part)) if has]
    return "staged %s; rebooting into %s (commit within %s)" % (
        " and ".join(what),
        "them" if len(what) > 1 else "it",
        ("%d s" % receiver.commit_timeout) if receiver.commit_timeout else "the first boot",
    )


def stage_app(part, read, size, progress=None):
    """Write a MicroPython image into the OTA partition `part`, 4 KiB erase blocks at a time: a generator,
    a step per block (paced by the caller)."""
    buf = bytearray(4096)
    block = 0
    done = 0
    while done < size:
        n = 0
        while n < 4096 and done + n < size:
            data = read(min(512, 4096 - n, size - done - n))
            if not data:
                raise OSError("the app image ends early")
            buf[n : n + len(data)] = data
            n += len(data)
        for i in range(n, 4096):  # the last block's tail as erased flash
            buf[i] = 0xFF
        part.writeblocks(block, buf)
        block += 1
        done += n
        if progress:
            progress("writing app", done, size)
        yield


def staged(ota_dir, files, app, version, commit_timeout, bundle=None, parts=()):
    """Record what the next boot switches to (ota/self.json, state "staged"): `files` already unpacked in
    ota/fs.new, or `bundle`, the checked bundle's path (closed), whose fs `parts` that boot unpacks first —
    it is moved to ota/self.zip."""
    makedirs(ota_dir)
    rec = {"state": "staged", "files": files, "app": bool(app), "version": version, "commit_timeout": commit_timeout}
    if bundle is not None:
        remove(ota_dir + "/self.zip")
        os.rename(bundle, ota_dir + "/self.zip")
        rec["parts"] = list(parts)
    write_json(ota_dir + "/self.json", rec)
