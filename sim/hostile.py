"""A hostile host: frames meant to break a CCM's UART link, each with the answers it must get (issue 10).

    gen = HostileFrames(random.Random(1), max_frame_size=4096)
    data, expect = gen.stream(200)         # bytes for the UART, and what must come back
    ...write data, read lines until expect.sentinel is answered...
    problems = expect.check(lines)         # [] when every request got exactly one well-formed answer

Kinds: requests to the CCM's own methods (valid, and with wrong-typed params for every built-in),
notifications, batches (empty, mixed, notifications only), responses nobody asked for, malformed JSON,
invalid UTF-8, escaped and raw lone surrogates, NaN/Infinity/1e999, nesting past the bound, ids of the
wrong type, oversize frames and noise — on lines ending in \\n, \\r\\n, or glued to the next frame. A
request gets exactly one answer under its id; a frame that cannot be read gets one error with id null;
notifications, responses and noise get nothing.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

# Methods every CCM serves whose valid calls have no side effect worth avoiding in a fuzz run.
SAFE_CALLS = [
    ("RPC.List", None),
    ("Sys.GetInfo", None),
    ("Config.Get", {"key": "device.id"}),
    ("Config.Get", {}),
    ("OTA.Status", None),
    ("No.Such.Method", [1, 2]),
]
# Params no built-in accepts ([] and {} mean "none", which some take).
WRONG_PARAMS = ['"x"', "5", "true", "[1,2]", '{"zz":1}', '{"key":5,"config":"x","delay_ms":"1","reboot":"yes"}']
BAD_TEXT = [  # inside a JSON string: every one makes the frame unreadable (-32700)
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d x",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\xe2\x82",
]
BAD_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]
BAD_IDS = [b"true", b"false", b"[1]", b"{}", b'{"a":1}']
NOISE = bytes(sorted(set(range(256)) - set(b'{}[]"\\\n')))


@dataclass
class Expect:
    ids: set = field(default_factory=set)  # every one answered exactly once
    want: dict = field(default_factory=dict)  # id -> "result" or the error code its answer must carry
    nulls: int = 0  # errors with id null
    sentinel: str = ""
    kinds: Counter = field(default_factory=Counter)  # frames sent, by kind

    def check(self, lines: list[bytes]) -> tuple[list[str], Counter]:
        """Problems with what came back (empty when all is well), and the answers by error code."""
        problems: list[str] = []
        seen: Counter = Counter()
        codes: Counter = Counter()
        nulls = 0
        for line in lines:
            try:
                reply = json.loads(line.decode("utf-8"), parse_constant=_not_json)
            except (ValueError, UnicodeDecodeError) as e:
                problems.append(f"not JSON: {line[:80]!r} ({e})")
                continue
            for r in reply if type(reply) is list else [reply]:
                if type(r) is not dict:
                    problems.append(f"not a response: {r!r}"[:120])
                    continue
                if "method" in r:
                    continue  # the CCM's own notifications (Sys.Init)
                if ("result" in r) == ("error" in r):
                    problems.append(f"not a response: {r!r}"[:120])
                    continue
                got = r["error"]["code"] if "error" in r else "result"
                codes[got] += 1
                if r.get("id") is None:
                    nulls += 1
                else:
                    seen[r["id"]] += 1
                    if self.want.get(r["id"], got) != got:
                        problems.append(f"id {r['id']!r}: {got} where {self.want[r['id']]} was due: {r!r}"[:200])
        for i, n in seen.items():
            if i not in self.ids and i != self.sentinel:
                problems.append(f"an answer to id {i!r} that was never asked")
            elif n != 1:
                problems.append(f"id {i!r} answered {n} times")
        missing = self.ids - set(seen)
        if missing:
            problems.append(f"{len(missing)} requests never answered, e.g. {sorted(map(str, missing))[:3]}")
        if nulls != self.nulls:
            problems.append(f"{nulls} errors with id null, {self.nulls} expected")
        return problems, codes


def _not_json(name):
    raise ValueError(f"{name} is not JSON")


class HostileFrames:
    def __init__(self, rng: random.Random, max_frame_size: int = 4096, builtins: list[str] | None = None):
        self.rng = rng
        self.limit = max_frame_size
        builtins = builtins or ["RPC.List", "Sys.GetInfo", "Sys.Reboot", "Config.Get", "Config.Set"]
        self.builtins = [m for m in builtins if m != "Shadow.Report"]  # any JSON value is a reported state
        self.n = 0

    def _id(self):
        self.n += 1
        return "h%d" % self.n if self.n % 2 else self.n

    def stream(self, count: int) -> tuple[bytes, Expect]:
        expect = Expect()
        parts = []
        for _ in range(count):
            kind, frame = self.frame(expect)
            expect.kinds[kind] += 1
            end = self.rng.choice([b"\n", b"\n", b"\r\n", b"\n\n", b""])
            if end == b"" and not frame.endswith((b"}", b"]")):
                end = b"\n"
            parts.append(frame + end)
        expect.sentinel = "end-%d" % self.n
        parts.append(b'\n{"id":"%s","method":"RPC.List"}\n' % expect.sentinel.encode())
        return b"".join(parts), expect

    def frame(self, expect: Expect) -> tuple[str, bytes]:
        r = self.rng
        kind = r.choice(
            ["call", "call", "wrong_params", "notify", "batch", "response", "parse", "bad_text", "bad_number"]
            + ["deep", "bad_id", "no_method", "oversize", "noise", "empty_batch"]
        )
        i = self._id()
        idj = json.dumps(i).encode()
        if kind == "call":
            m, p = r.choice(SAFE_CALLS)
            expect.ids.add(i)
            expect.want[i] = -32601 if m == "No.Such.Method" else "result"
            return kind, _req(idj, m, p)
        if kind == "wrong_params":
            expect.ids.add(i)
            expect.want[i] = -32602
            return kind, b'{"id":%s,"method":"%s","params":%s}' % (
                idj,
                r.choice(self.builtins).encode(),
                r.choice(WRONG_PARAMS).encode(),
            )
        if kind == "notify":
            m, p = r.choice(SAFE_CALLS)
            return kind, _req(None, m, p)
        if kind == "batch":
            members = []
            for _ in range(r.randint(1, 5)):
                j = self._id()
                pick = r.random()
                if pick < 0.5:
                    m, p = r.choice(SAFE_CALLS)
                    expect.ids.add(j)
                    members.append(_req(json.dumps(j).encode(), m, p))
                elif pick < 0.8:
                    members.append(_req(None, *r.choice(SAFE_CALLS)))
                else:
                    expect.nulls += 1
                    members.append(r.choice([b"1", b'"x"', b'{"id":true,"method":"RPC.List"}']))
            return kind, b"[" + b",".join(members) + b"]"
        if kind == "response":
            return kind, b'{"id":%d,"result":%s}' % (r.randint(10**8, 10**9), r.choice([b"1", b"null", b'{"a":[]}']))
        if kind == "empty_batch":
            expect.nulls += 1
            return kind, b"[]"
        if kind == "noise":
            return kind, bytes(r.choice(NOISE) for _ in range(r.randint(1, 60))).replace(b"\r", b"")
        if kind == "oversize":
            expect.nulls += 1
            return kind, b'{"id":%s,"method":"X","params":"%s"}' % (idj, b"z" * (self.limit + r.randint(1, 3000)))
        expect.nulls += 1  # the rest cannot be read: one -32700/-32600 with id null each
        if kind == "parse":
            return kind, r.choice(
                [
                    b'{"id":%s,"method":nul}',
                    b'{"id":%s,"method":"A",}',
                    b'{"id":%s "method":"A"}',
                    b'{"id":%s,"method":"A","params":[1,,2]}',
                ]
            ) % idj
        if kind == "bad_text":
            return kind, b'{"id":%s,"method":"Config.Get","params":{"key":"a%sb"}}' % (idj, r.choice(BAD_TEXT))
        if kind == "bad_number":
            return kind, b'{"id":%s,"method":"No.Such","params":[%s]}' % (idj, r.choice(BAD_NUMBERS))
        if kind == "deep":
            d = r.randint(33, min(1500, self.limit // 2 - 40))
            return kind, b'{"id":%s,"method":"RPC.List","params":{"a":%s%s}}' % (idj, b"[" * d, b"]" * d)
        if kind == "bad_id":
            return kind, b'{"id":%s,"method":"RPC.List"}' % r.choice(BAD_IDS)
        if kind == "no_method":  # an object that is neither request nor response, id not usable
            return kind, b'{"params":[1]}'
        raise AssertionError(kind)


def _req(idj, method, params):
    s = b"{"
    if idj is not None:
        s += b'"id":' + idj + b","
    s += b'"method":' + json.dumps(method).encode()
    if params is not None:
        s += b',"params":' + json.dumps(params, separators=(",", ":")).encode()
    return s + b"}"


def exchange(fd: int, chunks: list[bytes], sentinel: str, timeout: float = 60.0) -> list[bytes]:
    """Write `chunks` to a raw UART fd (each chunk one write) while reading what comes back; return the
    lines read up to the sentinel's answer. Reading and writing interleave, as a host's UART does, so a
    CCM that pauses reading (backpressure) never deadlocks against us."""
    import os
    import select
    import time

    os.set_blocking(fd, False)
    end = time.monotonic() + timeout
    pending = list(chunks)
    out = b""
    got = b""
    mark = ('"id":"%s"' % sentinel).encode()
    while True:
        if not out and pending:
            out = pending.pop(0)
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer to {sentinel} within {timeout:g} s; got {got[-300:]!r}")
        r, w, _ = select.select([fd], [fd] if out else [], [], min(left, 1.0))
        if w:
            try:
                n = os.write(fd, out)
                out = out[n:]
            except BlockingIOError:
                pass
        if r:
            try:
                got += os.read(fd, 65536)
            except BlockingIOError:
                pass
            i = got.find(mark)
            if i >= 0 and got.find(b"\n", i) >= 0:
                return got[: got.find(b"\n", i) + 1].splitlines()


def fuzz_target(max_frame_size: int = 1024):
    """A whole virtual CCM for hostile input, and its UART opened raw as a host would: (ccm, fd, reboots).
    The cloud is configured (MQTT.* and Shadow.* are served) with a broker that never answers; a reboot
    is recorded in `reboots` instead of done, so a stream that would reboot it shows. Close with
    `os.close(fd); ccm.stop()`."""
    import os
    import tty

    from sim.ccm import VirtualCcm

    v = VirtualCcm({"rpc": {"max_frame_size": max_frame_size}, "mqtt": {"enable": True, "server": "127.0.0.1:9"}})
    reboots: list = []
    v.on_boot(lambda ccm: setattr(ccm.router, "on_reboot", reboots.append))
    v.start()
    fd = os.open(v.path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return v, fd, reboots
