"""Running the generators an update's long work is written as (a part hashed, unpacked, written to
flash: a step at a time): all at once where nothing else runs (the PC's check(), a boot's own work), or
paced on the CCM so that the UART link, MQTT and /rpc keep their turns. Here, not in ccm/compat.py:
only update code needs them, and it loads when an update does."""

from ccm.compat import sleep_ms_async, ticks_diff, ticks_ms


def drain(steps):
    """Run a generator to its end, all at once; what it returns. The PC's synchronous check()/copy_part()
    /unpack(): the same steps the CCM runs with paced()."""
    while True:
        try:
            next(steps)
        except StopIteration as e:
            return e.value


async def paced(steps, slice_ms=20):
    """Run a generator to its end, giving the event loop a turn every `slice_ms`: a long check or copy
    (hashing a part, unpacking, writing flash) must not freeze the UART link, MQTT or /rpc. Returns
    what the generator returns."""
    t = ticks_ms()
    while True:
        try:
            next(steps)
        except StopIteration as e:
            return e.value
        if ticks_diff(ticks_ms(), t) >= slice_ms:
            await sleep_ms_async(0)
            t = ticks_ms()
