"""SNTP answers read the same on CPython and MicroPython (issue 11, item 2). Portable."""

import struct

from fwtest import raises

from ccm import sntp


def answer(seconds, mode=4, stratum=2):
    return bytes([0x20 | mode, stratum, 6, 0xEC]) + b"\0" * 8 + b"GPS\0" + b"\0" * 24 + struct.pack("!II", seconds, 0)


def test_the_transmit_time_is_read_as_unix_seconds():
    assert sntp.request()[0] == 0x23 and len(sntp.request()) == 48
    t = 1795000000  # 2026-11-18
    assert sntp.parse(answer(t + sntp.NTP_TO_UNIX)) == t
    assert sntp.parse(answer(t + sntp.NTP_TO_UNIX)) >= sntp.VALID_AFTER


def test_answers_that_carry_no_time_are_errors():
    assert "short" in str(raises(sntp.SntpError, sntp.parse, b"\x24" * 20))
    assert "mode 3" in str(raises(sntp.SntpError, sntp.parse, answer(5, mode=3)))
    assert "kiss" in str(raises(sntp.SntpError, sntp.parse, answer(5, stratum=0)))
    assert "no time" in str(raises(sntp.SntpError, sntp.parse, answer(0)))
