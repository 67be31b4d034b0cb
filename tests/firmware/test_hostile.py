"""Hostile frames on the host link (issue 10): none stops it, every request gets exactly one well-formed
answer. Portable: the same verdicts on CPython and MicroPython, whose json modules differ (docs/architecture.md, the runtimes)."""

import json

from fwtest import boot, scratch_path

from ccm import config as config_mod
from ccm import rpc
from ccm.compat import sleep_ms_async

PING = b'{"id":"ping","method":"RPC.List"}\n'


async def answered_after(host, frame):
    """Send `frame` then a ping; return the frames that came back before the ping's answer."""
    host.write(frame + PING)
    got = []
    while True:
        line = await host.raw_frame()
        line.decode()  # every reply is valid UTF-8 ...
        reply = json.loads(line)  # ... and JSON
        if type(reply) is dict and reply.get("id") == "ping":
            assert "RPC.List" in reply["result"]
            return got
        got.append(reply)


def error_code(reply):
    assert type(reply) is dict and reply["id"] is None, reply
    return reply["error"]["code"]


async def test_frames_that_used_to_stop_the_link_are_parse_errors():
    router, link, host, task = await boot()
    for frame in (
        b'{"id":"\\udc00"}\n',
        b'{"id":"\xed\xa0\x80","method":"RPC.List"}\n',  # a surrogate in raw UTF-8
        b'{"id":1,"method":"Config.Get","params":{"key":"\\ud800"}}\n',
        b'{"id":1,"method":"X","params":"\\ud83d x"}\n',  # a high surrogate with no low one
        b'{"id":' + b"[" * 978 + b"]" * 978 + b',"method":"RPC.List"}\n',
        b'{"id":2,"method":"RPC.List","params":' + b"[" * 40 + b"]" * 40 + b"}\n",
        b'{"id":3,"method":"X","params":"\xc0\xaf"}\n',  # overlong
        b'{"id":4,"method":"X","params":"\xf4\x90\x80\x80"}\n',  # beyond U+10FFFF
        b'{"id":5,"method":"X","params":"\xff"}\n',
    ):
        got = await answered_after(host, frame)
        assert [error_code(r) for r in got] == [rpc.PARSE_ERROR], (frame[:40], got)
    task.cancel()


async def test_escaped_surrogate_pairs_are_one_character_on_both_runtimes():
    router, link, host, task = await boot()
    router.add("Echo", lambda params, call: params)
    host.write(b'{"id":1,"method":"Echo","params":"\\ud83d\\ude00 \\\\ud800"}\n')
    line = await host.raw_frame()
    assert line == '{"id":1,"result":"\U0001f600 \\\\ud800"}\n'.encode()
    task.cancel()


async def test_ids_that_are_not_string_number_or_null_are_invalid_requests_answered_with_id_null():
    router, link, host, task = await boot()
    for bad in (b"true", b"false", b"[1]", b"{}", b'{"a":1}'):
        got = await answered_after(host, b'{"id":' + bad + b',"method":"RPC.List"}\n')
        assert [error_code(r) for r in got] == [rpc.INVALID_REQUEST], (bad, got)
    host.write(b'{"id":1.5,"method":"No.Such"}\n{"id":null,"method":"No.Such"}\n')
    assert json.loads(await host.raw_frame())["id"] == 1.5
    assert json.loads(await host.raw_frame())["id"] is None
    task.cancel()


async def test_non_finite_numbers_are_parse_errors_never_sent_on():
    router, link, host, task = await boot()
    router.add("Echo", lambda params, call: params)
    for num in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400 + b".0"):
        got = await answered_after(host, b'{"id":1,"method":"Echo","params":[' + num + b"]}\n")
        assert [error_code(r) for r in got] == [rpc.PARSE_ERROR], (num[:20], got)
    task.cancel()


async def test_empty_batch_gets_one_invalid_request():
    router, link, host, task = await boot()
    got = await answered_after(host, b"[]\n")
    assert [error_code(r) for r in got] == [rpc.INVALID_REQUEST]
    got = await answered_after(host, b'[{"method":"Note"}]\n[1]\n')  # notifications only: nothing
    assert got == [[{"id": None, "error": {"code": rpc.INVALID_REQUEST, "message": "invalid request"}}]]
    task.cancel()


async def test_pipelined_requests_all_get_answers_though_the_queue_is_small():
    router, link, host, task = await boot({"rpc": {"tx_queue": 4}})
    gate = []  # the host is slow to take bytes: drain() waits while the gate is shut

    async def slow_drain():
        while not gate:
            await sleep_ms_async(2)

    link.stream.drain = slow_drain
    host.write(b"".join(b'{"id":%d,"method":"RPC.List"}\n' % i for i in range(60)))
    await sleep_ms_async(50)
    assert len(link._tx) <= 4 + 256 // 28  # the bound, plus the answers to one read at most
    assert host.end.tx.buf, "the CCM stopped reading while its queue was full"
    gate.append(1)
    ids = []
    while len(ids) < 60:
        ids.append(json.loads(await host.raw_frame())["id"])
    assert ids == list(range(60))
    assert link.stats["tx_dropped"] == 0 and link.stats["rx_paused"] > 0
    task.cancel()


async def test_wrong_params_of_built_ins_are_refused_before_anything_happens():
    router, link, host, task = await boot()
    path = scratch_path("hostile-conf.json")
    config_mod.serve(router, router.config)
    router.config.path = path
    reboots = []
    router.on_reboot = reboots.append
    cases = [
        ("Sys.Reboot", b'"x"'),
        ("Sys.Reboot", b'{"delay_ms":"5"}'),
        ("Sys.Reboot", b'{"delay_ms":-1}'),
        ("Sys.Reboot", b'{"dealy_ms":5}'),
        ("Config.Save", b'"x"'),
        ("Config.Save", b'{"reboot":"yes"}'),
        ("Config.Set", b'{"config":{"device":{"id":"x"}},"save":1}'),
        ("Config.Set", b'{"config":5}'),
        ("Config.Get", b'{"key":5}'),
        ("RPC.List", b'"x"'),
        ("Sys.GetInfo", b"[1]"),
    ]
    for method, params in cases:
        host.write(b'{"id":7,"method":"%s","params":%s}\n' % (method.encode(), params))
        reply = json.loads(await host.raw_frame())
        assert reply["error"]["code"] == rpc.INVALID_PARAMS, (method, params, reply)
    assert reboots == []
    assert router.config.get("device.id") != "x"
    try:
        open(path).close()
        raise AssertionError("Config.Save with wrong params saved")
    except OSError:
        pass
    task.cancel()
