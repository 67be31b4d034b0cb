"""The sans-I/O JSON-RPC core: framing, encoding, dispatch, pending calls. Portable (CPython + MicroPython)."""

import json

from fwtest import raises

from ccm import rpc


def frames(framer, *chunks):
    out = []
    for c in chunks:
        out.extend(framer.feed(c))
    return out


def test_one_frame_per_line_with_cr_and_blank_lines():
    f = rpc.Framer()
    got = frames(f, b'{"id":1,"method":"Sum","params":[2,3]}\r\n\r\n\n{"method":"X"}\n')
    assert got == [{"id": 1, "method": "Sum", "params": [2, 3]}, {"method": "X"}]
    assert f.buf == b""


def test_frame_without_newline_ends_when_its_object_closes():
    f = rpc.Framer()
    assert frames(f, b'{"id":1,"method":"A"}') == [{"id": 1, "method": "A"}]
    assert frames(f, b'{"id":2,"method":"B","params":{"s":"}{"}}') == [{"id": 2, "method": "B", "params": {"s": "}{"}}]
    # two newline-less frames in one read: split where the first closes, once the read ends on a close
    assert frames(f, b'{"id":3,"method":"C"}{"id":4,', b'"method":"D"}') == [
        {"id": 3, "method": "C"},
        {"id": 4, "method": "D"},
    ]


def test_frames_back_to_back_on_one_line_are_split():
    f = rpc.Framer()
    got = frames(f, b'{"a":1}{"b":"\\"}"}[{"c":3}]\n')
    assert got == [{"a": 1}, {"b": '"}'}, [{"c": 3}]]


def test_noise_before_a_frame_is_dropped():
    f = rpc.Framer()
    got = frames(f, b"boot: rst:0x1 (POWERON)\n\x00\xff\xfe garbage", b' {"id":7,"method":"M"}\n')
    assert got == [{"id": 7, "method": "M"}]


def test_split_anywhere_gives_the_same_frames():
    stream = b'x{"id":1,"method":"Sum","params":[2,3]}\n{"method":"N","params":{"a":"b\\n"}}{"id":2,"method":"Q"}\r\n'
    whole = frames(rpc.Framer(), stream)
    assert len(whole) == 3
    for i in range(len(stream)):
        assert frames(rpc.Framer(), stream[:i], stream[i:]) == whole, i
    f = rpc.Framer()
    assert frames(f, *[stream[i : i + 1] for i in range(len(stream))]) == whole


def test_bad_json_is_a_parse_error_and_the_next_frame_is_served():
    f = rpc.Framer()
    got = frames(f, b'{"id":1,"method":tru}\n{"id":2,\n{"id":3,"method":"ok"}\n')
    assert [type(g) for g in got[:2]] == [rpc.FrameError, rpc.FrameError]
    assert got[0].code == rpc.PARSE_ERROR and got[1].code == rpc.PARSE_ERROR
    assert got[2] == {"id": 3, "method": "ok"}


def test_oversize_frame_is_rejected_and_next_frame_served():
    f = rpc.Framer(64)
    big = b'{"id":1,"method":"M","params":"' + b"x" * 200 + b'"}'
    got = frames(f, big[:50], big[50:120], big[120:] + b'\n{"id":2,"method":"ok"}\n')
    assert len(got) == 2
    assert got[0].code == rpc.INVALID_REQUEST and "max_frame_size" in got[0].message
    assert got[1] == {"id": 2, "method": "ok"}
    assert len(f.buf) <= 64


def test_oversize_line_without_json_end_is_discarded_to_the_newline():
    f = rpc.Framer(32)
    got = frames(f, b'{"a":"' + b"y" * 100, b"z" * 100, b'"}}}}\n{"ok":1}\n')
    assert len(got) == 2 and got[0].code == rpc.INVALID_REQUEST and got[1] == {"ok": 1}


def test_buffer_never_exceeds_the_limit():
    f = rpc.Framer(100)
    for chunk in (b"{" * 30, b'"' * 70, b"[" * 90, b"\x00" * 500, b'{"k":' + b"1" * 300):
        f.feed(chunk)
        assert len(f.buf) <= 100


def test_encoding_is_compact_in_the_manuals_member_order():
    assert rpc.encode_request(12007, "Sum", [2, 3]) == b'{"id":12007,"method":"Sum","params":[2,3]}\n'
    assert rpc.encode_request(1, "RPC.List") == b'{"id":1,"method":"RPC.List"}\n'
    assert rpc.encode_notification("Shadow.Delta", {"on": True}) == b'{"method":"Shadow.Delta","params":{"on":true}}\n'
    assert rpc.encode_result(12007, 5) == b'{"id":12007,"result":5}\n'
    assert (
        rpc.encode_error(12008, rpc.METHOD_NOT_FOUND)
        == b'{"id":12008,"error":{"code":-32601,"message":"method not found"}}\n'
    )
    assert rpc.encode_result(1, None, jsonrpc=True) == b'{"jsonrpc":"2.0","id":1,"result":null}\n'


def test_kind_tells_requests_notifications_responses():
    assert rpc.kind({"id": 1, "method": "A"}) == rpc.REQUEST
    assert rpc.kind({"id": None, "method": "A"}) == rpc.REQUEST
    assert rpc.kind({"method": "A", "params": 1}) == rpc.NOTIFICATION
    assert rpc.kind({"id": 1, "result": 0}) == rpc.RESPONSE
    assert rpc.kind({"id": 1, "error": {}}) == rpc.RESPONSE
    assert rpc.kind({"method": 5}) == rpc.INVALID
    assert rpc.kind([1]) == rpc.INVALID
    assert rpc.kind({"id": 1}) == rpc.INVALID


def dispatcher():
    d = rpc.Dispatcher()
    d.add("Sum", lambda p, c: p[0] + p[1])
    d.add("Fail", lambda p, c: (_ for _ in ()).throw(rpc.RpcError(rpc.INVALID_PARAMS, "bad a")))
    d.add("Crash", lambda p, c: 1 // 0)
    return d


def run(d, frame):
    out = []
    d.dispatch(json.loads(frame), out.append)
    return out


def test_requests_get_exactly_one_reply_and_notifications_none():
    d = dispatcher()
    assert run(d, '{"id":1,"method":"Sum","params":[2,3]}') == [b'{"id":1,"result":5}\n']
    assert run(d, '{"method":"Sum","params":[2,3]}') == []
    assert run(d, '{"method":"Nope"}') == []
    assert run(d, '{"method":"Crash"}') == []
    assert run(d, '{"id":"x","method":"Nope","params":true}') == [
        b'{"id":"x","error":{"code":-32601,"message":"method not found"}}\n'
    ]


def test_handler_errors_become_json_rpc_errors():
    d = dispatcher()
    assert run(d, '{"id":2,"method":"Fail"}') == [b'{"id":2,"error":{"code":-32602,"message":"bad a"}}\n']
    r = json.loads(run(d, '{"id":3,"method":"Crash"}')[0])
    assert r["id"] == 3 and r["error"]["code"] == rpc.INTERNAL_ERROR


def test_invalid_requests_and_batches():
    d = dispatcher()
    assert run(d, '{"id":4,"method":7}') == [b'{"id":4,"error":{"code":-32600,"message":"invalid request"}}\n']
    assert json.loads(run(d, "[]")[0])["error"]["code"] == rpc.INVALID_REQUEST
    got = json.loads(run(d, '[{"id":1,"method":"Sum","params":[1,1]},{"method":"Sum","params":[0,0]},5]')[0])
    assert got == [{"id": 1, "result": 2}, {"id": None, "error": {"code": -32600, "message": "invalid request"}}]
    assert run(d, '[{"method":"Sum","params":[1,1]}]') == []


def test_deferred_answer_and_fallback():
    d = dispatcher()
    held = []
    d.fallback = lambda call: held.append(call)
    out = []
    d.dispatch({"id": 9, "method": "Elsewhere", "params": [1]}, out.append)
    assert out == [] and held[0].method == "Elsewhere"
    held[0].relay({"id": 555, "result": "ok"})
    held[0].reply("twice")  # a second answer is never sent
    assert out == [b'{"id":9,"result":"ok"}\n']


def test_batch_waits_for_deferred_members():
    d = dispatcher()
    held = []
    d.fallback = held.append
    out = []
    d.dispatch([{"id": 1, "method": "Far"}, {"id": 2, "method": "Sum", "params": [1, 2]}], out.append)
    assert out == []
    held[0].relay({"id": 77, "error": {"code": -32601, "message": "method not found"}})
    assert json.loads(out[0]) == [
        {"id": 2, "result": 3},
        {"id": 1, "error": {"code": -32601, "message": "method not found"}},
    ]


def test_pending_ids_responses_and_timeouts():
    p = rpc.Pending(limit=2, first_id=0x7FFFFFFF)
    got = []
    a = p.add(got.append, 100, 0)
    b = p.add(got.append, 50, 0)
    assert a == 0x7FFFFFFF and b == 1  # wraps, skipping 0
    raises(rpc.RpcError, p.add, got.append, 10, 0)
    assert p.resolve({"id": a, "result": 1}) and not p.resolve({"id": a, "result": 1})
    assert p.expire(49) == 0 and p.expire(50) == 1
    assert got == [{"id": a, "result": 1}, {"id": b, "error": {"code": -32000, "message": "host timeout"}}]
    assert p.table == {}


def test_a_frame_there_is_no_heap_for_is_an_internal_error_and_the_next_one_parses():
    """MicroPython's MemoryError while a frame is parsed is not bad JSON: -32603 "out of memory", and the
    framer goes on (no frame may stop the link)."""
    real = rpc.json

    class ShortOfHeap:
        def loads(self, text):
            if "big" in text:
                raise MemoryError("memory allocation failed, allocating 2800 bytes")
            return real.loads(text)

    rpc.json = ShortOfHeap()
    try:
        got = frames(rpc.Framer(), b'{"id":1,"method":"big"}\n{"id":2,"method":"A"}\n')
    finally:
        rpc.json = real
    assert type(got[0]) is rpc.FrameError and got[0].code == rpc.INTERNAL_ERROR, got
    assert "out of memory" in got[0].message
    assert got[1] == {"id": 2, "method": "A"}
