"""Property tests of the framer (CPython; the same core runs on MicroPython, see tests/firmware)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccm import rpc

LIMIT = 256

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
requests = st.builds(
    lambda i, m, p: {"id": i, "method": m, "params": p},
    st.integers(0, 10**6),
    st.text(min_size=1, max_size=12),
    json_values,
)
noise = st.binary(max_size=40).map(lambda b: b.replace(b"{", b"").replace(b"[", b"").replace(b"\n", b""))


def feed_all(framer, chunks):
    out = []
    for c in chunks:
        out.extend(framer.feed(c))
        assert len(framer.buf) <= framer.max_frame_size
    return out


def splits(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(noise, requests, st.sampled_from([b"\n", b"\r\n", b"\n\n", b""])), min_size=1, max_size=6),
    st.lists(st.integers(0, 10**6), max_size=12),
)
def test_any_split_of_a_stream_gives_the_same_frames(items, cuts):
    encoded = [rpc.encode_request(r["id"], r["method"], r["params"]) for _, r, _ in items]
    stream = b"".join(n + e[:-1] + end for (n, _, end), e in zip(items, encoded, strict=True))
    expected = [json.loads(e) for e in encoded]
    assert feed_all(rpc.Framer(4096), [stream]) == expected
    assert feed_all(rpc.Framer(4096), splits(stream, cuts)) == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=600) | st.just(b"{" * 300) | st.just(b'"' + b"a" * 400), min_size=1, max_size=6),
    st.lists(st.integers(0, 10**6), max_size=8),
    st.integers(1, 10**6),
)
def test_garbage_never_crashes_or_grows_the_buffer_and_the_next_request_is_answered(garbage, cuts, ident):
    framer = rpc.Framer(LIMIT)
    d = rpc.Dispatcher()
    d.add("Ping", lambda params, call: "pong")
    replies = []
    tail = b"\n" + rpc.encode_request(ident, "Ping")
    for item in feed_all(framer, splits(b"".join(garbage) + tail, cuts)):
        if isinstance(item, rpc.FrameError):
            assert item.code in (rpc.PARSE_ERROR, rpc.INVALID_REQUEST)
        else:
            d.dispatch(item, replies.append)
    assert replies and json.loads(replies[-1]) == {"id": ident, "result": "pong"}


@settings(max_examples=100)
@given(st.integers(LIMIT + 1, 20000), st.lists(st.integers(0, 10**6), max_size=10))
def test_oversize_frames_are_reported_once_and_never_buffered(size, cuts):
    big = b'{"id":1,"method":"M","params":"' + b"x" * size + b'"}\n'
    framer = rpc.Framer(LIMIT)
    out = feed_all(framer, splits(big + b'{"id":2,"method":"M"}\n', cuts))
    assert [type(o) for o in out] == [rpc.FrameError, dict]
    assert out[0].code == rpc.INVALID_REQUEST and out[1]["id"] == 2
