"""Soak the virtual CCM's UART with hostile frames (issue 10): 1e5+ frames from sim/hostile.py — the
fuzz suite's generator — written through the pty in random-sized pieces, every answer checked.

    .venv/bin/python bench/soak.py [FRAMES] [SEED]

Prints frames/s next to what a 115200 and a 921600 baud UART carry, the answers by error code, and the
process's memory growth after warm-up (RSS and Python heap). Fails (exit 1) on the first stream whose
answers are wrong: a request answered twice or never, a reply that is not JSON, a reboot.
"""

import os
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.hostile import HostileFrames, exchange, fuzz_target  # noqa: E402

LIMIT = 1024
STREAM = 200  # frames per exchange


def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    v, fd, reboots = fuzz_target(LIMIT)
    gen = HostileFrames(rng, LIMIT, v.call("RPC.List"))
    kinds, codes = Counter(), Counter()
    sent = frames = 0
    rss0 = heap0 = None
    t0 = time.perf_counter()
    try:
        while frames < total:
            data, expect = gen.stream(STREAM)
            cuts = sorted(rng.randrange(len(data)) for _ in range(rng.randint(0, 40)))
            chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
            problems, got = expect.check(exchange(fd, chunks, expect.sentinel))
            if problems or reboots:
                print(f"FAIL after {frames} frames (seed {seed}): {problems or reboots}")
                return 1
            kinds += expect.kinds
            codes += got
            frames += STREAM + 1
            sent += len(data)
            if rss0 is None and frames >= min(total // 10, 5000):  # warmed up: measure from here
                tracemalloc.start()
                rss0 = rss_kib()
                t_warm, frames_warm, sent_warm = time.perf_counter(), frames, sent
            if heap0 is None and frames >= total // 2:  # what tracing itself holds has settled by now
                heap0, rss_mid = tracemalloc.get_traced_memory()[0], rss_kib()
        dt = time.perf_counter() - t_warm
        heap1 = tracemalloc.get_traced_memory()[0]
        n, b = frames - frames_warm, sent - sent_warm
        link = v.ccm.link
        print(f"soak: {frames} hostile frames ({sent / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s, seed {seed}")
        print(f"  measured after warm-up: {n / dt:,.0f} frames/s, {b / dt / 1e6:.2f} MB/s")
        for baud in (115200, 921600):
            line = baud / 10
            print(f"  vs a {baud} baud UART ({line / 1e3:.1f} kB/s): {b / dt / line:,.1f}x the line rate")
        print("  frames by kind: " + ", ".join(f"{k} {c}" for k, c in sorted(kinds.items())))
        print("  answers by code: " + ", ".join(f"{k} {c}" for k, c in sorted(codes.items(), key=str)))
        print(f"  link stats: {link.stats}")
        print(
            f"  memory: RSS {rss_kib() - rss0:+d} KiB after warm-up; over the second half ({frames - total // 2} frames)"
            f" RSS {rss_kib() - rss_mid:+d} KiB, live Python heap {(heap1 - heap0) / 1024:+.1f} KiB"
        )
        print("  every request answered exactly once, no reply lost, no reboot, the link still up")
        return 0
    finally:
        os.close(fd)
        v.stop()


if __name__ == "__main__":
    sys.exit(main())
