"""The few places where MicroPython and CPython differ, behind one name each."""

import json
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # noqa: F401
except ImportError:  # CPython

    def const(x):
        return x


try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython: monotonic milliseconds; no wrap-around to care about
    _t0 = time.monotonic()

    def ticks_ms():
        return int((time.monotonic() - _t0) * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta

    def sleep_ms(ms):
        time.sleep(ms / 1000)


try:
    json.dumps("é", separators=(",", ":"), ensure_ascii=False)

    def dumps(obj):
        """Compact JSON, UTF-8 kept as is (fewer bytes on the wire)."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

except TypeError:  # MicroPython: no ensure_ascii, and it never escapes non-ASCII anyway

    def dumps(obj):
        """Compact JSON."""
        return json.dumps(obj, separators=(",", ":"))


class Uptime:
    """Time since start that survives ticks_ms() wrapping: on MicroPython ticks wrap at 2**30 ms, so
    ticks_diff() of two readings more than ~6 days apart is wrong. Read `seconds()` at least every few
    days (the CCM does it every minute) and it accumulates the small steps instead."""

    def __init__(self, ticks=None):
        self._ticks = ticks or ticks_ms
        self._last = self._ticks()
        self.ms = 0

    def seconds(self):
        now = self._ticks()
        self.ms += ticks_diff(now, self._last)
        self._last = now
        return self.ms // 1000


try:
    import asyncio
except ImportError:  # pragma: no cover - every supported runtime has it
    asyncio = None


async def sleep_ms_async(ms):
    """asyncio.sleep_ms on MicroPython, asyncio.sleep on CPython."""
    if hasattr(asyncio, "sleep_ms"):
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)


async def wait_ms(coro, ms):
    """Await `coro` for at most `ms` milliseconds (asyncio.TimeoutError after): wait_for_ms on MicroPython."""
    if hasattr(asyncio, "wait_for_ms"):
        return await asyncio.wait_for_ms(coro, ms)
    if hasattr(asyncio, "timeout"):  # CPython 3.11+: no extra task per call
        async with asyncio.timeout(ms / 1000):
            return await coro
    return await asyncio.wait_for(coro, ms / 1000)


class Waiter:
    """A one-shot value to await: what asyncio.Future is on CPython (MicroPython has no Future)."""

    def __init__(self):
        self._ev = asyncio.Event()
        self.value = None

    def set(self, value):
        if not self._ev.is_set():
            self.value = value
            self._ev.set()

    async def wait(self):
        await self._ev.wait()
        return self.value


def random_bytes(n):
    """os.urandom where the port has it (ESP32: the hardware RNG), else random's generator."""
    import os

    if hasattr(os, "urandom"):
        return os.urandom(n)
    import random

    return bytes(random.getrandbits(8) for _ in range(n))


def unload(*names):
    """Forget modules loaded for one job (an update, a request) so that the GC frees their code once
    nothing uses it: on a stock image the bytecode of .mpy files sits in the heap. MicroPython only:
    CPython keeps its modules (its tests hold references to them)."""
    if not MICROPYTHON:
        return
    for name in names:
        if sys.modules.pop(name, None) is not None:
            parent, _, leaf = name.rpartition(".")
            if parent in sys.modules and hasattr(sys.modules[parent], leaf):
                delattr(sys.modules[parent], leaf)
