"""Config.Save is atomic: a process killed at any instant of a save leaves the old or the new config."""

import json
import os
import random
import signal
import subprocess
import sys
import time

from ccm.config import Config

WRITER = r"""
import sys
from ccm.config import Config
c = Config(path=sys.argv[1])
print("ready", flush=True)
i = int(c.get("mqtt.keep_alive"))
while True:
    i += 1
    pad = str(i) * (4000 // len(str(i)))
    c.set({"device": {"id": "dev-%d-%s" % (i, pad)}, "mqtt": {"keep_alive": i, "server": "host-%d:1883" % i}})
    c.save()
"""


def test_killing_the_saver_at_random_instants_always_leaves_a_valid_config(tmp_path):
    path = str(tmp_path / "conf.json")
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    seen = set()
    last = 60  # the default keep_alive: nothing saved yet
    for _ in range(60):
        p = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, env=env)
        assert p.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.03))
        p.send_signal(signal.SIGKILL)
        p.wait()
        c = Config(path=path)  # what the next boot does
        i = c.get("mqtt.keep_alive")
        assert i >= last, "a saved config was lost"  # never back to an older one, or to the defaults
        if i != 60:
            with open(path) as f:
                saved = json.loads(f.read())  # the file itself is whole
            assert saved["mqtt"]["keep_alive"] == i
            assert c.get("mqtt.server") == "host-%d:1883" % i
            assert c.get("device.id").startswith("dev-%d-" % i)  # from the same save: never torn
        assert not os.path.exists(path + ".tmp")
        last = i
        seen.add(i)
    assert len(seen) > 10  # the kills really landed at many different points of the run
