"""What the OTA receiver (ccm/ota/receiver.py) and the helpers it loads on demand (finish.py, pull.py,
reboot.py, the appliers) share: OTA.Status's states, the error an update fails with, and the helpers'
module names. Its own module, so that a helper need not import the receiver that imports it — and so
that OTA.Status can be answered while no receiver is loaded (idle_status)."""

IDLE = 0
PROGRESS = 1
ERROR = 2
SUCCESS = 3

# what one update loads besides the receiver (ccm.ota.*): dropped when it ends (on a stock image their
# bytecode is heap). One string, not a tuple of names: this module is held through every upload.
HELPERS = "finish bundle zipread p256 apply stage steps fetch stm32 an3155 stm32_chips fsarchive"


def drop_helpers():
    """Forget the helpers one update loaded (HELPERS), so the GC frees their code."""
    from ccm.compat import unload

    unload(*["ccm.ota." + name for name in HELPERS.split()])


# OTA.Write sizes by free heap (MicroPython): a chunk is held three times over while it is decoded (the
# frame, its JSON string, the bytes), each in one piece — on a small heap a smaller chunk finds room
CHUNKS = ((64 * 1024, 2048), (24 * 1024, 1024), (0, 512))


class OtaError(Exception):
    pass


def chunk_hint():
    """The OTA.Write size to ask clients for (OTA.Status `chunk`): by the free heap on MicroPython."""
    import gc

    if not hasattr(gc, "mem_free"):  # CPython
        return CHUNKS[0][1]
    gc.collect()
    free = gc.mem_free()
    for least, size in CHUNKS:
        if free >= least:
            return size


def status_fields(state, progress, message, stage, version=None, last=None, installed=None):
    """OTA.Status's fields, the receiver's (OtaReceiver.status) and the idle ones (idle_status) alike."""
    st = {"state": state, "progress": progress, "message": message, "stage": stage}
    if version is not None:
        st["version"] = version
    if last is not None:
        st["last"] = last
    if installed:
        st["installed"] = installed
    return st


def idle_status(saved):
    """OTA.Status while no receiver is loaded (ccm/main.py): nothing is in flight then — the receiver is
    kept from the first upload or trigger on, and at boot while ota/state.json (`saved`) holds a job or a
    trial to settle — so this is what a receiver loaded now would answer, without its code in the heap
    (a client polls Status across the reboot into its update, while that boot connects TLS)."""
    st = status_fields(IDLE, 0, "", "", None, saved.get("last"), saved.get("installed"))
    st["chunk"] = chunk_hint()
    return st


def serve_idle_status(ccm, params, call):
    """OTA.Status's handler until the receiver loads (ccm/main.py: loaded for each call, as this module)."""
    from ccm import rpc
    from ccm.files import read_json

    rpc.take(params)
    return idle_status(read_json((ccm.fs_root() or "").rstrip("/") + "/ota/state.json"))
