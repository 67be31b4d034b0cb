"""Frames per second through the JSON-RPC framer + dispatcher, on CPython and on MicroPython, next to
what the UART can carry (10 bits per byte, 8N1).

    .venv/bin/python bench/rpc_link.py [FRAMES]

Targets (issue 2): on MicroPython >= 20x the 921600-baud line rate, and <= 1 KiB allocated per 60-byte
Shadow.Report frame. MicroPython here is the WebAssembly port under Node: the same bytecode VM and heap
as on the ESP32, on a faster CPU, so the ratio says how much headroom the code leaves, not ESP32 speed.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BAUDS = (115200, 921600)


def run_cpython(n):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/rpc_core.py"), str(n)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        check=True,
    )
    return json.loads(out.stdout)


def run_micropython(n):
    out = subprocess.run(
        ["node", str(ROOT / "tests/mpy/run.mjs"), str(ROOT / "bench/rpc_core.py"), str(n)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    results = [run_cpython(n), run_micropython(n)]
    print(f"JSON-RPC framer + dispatcher, {n} frames fed in 256-byte UART reads (best of 5)\n")
    head = f"{'runtime':<12} {'frame':<22} {'bytes':>5} {'frames/s':>10}"
    head += "".join(f" {'x ' + str(b // 1000) + 'k line':>12}" for b in BAUDS) + f" {'alloc B/frame':>14}"
    print(head)
    print("-" * len(head))
    for r in results:
        for name, label in (("report", "Shadow.Report (notif.)"), ("sum", "Sum request + reply")):
            m = r[name]
            line_rates = [b / 10 / m["frame_bytes"] for b in BAUDS]
            row = f"{r['runtime']:<12} {label:<22} {m['frame_bytes']:>5} {m['frames_per_s']:>10.0f}"
            row += "".join(f" {m['frames_per_s'] / lr:>11.1f}x" for lr in line_rates)
            row += f" {m['alloc_per_frame']:>14.0f}" if m["alloc_per_frame"] is not None else f" {'-':>14}"
            print(row)
    print()
    for b in BAUDS:
        print(f"wire at {b} baud: {b / 10 / results[0]['report']['frame_bytes']:.0f} Shadow.Report frames/s")
    mp = results[1]["report"]
    print(
        f"\nMicroPython vs. 921600 line rate: {mp['frames_per_s'] / (BAUDS[1] / 10 / mp['frame_bytes']):.1f}x (target >= 20x)"
    )
    print(f"MicroPython bytes allocated per Shadow.Report frame: {mp['alloc_per_frame']:.0f} (target <= 1024)")


if __name__ == "__main__":
    main()
