"""Escaped UTF-16 surrogate pairs in a frame's JSON text (`"\\ud83d\\ude00"`), joined into the one
character they stand for before json.loads sees them: MicroPython's json would keep the two halves as
two code points and send them on as CESU-8. A lone surrogate is refused. Loaded by rpc.parse only for a
frame that has such an escape (rare: hosts mostly send UTF-8 as is), and dropped after it."""

from ccm.rpc import ParseError


def join(text):
    """`text` with each escaped surrogate pair as one character; ParseError for a lone surrogate."""
    out = []
    last = 0
    i = text.find("\\u")
    while i >= 0:
        j = i
        while j > 0 and text[j - 1] == "\\":
            j -= 1
        cp = _hex4(text, i + 2) if (i - j) % 2 == 0 else -1  # an odd run of backslashes starts an escape
        if 0xD800 <= cp < 0xDC00 and text[i + 6 : i + 8] == "\\u" and 0xDC00 <= _hex4(text, i + 8) < 0xE000:
            out.append(text[last:i])
            out.append(chr(0x10000 + ((cp - 0xD800) << 10) + (_hex4(text, i + 8) - 0xDC00)))
            last = i + 12
            i = text.find("\\u", last)
            continue
        if 0xD800 <= cp < 0xE000:
            raise ParseError("parse error: lone surrogate \\u%04x" % cp)
        i = text.find("\\u", i + 2)
    out.append(text[last:])
    return "".join(out)


def _hex4(text, i):
    try:
        return int(text[i : i + 4], 16) if len(text) >= i + 4 else -1
    except ValueError:
        return -1
