"""The examples run, against the virtual CCM."""

import os
import subprocess
import sys
import time

from sim.ccm import VirtualCcm


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_lamp_host_follows_the_shadow_and_answers_calls():
    reports = []
    with VirtualCcm({"device": {"id": "ccm-lamp"}}) as v:
        v.ccm.router.add("Shadow.Report", lambda params, call: reports.append(params))
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        p = subprocess.Popen(
            [sys.executable, "examples/lamp_host.py", v.path], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert "talking to CCM ccm-lamp" in p.stdout.readline()
            assert v.call("Lamp.Set", {"on": True, "brightness": 40}) == {"on": True, "brightness": 40}
            v.notify_host("Shadow.Delta", {"on": False})
            wait_until(lambda: reports and reports[-1] == {"on": False, "brightness": 40})
            assert v.call("Sum", [20, 22]) == 42
            assert v.call("Sys.GetInfo")["device_id"] == "ccm-lamp"  # the CCM's own method, not the host's
        finally:
            p.terminate()
            p.wait(10)
    assert p.returncode == 0
