"""Property-based fuzzing of the whole virtual CCM's UART (issue 10): generated hostile streams — noise,
splits at random points, oversize, invalid UTF-8, deep nesting, odd ids, wrong-typed params for every
built-in, batches, notifications — written to its pty the way a host would. Each time: the link still
answers, every request got exactly one well-formed answer (notifications none), nothing rebooted, and the
framer holds no more than rpc.max_frame_size. The long run of the same generator is bench/soak.py."""

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccm import rpc
from sim.hostile import WRONG_PARAMS, HostileFrames, exchange, fuzz_target

LIMIT = 1024


@pytest.fixture(scope="module")
def uart():
    v, fd, reboots = fuzz_target(LIMIT)
    builtins = v.call("RPC.List")
    yield v, fd, reboots, builtins
    os.close(fd)
    v.stop()


def splits(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.lists(st.integers(0, 10**7), max_size=30))
def test_no_stream_of_hostile_frames_stops_the_link_or_loses_an_answer(uart, seed, count, cuts):
    v, fd, reboots, builtins = uart
    data, expect = HostileFrames(random.Random(seed), LIMIT, builtins).stream(count)
    lines = exchange(fd, splits(data, cuts), expect.sentinel)
    problems, _ = expect.check(lines)
    assert not problems, problems
    assert reboots == []
    link = v.ccm.link
    assert len(link.framer.buf) <= LIMIT and not link._tx
    assert link.stats["tx_dropped"] == 0


def test_every_built_in_refuses_wrong_params_with_nothing_done(uart):
    v, fd, reboots, builtins = uart
    assert {"Sys.Reboot", "Config.Save", "MQTT.Pub", "Shadow.Get", "OTA.Begin", "Wifi.Scan"} <= set(builtins)
    conf = os.path.join(v.board.fs_dir, "conf.json")
    saved = open(conf, "rb").read() if os.path.exists(conf) else None
    frames = []
    n = 0
    for method in builtins:
        for params in WRONG_PARAMS:
            if method == "Shadow.Report":
                continue  # takes any JSON value as the reported state
            n += 1
            frames.append(b'{"id":%d,"method":"%s","params":%s}\n' % (n, method.encode(), params.encode()))
    frames.append(b'{"id":"end","method":"RPC.List"}\n')
    lines = exchange(fd, frames, "end")
    import json

    answers = [json.loads(x) for x in lines if b'"method"' not in x]
    codes = {a["id"]: a.get("error", {}).get("code") for a in answers}
    assert len(codes) == n + 1
    wrong = {frames[i - 1][:70]: c for i, c in codes.items() if i != "end" and c != rpc.INVALID_PARAMS}
    assert not wrong, wrong
    assert reboots == []
    assert (open(conf, "rb").read() if os.path.exists(conf) else None) == saved
    assert v.call("OTA.Status")["state"] == 0
    assert v.ccm.mqtt.queue == [] and v.ccm.cloud.host_mqtt.subs == {}
