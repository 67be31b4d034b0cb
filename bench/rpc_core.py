# Frames through ccm.rpc's framer + dispatcher, on whichever runtime runs this file (CPython or
# MicroPython: bench/rpc_link.py runs it on both). Prints one JSON line of results.
import gc
import json
import sys
import time

from ccm import rpc

try:
    _us = time.ticks_us
    _diff = time.ticks_diff
except AttributeError:

    def _us():
        return int(time.perf_counter() * 1e6)

    def _diff(a, b):
        return a - b


REPORT = b'{"method":"Shadow.Report","params":{"on":true,"uptime":1327}}\n'
SUM = b'{"id":12007,"method":"Sum","params":[2,3]}\n'
CHUNK = 256  # what ccm/link.py reads from the UART at a time


def chunks(frame, n):
    stream = frame * n
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def measure(frame, n, rounds):
    d = rpc.Dispatcher()
    d.add("Shadow.Report", lambda params, call: None)
    d.add("Sum", lambda params, call: params[0] + params[1])
    out = []
    send = out.append
    data = chunks(frame, n)
    best = None
    for _ in range(rounds):
        f = rpc.Framer(4096)
        out.clear()
        gc.collect()
        t0 = _us()
        for c in data:
            for m in f.feed(c):
                d.dispatch(m, send)
        dt = _diff(_us(), t0)
        best = dt if best is None or dt < best else best
    assert len(out) == (n if b'"id"' in frame else 0)
    alloc = None
    if hasattr(gc, "mem_alloc"):  # MicroPython: bytes allocated per frame, collector off
        f = rpc.Framer(4096)
        out.clear()
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        for c in data[:40]:
            for m in f.feed(c):
                d.dispatch(m, send)
        a1 = gc.mem_alloc()
        gc.enable()
        per = len(b"".join(data[:40])) / len(frame)
        alloc = (a1 - a0) / per
    return {"frame_bytes": len(frame), "frames_per_s": n * 1e6 / best, "alloc_per_frame": alloc}


n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
measure(SUM, n, 2)  # warm-up: lets Node tier the wasm VM up before anything is timed
print(json.dumps({"runtime": sys.implementation.name, "report": measure(REPORT, n, 5), "sum": measure(SUM, n, 5)}))
