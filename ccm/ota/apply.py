"""What a checked bundle does, by platform (docs/protocol.md, OTA). The receiver's appliers call these
(main.py binds their first argument), `progress(stage, done, total)`; each returns a message and raises
OtaError with a reason. Loaded only when a bundle is applied.

- `ccm_host`: each part of type STM32 is unpacked to ota/host.bin and flashed by the host update
  (ccm/ota/host.py, AN3155); success only once the host answers Sys.Info again.
- `esp32`: `fs` parts are staged beside the running files, an `app` part goes to the next OTA
  partition; the CCM reboots into them on trial (ccm/ota/selfupdate.py).
"""

from ccm.compat import paced
from ccm.ota.receiver import OtaError


async def apply_host(host, bundle, progress, receiver):
    """`host`: the HostUpdate (ccm/ota/host.py) that owns flashing the host."""
    parts = [(n, p) for n, p in bundle.parts.items() if str(p.get("type", "")).upper() == "STM32"]
    if not parts:
        raise OtaError("bad bundle: a ccm_host bundle needs a part of type STM32")
    if not host.wired():
        raise OtaError("this CCM cannot drive the host's BOOT0/NRST: host OTA is not wired")
    info = None
    for name, p in parts:
        addr = p.get("addr")
        if type(addr) is not int:
            raise OtaError("bad bundle: part %s has no numeric addr" % name)
        path = receiver.dir + "/host.bin"
        try:
            with open(path, "wb") as out:
                await paced(bundle.copy_steps(name, out, lambda d, t: progress("unpacking", d, t)))
        except OSError as e:
            raise OtaError("no room to unpack part %s (%s): free space on the CCM" % (name, e)) from None
        summary = await host.flash(path, addr, p["size"], progress)
        info = summary.get("host")
        if info is None:
            raise OtaError(
                "the host was flashed and verified but does not answer Sys.Info: the image does not boot "
                "(flash a working one; the bootloader is in ROM, so the host stays recoverable)"
            )
    return "host updated: it runs %s" % info.get("fw_version")


async def apply_self(ccm, bundle, progress, receiver):
    from ccm.ota.selfupdate import SelfUpdate

    su = SelfUpdate(receiver.dir[: -len("/ota")], ccm.board)
    kinds = []
    for name, p in bundle.parts.items():
        kind = p.get("type")
        if kind not in ("fs", "app"):
            raise OtaError("bad bundle: esp32 part %s has type %r (fs or app)" % (name, kind))
        kinds.append(kind)
    if "app" in kinds and ccm.board.ota_partition() is None:  # said before a byte is written
        raise OtaError(
            "this module's partition table has no free OTA app slot, so the bundle's app part cannot be "
            "written (ESP32_GENERIC has none): flash a build with OTA partitions (ESP32_GENERIC-OTA), or "
            "update the firmware files only (an fs part: ccm build --bundle)"
        )
    fs = []
    app = False
    for name, p in bundle.parts.items():
        if p.get("type") == "fs":  # unpacked by the next boot, on a heap the running firmware does not hold
            fs.append(name)
        else:
            await paced(su.stage_app(bundle.reader(name).read, p["size"], progress))
            app = True
    bundle.f.close()
    keep = receiver.bundle_path if fs else None
    su.staged([], app, bundle.manifest.get("version"), receiver.commit_timeout, keep, fs)
    ccm.router.request_reboot(500)
    what = [w for w, has in (("its files", fs), ("an app image", app)) if has]
    return "staged %s; rebooting into %s (commit within %s)" % (
        " and ".join(what),
        "them" if len(what) > 1 else "it",
        ("%d s" % receiver.commit_timeout) if receiver.commit_timeout else "the first boot",
    )
