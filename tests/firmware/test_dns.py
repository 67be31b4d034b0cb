"""The DNS message code of ccm/dns.py (portable: CPython and MicroPython): the query it sends and the
answers it reads — compressed names, a CNAME before the A record, NXDOMAIN, someone else's answer."""

import struct

from ccm import dns


def answer(qid, name, records, rcode=0):
    """A response to `query(name, qid)` with `records` [(type, rdata)], names as pointers to the question."""
    q = dns.query(name, qid)[12:]
    out = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(records), 0, 0) + q
    for rtype, rdata in records:
        out += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 120, len(rdata)) + rdata
    return out


def test_the_query_asks_for_one_a_record_recursively():
    q = dns.query("broker.example.com", 0x1234)
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x06broker\x07example\x03com\x00" + struct.pack("!HH", 1, 1)


def test_an_a_record_after_a_cname():
    cname = b"\x03cdn\xc0\x0c"  # a CNAME's target, itself compressed
    msg = answer(7, "broker.example.com", [(5, cname), (1, bytes([10, 0, 0, 42]))])
    assert dns.parse(msg, 7) == ("10.0.0.42", 120)


def test_not_found_and_not_ours_are_errors_that_say_so():
    for msg, qid, why in (
        (answer(7, "x.test", [], rcode=3), 7, "name not found"),
        (answer(8, "x.test", [(1, bytes(4))]), 7, "not our answer"),
        (answer(7, "x.test", []), 7, "no address"),
        (b"\x00\x07", 7, "short"),
    ):
        try:
            dns.parse(msg, qid)
        except dns.DnsError as e:
            assert why in str(e), (why, str(e))
        else:
            raise AssertionError("accepted: " + why)


def test_addresses_need_no_lookup():
    from ccm.board import is_address

    assert is_address("192.168.4.1") and not is_address("broker.local") and not is_address("1.2.3.999")
