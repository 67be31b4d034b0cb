"""The MQTT 3.1.1 codec and the shadow rules. Portable (CPython + MicroPython)."""

from fwtest import raises

from ccm import mqtt
from ccm.shadow import delta, merge_state


def test_connect_packet_bytes():
    # MQTT 3.1.1 §3.1: protocol name, level 4, flags, keepalive, then the payload strings
    assert mqtt.encode_connect("c1", keepalive=60) == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"
    p = mqtt.encode_connect("dev", 30, True, "u", "p", ("dev/status", "offline", 1, True))
    flags = p[2 + 6 + 1]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert p.endswith(b"\x00\x0adev/status\x00\x07offline\x00\x01u\x00\x01p")


def test_publish_round_trip_through_any_split():
    pkts = [
        mqtt.encode_publish("a/b", b"hello", 1, True, 7),
        mqtt.encode_publish("t", "x" * 200, 0),  # two-byte remaining length
        mqtt.encode_puback(7),
        mqtt.PINGREQ_PACKET,
    ]
    stream = b"".join(pkts)
    for cut in range(len(stream)):
        r = mqtt.PacketReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [g[0] for g in got] == [mqtt.PUBLISH, mqtt.PUBLISH, mqtt.PUBACK, mqtt.PINGREQ], cut
    kind, flags, body = mqtt.PacketReader().feed(pkts[0])[0]
    assert mqtt.parse_publish(flags, body) == ("a/b", b"hello", 1, True, False, 7)
    dup = mqtt.PacketReader().feed(mqtt.encode_publish("a", b"", 1, False, 9, dup=True))[0]
    assert mqtt.parse_publish(dup[1], dup[2])[4:] == (True, 9)


def test_remaining_length_boundaries():
    for n in (0, 127, 128, 16383, 16384):
        body = b"\x00\x01t" + b"z" * (n - 3) if n >= 3 else None
        if body is None:
            continue
        pkt = mqtt._packet(0x30, body)
        got = mqtt.PacketReader(max_packet=20000).feed(pkt)
        assert len(got) == 1 and len(got[0][2]) == n


def test_oversize_and_malformed_packets_are_errors():
    big = mqtt.encode_publish("t", b"z" * 5000)
    raises(mqtt.MqttError, mqtt.PacketReader(max_packet=1024).feed, big)
    raises(mqtt.MqttError, mqtt.PacketReader().feed, b"\x30\xff\xff\xff\xff\x01")


def test_subscribe_and_acks():
    assert mqtt.encode_subscribe(3, [("a/#", 1)]) == b"\x82\x08\x00\x03\x00\x03a/#\x01"
    assert mqtt.encode_unsubscribe(4, ["a/#"]) == b"\xa2\x07\x00\x04\x00\x03a/#"
    assert mqtt.parse_pid(b"\x01\x02\x01") == 0x0102
    assert mqtt.parse_connack(b"\x01\x05") == (True, 5)


def test_topic_filters():
    ok = [("a/b", "a/b"), ("a/+", "a/b"), ("a/#", "a/b/c"), ("#", "x"), ("+/+/c", "a/b/c"), ("a/#", "a")]
    bad = [("a/b", "a/c"), ("a/+", "a/b/c"), ("+", "a/b"), ("a/b/c", "a/b")]
    for f, t in ok:
        assert mqtt.topic_matches(f, t), (f, t)
    for f, t in bad:
        assert not mqtt.topic_matches(f, t), (f, t)


def test_shadow_delta_rules():
    assert delta({"on": True, "c": {"r": 1, "g": 2}}, {"on": True, "c": {"r": 1}}) == {"c": {"g": 2}}
    assert delta({"list": [1, 2]}, {"list": [1]}) == {"list": [1, 2]}  # arrays compare whole
    assert delta({"list": [1, 2]}, {"list": [1, 2]}) == {}
    assert delta({"a": 1}, None) == {"a": 1}
    assert delta({"a": {"b": 1}}, {"a": 5}) == {"a": {"b": 1}}


def test_shadow_merge_deletes_with_null():
    old = {"on": True, "c": {"r": 1, "g": 2}, "x": 1}
    assert merge_state(old, {"c": {"g": None, "b": 3}, "x": None, "n": [1]}) == {
        "on": True,
        "c": {"r": 1, "b": 3},
        "n": [1],
    }
    assert merge_state(old, None) is None


def test_packet_reader_fills_one_buffer_per_packet_whatever_the_chunks():
    """A 12 KB publish, then a PINGRESP (no body) and a small publish, cut into chunks of every size
    from 1 byte to all at once: the same packets, in order; the body buffer is made once per packet."""
    from ccm.mqtt import PINGRESP, PUBLISH, PacketReader, encode_publish

    big = encode_publish("t/big", b"x" * 12000, 0, False, 0)
    small = encode_publish("t/s", b"hi", 0, False, 0)
    stream = big + bytes([PINGRESP << 4, 0]) + small
    for size in (1, 7, 1024, len(stream)):
        r = PacketReader()
        got = []
        for i in range(0, len(stream), size):
            got += r.feed(stream[i : i + size])
        assert [t for t, _, _ in got] == [PUBLISH, PINGRESP, PUBLISH], size
        assert got[0][2] == b"\x00\x05t/big" + b"x" * 12000 and got[1][2] == b""
        assert got[2][2] == b"\x00\x03t/shi"
