"""The suite's leak guard (tests/conftest.py) fails the test that leaves a thread or a child process
running — it is what keeps one test's virtual device from disturbing the next ones."""

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

LEAKY = """
import subprocess, sys, threading, time

def test_leaves_a_thread():
    threading.Thread(target=time.sleep, args=(30,), daemon=True, name="left behind").start()

def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(8)"])  # outlives the 5 s grace, then ends

def test_cleans_up():
    t = threading.Thread(target=time.sleep, args=(0.1,))
    t.start()
    t.join()
"""


def test_the_guard_fails_a_test_that_leaves_a_thread_or_a_process_running(tmp_path):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout
    assert "test_leaves_a_thread left running after its end: thread 'left behind'" in out.stdout
    assert "test_leaves_a_process left running after its end: process" in out.stdout
    assert "3 passed, 2 errors" in out.stdout  # each leak is an error at its test's teardown; the clean one passes
