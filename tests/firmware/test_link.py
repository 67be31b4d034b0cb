"""The host link and the router over an in-memory UART. Portable (CPython + MicroPython)."""

import asyncio
import json

from fwtest import boot

from ccm import rpc
from ccm.compat import sleep_ms_async


async def test_host_calls_ccm_methods():
    router, link, host, task = await boot()
    host.write(b'{"id":1,"method":"RPC.List"}\n')
    r = await host.frame()
    assert r["id"] == 1 and "Sys.GetInfo" in r["result"] and "RPC.List" in r["result"]
    host.write(b'{"id":"s","method":"Sys.GetInfo"}\r\n')
    r = await host.frame()
    assert r["id"] == "s" and r["result"]["device_id"] == "ccm-000000" and "uptime" in r["result"]
    task.cancel()


async def test_caller_request_is_forwarded_to_the_host_and_answered_with_the_callers_id():
    router, link, host, task = await boot()
    link.pending.next_id = 12007
    answer = asyncio.create_task(router.call("Sum", [2, 3]))
    assert await host.raw_frame() == b'{"id":12007,"method":"Sum","params":[2,3]}\n'
    host.write(b'{"id":12007,"result":5}\n')
    assert await answer == 5
    # a network caller's own id comes back, whatever id the CCM used on the UART
    out = []
    router.dispatch({"id": "cloud-7", "method": "Sum", "params": [4, 5]}, out.append, "mqtt")
    req = await host.frame()
    host.write(b'{"id":%d,"result":9}\n' % req["id"])
    while not out:
        await sleep_ms_async(1)
    assert out == [b'{"id":"cloud-7","result":9}\n']
    task.cancel()


async def test_host_error_reaches_the_caller():
    router, link, host, task = await boot()
    link.pending.next_id = 12008
    answer = asyncio.create_task(router.call("This_Function_Does_Not_Exist", True))
    assert await host.raw_frame() == b'{"id":12008,"method":"This_Function_Does_Not_Exist","params":true}\n'
    host.write(b'{"id":12008,"error":{"code":-32601,"message":"method not found"}}\n')
    try:
        await answer
        raise AssertionError("no error")
    except rpc.RpcError as e:
        assert e.code == rpc.METHOD_NOT_FOUND and e.message == "method not found"
    task.cancel()


async def test_silent_host_gives_host_timeout_and_late_answer_is_ignored():
    router, link, host, task = await boot({"rpc": {"host_timeout_ms": 60}})
    answer = asyncio.create_task(router.call("Slow"))
    req = await host.frame()
    try:
        await answer
        raise AssertionError("no timeout")
    except rpc.RpcError as e:
        assert e.code == rpc.HOST_TIMEOUT
    host.write(b'{"id":%d,"result":1}\n' % req["id"])
    await sleep_ms_async(20)
    assert link.stats["late_responses"] == 1
    task.cancel()


async def test_host_asking_for_an_unknown_method_gets_not_found_and_notifications_get_nothing():
    router, link, host, task = await boot()
    host.write(b'{"id":5,"method":"Sum","params":[1,2]}\n{"method":"No.Such"}\n{"method":"Sys.GetInfo"}\n')
    assert await host.raw_frame() == b'{"id":5,"error":{"code":-32601,"message":"method not found"}}\n'
    assert await host.nothing_more()
    task.cancel()


async def test_malformed_and_oversize_frames_get_errors_and_the_link_lives_on():
    router, link, host, task = await boot({"rpc": {"max_frame_size": 128}})
    host.write(
        b'{"id":1,"method":nul}\n'
        + b'{"id":2,"p":"'
        + b"z" * 500
        + b'"}\n'
        + b'\x00\xffnoise{"id":3,"method":"RPC.List"}\n'
    )
    e1 = await host.frame()
    e2 = await host.frame()
    ok = await host.frame()
    assert e1["id"] is None and e1["error"]["code"] == rpc.PARSE_ERROR
    assert e2["id"] is None and e2["error"]["code"] == rpc.INVALID_REQUEST
    assert ok["id"] == 3 and "RPC.List" in ok["result"]
    assert link.stats["rx_errors"] == 2
    task.cancel()


async def test_batch_mixing_local_and_forwarded_calls():
    router, link, host, task = await boot()
    out = []
    router.dispatch(
        [{"id": 1, "method": "Sum", "params": [1, 1]}, {"id": 2, "method": "RPC.List"}, {"method": "Note"}],
        out.append,
        "ws",
    )
    fwd = await host.frame()
    note = await host.frame()
    assert fwd["method"] == "Sum" and note == {"method": "Note"}
    host.write(b'[{"id":%d,"result":2}]\n' % fwd["id"])
    while not out:
        await sleep_ms_async(1)
    got = json.loads(out[0])
    assert got[0]["id"] == 2 and got[1] == {"id": 1, "result": 2}
    task.cancel()


async def test_pending_calls_fail_when_the_uart_closes():
    router, link, host, task = await boot()
    answer = asyncio.create_task(router.call("Sum", [1, 2]))
    await host.frame()
    host.end.close()
    try:
        await answer
        raise AssertionError("no error")
    except rpc.RpcError as e:
        assert e.code == rpc.NOT_CONNECTED


async def test_queue_full_when_the_host_stops_answering():
    router, link, host, task = await boot({"rpc": {"max_pending": 2}})
    a = asyncio.create_task(router.call("A"))
    b = asyncio.create_task(router.call("B"))
    await sleep_ms_async(5)
    try:
        await router.call("C")
        raise AssertionError("no error")
    except rpc.RpcError as e:
        assert e.code == rpc.QUEUE_FULL
    a.cancel()
    b.cancel()
    task.cancel()


def test_uptime_keeps_counting_across_the_ticks_wrap():
    """ticks_ms() wraps at 2**30 ms on MicroPython: a plain ticks_diff from boot went negative after ~6 days."""
    from ccm.compat import Uptime, ticks_add

    clock = [ticks_add(0, -1000)]  # just before the wrap
    up = Uptime(lambda: clock[0])
    for _ in range(40):  # 40 steps of ~3.1 days: 124 days, the ticks wrapping 10 times
        clock[0] = ticks_add(clock[0], 2**28)
        up.seconds()
    assert up.seconds() == 40 * 2**28 // 1000
