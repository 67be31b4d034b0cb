"""What a checked `ccm_host` bundle does (docs/protocol.md, OTA): each part of type STM32 is unpacked to
ota/host.bin and flashed by the host update (ccm/ota/host.py, AN3155); success only once the host answers
Sys.Info again. The receiver's applier is `apply` (the receiver's `ccm` gives the rest) with
`progress(stage, done, total)`; it returns a message and raises OtaError with a reason. When the heap
has no room for the flasher beside the running firmware (a stock image on a plain ESP32), the CCM
reboots first and that boot does it all before its network and cloud take their share (the receiver's
job resumes from ota/state.json). Every part is unpacked before the first flash, so the bundle's reader
is gone while the flasher runs. Loaded only when
such a bundle is applied; an `esp32` bundle's is ccm/ota/stage.py."""

from ccm.compat import sleep_ms_async, unload
from ccm.ota.states import OtaError
from ccm.ota.steps import paced


def apply(open_bundle, progress, receiver):
    """The receiver's applier for ccm_host bundles (ccm/ota/finish.py): apply_host on its CCM."""
    ccm = receiver.ccm
    return apply_host(ccm.host_update, open_bundle, progress, receiver, ccm.router.request_reboot)


async def apply_host(host, open_bundle, progress, receiver, reboot):
    """`host`: the HostUpdate (ccm/ota/host.py) that owns flashing the host; `open_bundle()` the checked
    bundle; `reboot(ms)` the router's."""
    if not host.wired():
        raise OtaError("this CCM cannot drive the host's BOOT0/NRST: host OTA is not wired")
    rec = host.pending()
    if not (rec and rec.get("deferred")) and host.short_of_heap():  # the next boot does it, on a lean heap
        host.defer()
        progress("rebooting to flash the host", 0, 1)
        reboot(500)
        while True:  # the reboot ends this boot's work; the receiver's job resumes at the next (ota/state.json)
            await sleep_ms_async(1000)
    bundle = open_bundle()
    parts = [(n, p) for n, p in bundle.parts.items() if str(p.get("type", "")).upper() == "STM32"]
    if not parts:
        raise OtaError("bad bundle: a ccm_host bundle needs a part of type STM32")
    images = []
    for i, (name, p) in enumerate(parts):
        addr = p.get("addr")
        if type(addr) is not int:
            raise OtaError("bad bundle: part %s has no numeric addr" % name)
        path = receiver.dir + ("/host%d.bin" % i if i else "/host.bin")
        try:
            with open(path, "wb") as out:
                await paced(bundle.copy_steps(name, out, lambda d, t: progress("unpacking", d, t)))
        except OSError as e:
            raise OtaError("no room to unpack part %s (%s): free space on the CCM" % (name, e)) from None
        images.append((path, addr, p["size"]))
    bundle = None  # read: its reader's code goes before the flasher's comes in
    unload("ccm.ota.bundle", "ccm.ota.zipread")
    info = None
    for path, addr, size in images:
        summary = await host.flash(path, addr, size, progress)
        info = summary.get("host")
        if info is None:
            raise OtaError(
                "the host was flashed and verified but does not answer Sys.Info: the image does not boot "
                "(flash a working one; the bootloader is in ROM, so the host stays recoverable)"
            )
    return "host updated: it runs %s" % info.get("fw_version")
