"""The live heap on MicroPython's WebAssembly port, for benchmarks (bench/ota.py, bench/memory.py).

That port's GC frees nothing until Python has returned to the JS event loop (its conservative scan still
sees every dead object; sleep_ms(0) does not leave the turn), and now and then one collection still
misses some: the live heap is at most the smaller of two readings taken after real sleeps. Imports only
gc and asyncio, so a baseline taken with it counts no firmware."""

import asyncio
import gc


async def live_heap():
    got = []
    for _ in range(2):
        await asyncio.sleep_ms(2)
        gc.collect()
        got.append(gc.mem_alloc())
    return min(got)
