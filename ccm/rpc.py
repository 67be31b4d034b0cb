"""Sans-I/O JSON-RPC 2.0 over newline-delimited frames (docs/protocol.md, the UART link).

Bytes go in (`Framer.feed`), parsed frames come out; `Dispatcher` turns a frame into replies through a
method table; `Pending` tracks calls we made and expires them by the clock we are given. Nothing here
reads a port, sleeps or knows about asyncio, so the same code runs on the ESP32, under CPython and in
tests fed with plain byte strings.
"""

import json

from ccm.compat import MICROPYTHON, dumps, ticks_add, ticks_diff, unload

# JSON-RPC 2.0 §5.1 error codes, and the CCM's server errors (docs/protocol.md, the UART link).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HOST_TIMEOUT = -32000
NOT_CONNECTED = -32001
QUEUE_FULL = -32002
FORBIDDEN = -32003
BUSY = -32004

# One message per code, worded as the manual prints them ("method not found").
MESSAGES = {
    PARSE_ERROR: "parse error",
    INVALID_REQUEST: "invalid request",
    METHOD_NOT_FOUND: "method not found",
    INVALID_PARAMS: "invalid params",
    INTERNAL_ERROR: "internal error",
    HOST_TIMEOUT: "host timeout",
    NOT_CONNECTED: "not connected",
    QUEUE_FULL: "queue full",
    FORBIDDEN: "forbidden",
    BUSY: "busy",
}

# Message kinds, as `kind()` tells them.
REQUEST = 1
NOTIFICATION = 2
RESPONSE = 3
INVALID = 4

_OPEN = b"{["
_WS = b" \t\r\n"


class RpcError(Exception):
    """A JSON-RPC error: raised by handlers, returned to callers."""

    def __init__(self, code, message=None, data=None):
        self.code = code
        self.message = message or MESSAGES.get(code, "error")
        self.data = data
        super().__init__(code, self.message)

    def __str__(self):
        return "%s (%d)" % (self.message, self.code)


class FrameError:
    """A frame the framer could not turn into a value: answered with an error, id null."""

    def __init__(self, code, message):
        self.code = code
        self.message = message

    def __repr__(self):
        return "FrameError(%d, %r)" % (self.code, self.message)


# ---------------------------------------------------------------------------------------------------
# Framing


class Framer:
    """Newline-delimited JSON frames, tolerant of what real hosts send.

    - one frame per line; `\\r` before `\\n` and blank lines are ignored;
    - a frame without a newline ends when its top-level object or array closes (found as soon as a
      read ends on that close; a read that ends inside the next frame is split once that one closes,
      which keeps the byte-by-byte scan off the common path);
    - bytes before a `{` or `[` are noise and are dropped;
    - a frame longer than `max_frame_size` is reported once and discarded to the end of its line
      (or of its value); at most `max_frame_size` bytes are ever held between calls to `feed`.

    `feed(data)` returns a list of parsed values (dicts for single frames, lists for batches) and
    `FrameError`s, in arrival order.
    """

    def __init__(self, max_frame_size=4096):
        self.max_frame_size = max_frame_size
        self.buf = b""  # the unfinished frame, never longer than max_frame_size
        self._discarding = False  # inside an oversize frame
        self._scan = None  # scanner state (depth, in_string, escaped) while discarding

    def feed(self, data):
        out = []
        if self.buf:
            data = self.buf + data
            self.buf = b""
        start = 0
        end = len(data)
        limit = self.max_frame_size
        while start < end:
            nl = data.find(b"\n", start)
            if nl > start and data[start] in _OPEN and nl - start <= limit and not self._discarding:
                try:  # fast path: the whole line is one frame (json.loads skips a trailing \r itself)
                    out.append(parse(data[start:nl]))
                    start = nl + 1
                    continue
                except Exception:
                    pass  # not one sound value: the slow path splits the line and names what is wrong
            stop = end if nl < 0 else nl
            if self._discarding:
                start = self._discard(data, start, stop)
                if start < 0:  # still inside the oversize frame
                    return out
                if start == nl:
                    start += 1
                continue
            if nl < 0:
                self._partial(data, start, end, out)
                return out
            self._line(data, start, nl, out)
            start = nl + 1
        return out

    def _line(self, data, start, stop, out):
        line = data[start:stop].strip()
        if not line:
            return
        i = self._split(line, 0, len(line), out)
        rest = line[i:]
        if rest and rest[0] in _OPEN:  # a value the newline cut short
            if len(rest) > self.max_frame_size:
                out.append(self._oversize(len(rest)))
            else:
                out.append(FrameError(PARSE_ERROR, "parse error: incomplete frame"))

    def _partial(self, data, start, end, out):
        """Bytes with no newline yet: emit values that already closed, keep the unfinished one."""
        o = start if data[start] in _OPEN else _find_open(data, start, end)
        if o < 0:
            return  # all noise
        e = end  # the last byte that is not white space tells whether a value may have closed
        while e > o + 1 and data[e - 1] in _WS:
            e -= 1
        if end - o <= self.max_frame_size:
            if data[e - 1] not in b"}]":
                self.buf = data[o:end]
                return
            try:
                out.append(parse(data[o:e]))
                return
            except Exception:
                pass
        i = self._split(data, o, end, out)
        if i >= end:
            return
        n = end - i
        if n <= self.max_frame_size:
            self.buf = data[i:end]
            return
        out.append(self._oversize(n))
        state = _scan_close(data, i, end, 0, False, False)
        self._discarding = True
        self._scan = state[1:]

    def _discard(self, data, start, stop):
        """Drop bytes of an oversize frame; return where the frame ended, or -1 if it goes on."""
        depth, in_str, esc = self._scan
        k, depth, in_str, esc = _scan_close(data, start, stop, depth, in_str, esc)
        if k >= 0 or stop < len(data):  # closed, or a newline ended it
            self._discarding = False
            self._scan = None
            return k if k >= 0 else stop
        self._scan = (depth, in_str, esc)
        return -1

    def _split(self, data, start, end, out):
        """Emit every complete top-level value in data[start:end]; return where the unfinished one starts."""
        i = start
        while i < end:
            j = _find_open(data, i, end)
            if j < 0:
                return end
            k = _scan_close(data, j, end, 0, False, False)[0]
            if k < 0:
                return j
            if k - j > self.max_frame_size:
                out.append(self._oversize(k - j))
            else:
                out.append(parse_or_error(data[j:k]))
            i = k
        return end

    def _oversize(self, n):
        return FrameError(
            INVALID_REQUEST, "frame too large: %d+ bytes, rpc.max_frame_size is %d" % (n, self.max_frame_size)
        )


def _find_open(data, start, end):
    a = data.find(b"{", start, end)
    b = data.find(b"[", start, end)
    if a < 0:
        return b
    if b < 0:
        return a
    return a if a < b else b


def _scan_close(data, i, end, depth, in_str, esc):
    """Walk JSON text from i; return (index after the top-level close or -1, depth, in_str, esc)."""
    while i < end:
        c = data[i]
        i += 1
        if in_str:
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:  # quote
                in_str = False
        elif c == 34:
            in_str = True
        elif c == 123 or c == 91:  # { [
            depth += 1
        elif c == 125 or c == 93:  # } ]
            depth -= 1
            if depth <= 0:
                return i, 0, False, False
    return -1, depth, in_str, esc


# ---------------------------------------------------------------------------------------------------
# Parsing: one frame's bytes to a value, with the same verdict on CPython and MicroPython (docs/protocol.md, the UART link).
#
# Both json modules accept text that is not JSON, or that cannot be sent on again: CPython takes encoded
# and escaped lone surrogates (its bytes decoder uses surrogatepass), NaN and Infinity; MicroPython takes
# overlong and surrogate UTF-8, keeps escaped surrogate pairs as two code points (re-encoded as CESU-8),
# and turns 1e999 into inf. CPython recurses per nesting level when it loads and dumps, MicroPython when
# it dumps. `parse` refuses all of these, so whatever it returns can be encoded again.

MAX_DEPTH = 32  # nesting levels of a frame, the frame itself included

# UTF-8 lead bytes that MicroPython's decoder lets through when what follows makes them invalid, as
# (lead, lowest, highest+1) of the next byte: overlong (C0 C1, E0 80-9F, F0 80-8F), surrogates
# (ED A0-BF), beyond U+10FFFF (F4 90-BF, F5-F7). Bytes, not a tuple of tuples: a stock image keeps
# every constant of this module in its heap.
_LAX = b"\xc0\x80\xc0\xc1\x80\xc0\xe0\x80\xa0\xed\xa0\xc0\xf0\x80\x90\xf4\x90\xc0\xf5\x80\xc0\xf6\x80\xc0\xf7\x80\xc0"


class ParseError(ValueError):
    code = PARSE_ERROR


class NoHeap(ParseError):
    """A frame there was no heap to read or parse (MicroPython's MemoryError): answered -32603, not as bad
    JSON, and never raised past the framer — no frame may stop the link. `head`: its first bytes when the
    frame itself could not be held (what its id is read from)."""

    code = INTERNAL_ERROR

    def __init__(self, head=None):
        super().__init__("out of memory for this message")
        self.head = head


def request_id(data):
    """The id of the JSON-RPC request whose text starts `data`, or None: found without parsing it (there
    was no heap to parse it), for an error the client can match to its call."""
    try:
        i = data.find(b'"id"') if data else -1
        if i < 0:
            return None
        i = data.find(b":", i) + 1
        while data[i] in b" \t\r\n":
            i += 1
        if data[i] == 0x22:  # a string id
            return bytes(data[i + 1 : data.find(b'"', i + 1)]).decode()
        j = i
        while data[j] in b"-0123456789":
            j += 1
        return int(bytes(data[i:j])) if j > i else None
    except (IndexError, ValueError, UnicodeError):
        return None


def parse(frame):
    """The value of one frame (bytes), or ParseError naming why it is not acceptable JSON."""
    try:  # the text only checks the UTF-8 here: json reads the frame itself (a copy of a chunk is heap)
        n = len(frame.decode())
    except MemoryError:
        raise NoHeap() from None
    except Exception:
        raise ParseError("parse error: invalid UTF-8") from None
    if n != len(frame):  # multi-byte sequences: refuse what MicroPython's decoder lets pass
        for k in range(0, len(_LAX), 3):
            lead, lo, hi = _LAX[k : k + 1], _LAX[k + 1], _LAX[k + 2]
            i = frame.find(lead)
            while i >= 0:
                nxt = frame[i + 1] if i + 1 < len(frame) else 0
                if lo <= nxt < hi:
                    raise ParseError("parse error: invalid UTF-8") from None
                i = frame.find(lead, i + 1)
    text = frame  # CPython's json takes bytes as UTF-16 or -32 when NULs say so: it reads the str
    if b"\\ud" in frame or b"\\uD" in frame:  # rare: its code loads for it (ccm/surrogates.py)
        try:
            from ccm.surrogates import join

            text = join(frame.decode())
        except MemoryError:
            raise NoHeap() from None
        finally:
            unload("ccm.surrogates")
    elif not MICROPYTHON:
        text = frame.decode()
    try:
        value = json.loads(text)
    except MemoryError:
        raise NoHeap() from None
    except Exception as e:  # CPython recurses per level: RecursionError (MicroPython has no such name)
        raise ParseError(
            "parse error: nesting deeper than %d" % MAX_DEPTH if "recursion" in str(e) else "parse error"
        ) from None
    _check(value, 1)
    return value


def parse_or_error(frame):
    try:
        return parse(frame)
    except ParseError as e:
        return FrameError(e.code, str(e))


def _check(v, depth):
    """ParseError unless v nests at most MAX_DEPTH deep and every number in it is finite."""
    t = type(v)
    if t is float:
        if v - v != 0:  # inf - inf and nan - nan are nan
            raise ParseError("parse error: %s is not a JSON number" % v)
        return
    if t is dict:
        v = v.values()
    elif t is not list:
        return
    if depth >= MAX_DEPTH:
        raise ParseError("parse error: nesting deeper than %d" % MAX_DEPTH)
    for x in v:
        _check(x, depth + 1)


# ---------------------------------------------------------------------------------------------------
# Encoding: compact, one line, members in the manual's order ({"id":…,"method":…,"params":…}).


_NO_ID = object()
_J = '"jsonrpc":"2.0",'


def encode_request(id_, method, params=None, jsonrpc=False):
    s = "{" + (_J if jsonrpc else "")
    if id_ is not _NO_ID:
        s += '"id":%s,' % dumps(id_)
    if params is None:
        return (s + '"method":%s}\n' % dumps(method)).encode()
    return (s + '"method":%s,"params":%s}\n' % (dumps(method), dumps(params))).encode()


def encode_notification(method, params=None, jsonrpc=False):
    return encode_request(_NO_ID, method, params, jsonrpc)


def encode_result(id_, result, jsonrpc=False):
    return ('{%s"id":%s,"result":%s}\n' % (_J if jsonrpc else "", dumps(id_), dumps(result))).encode()


def encode_error(id_, code, message=None, data=None, jsonrpc=False):
    e = '{"code":%d,"message":%s' % (code, dumps(message or MESSAGES.get(code, "error")))
    if data is not None:
        e += ',"data":' + dumps(data)
    return ('{%s"id":%s,"error":%s}}\n' % (_J if jsonrpc else "", dumps(id_), e)).encode()


def result(response):
    """A response's result, or its error raised as RpcError (for a caller that awaits an answer)."""
    if "error" in response:
        e = response["error"]
        raise RpcError(e.get("code", INTERNAL_ERROR), e.get("message"), e.get("data"))
    return response.get("result")


def kind(msg):
    """REQUEST, NOTIFICATION, RESPONSE or INVALID (JSON-RPC 2.0 §4, §5)."""
    if type(msg) is not dict:
        return INVALID
    if "id" in msg and not _id_ok(msg["id"]):
        return INVALID
    if "method" in msg:
        if type(msg["method"]) is not str:
            return INVALID
        return REQUEST if "id" in msg else NOTIFICATION
    if "id" in msg and ("result" in msg or "error" in msg):
        return RESPONSE
    return INVALID


def _id_ok(i):
    """JSON-RPC 2.0 §4: an id is a string, a number or null (bool is not a number here)."""
    return i is None or type(i) in (int, str, float)


def valid_id(msg):
    """The id to answer an invalid message with: its own when it is a legal id, else null."""
    i = msg.get("id") if type(msg) is dict else None
    return i if _id_ok(i) else None


# ---------------------------------------------------------------------------------------------------
# Dispatching


LATER = object()  # returned by a handler that will answer through call.reply()/call.fail() itself


class Call:
    """One incoming request or notification, and the way back to whoever sent it.

    `send(frame_bytes)` delivers the reply (with the caller's id). A notification's call swallows
    replies: notifications never get one, not even an error.
    """

    def __init__(self, msg, send, src=None, jsonrpc=False, batch=None):
        self.id = msg.get("id")
        self.notification = "id" not in msg
        self.method = msg.get("method")
        self.params = msg.get("params")
        self.src = src
        self._send = send
        self._jsonrpc = jsonrpc
        self._batch = batch
        self.done = False

    def reply(self, result):
        self._answer(encode_result, (result,), "result is not JSON")

    def fail(self, code, message=None, data=None):
        self._answer(encode_error, (code, message, data), "malformed error")

    def _answer(self, encode, args, what):
        if self.done:
            return
        frame = None
        if not self.notification:
            try:
                frame = encode(self.id, *args, jsonrpc=self._jsonrpc)
            except Exception as e:  # a result that is not JSON, a host's error code that is not an integer:
                msg = "internal error: %s (%s)" % (what, e)  # the caller still gets an answer
                frame = encode_error(self.id, INTERNAL_ERROR, msg, None, self._jsonrpc)
        self._deliver(frame)

    def relay(self, response):
        """Pass on a response dict from someone else (the host), under this call's id."""
        if "error" in response:
            e = response["error"]
            if type(e) is dict:
                self.fail(e.get("code", INTERNAL_ERROR), e.get("message"), e.get("data"))
            else:
                self.fail(INTERNAL_ERROR, str(e))
        else:
            self.reply(response.get("result"))

    def _deliver(self, frame):
        self.done = True
        if self.notification:
            return
        if self._batch is not None:
            self._batch.add(frame)
        else:
            self._send(frame)


class Dispatcher:
    """A method table: name → handler(params, call).

    A handler returns its result, raises RpcError, or returns LATER and answers through `call` itself.
    Requests for names not in the table go to `fallback(call)` when set (the router forwards them to
    the host), else get -32601.
    """

    def __init__(self, jsonrpc=False):
        self.methods = {}
        self.fallback = None
        self.jsonrpc = jsonrpc

    def add(self, name, handler):
        self.methods[name] = handler

    def names(self):
        return list(self.methods)

    def dispatch(self, msg, send, src=None):
        """Handle one parsed frame (single or batch) from a caller whose replies go to `send`."""
        if type(msg) is list:
            if not msg:
                send(encode_error(None, INVALID_REQUEST, "invalid request: empty batch", None, self.jsonrpc))
                return
            try:  # batches are rare: the class loads for one (its instance keeps it)
                from ccm.batch import Batch

                batch = Batch(len(msg), send)
            except MemoryError:  # answered, as a frame there was no heap for
                send(encode_error(None, INTERNAL_ERROR, "out of memory for this batch", None, self.jsonrpc))
                return
            finally:
                unload("ccm.batch")
            for m in msg:
                self._one(m, send, src, batch)
            return
        self._one(msg, send, src, None)

    def _one(self, msg, send, src, batch):
        k = kind(msg)
        if k == RESPONSE or k == INVALID:
            if k == INVALID:
                frame = encode_error(valid_id(msg), INVALID_REQUEST, None, None, self.jsonrpc)
                if batch is not None:
                    batch.add(frame)
                else:
                    send(frame)
            elif batch is not None:
                batch.add(None)  # a response inside a batch sent to us: nothing to answer
            return
        if k == NOTIFICATION and batch is not None:
            batch.add(None)  # a notification's slot in a batch is filled at once: it never gets a reply
            batch = None
        call = Call(msg, send, src, self.jsonrpc, batch)
        try:
            handler = self.methods.get(call.method)
            if handler is None:
                if self.fallback is None:
                    raise RpcError(METHOD_NOT_FOUND)
                self.fallback(call)
                return
            result = handler(call.params, call)
        except RpcError as e:
            call.fail(e.code, e.message, e.data)
            return
        except Exception as e:  # a bug in a handler must not take the link down, nor leave its caller waiting
            call.fail(INTERNAL_ERROR, "internal error: %s" % (e,))
            return
        if result is not LATER:
            call.reply(result)


# ---------------------------------------------------------------------------------------------------
# Params of the CCM's own methods: checked whole before a handler does anything (docs/protocol.md, the UART link).

REQUIRED = object()  # a member `take` insists on
ANY = None  # a member of any JSON type
_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "an object", list: "an array"}


def take(params, **spec):
    """The params as a dict of every member in `spec`, defaults filled in, or RpcError -32602.

    spec: name=(type or tuple of types or ANY, default or REQUIRED). Absent params, null, {} and []
    mean none given. Anything else that is not an object, a member not in spec, a missing required
    member or a member of another type is refused, naming what is wrong.
    """
    if params is None or params == []:
        params = {}
    if type(params) is not dict or (params and not spec):
        raise RpcError(INVALID_PARAMS, "invalid params: " + _expected(spec))
    for k in params:
        if k not in spec:
            raise RpcError(INVALID_PARAMS, "invalid params: unknown member %s; %s" % (dumps(k), _expected(spec)))
    out = {}
    for k, (types, default) in spec.items():
        v = params.get(k, default)
        if v is REQUIRED:
            raise RpcError(INVALID_PARAMS, "invalid params: %s is required" % k)
        if k in params and types is not ANY:
            ts = types if type(types) is tuple else (types,)
            if type(v) not in ts and not (v is None and None in ts):
                want = " or ".join(_TYPE_NAMES.get(t, "a number" if t is float else "null") for t in ts)
                raise RpcError(INVALID_PARAMS, "invalid params: %s must be %s" % (k, want))
        out[k] = v
    return out


def _expected(spec):
    if not spec:
        return "this method takes none"
    return "expected an object with %s" % ", ".join(k if spec[k][1] is REQUIRED else k + "?" for k in sorted(spec))


# ---------------------------------------------------------------------------------------------------
# Calls we make


class Pending:
    """Outgoing calls awaiting a response: id allocation, a bounded table, deadlines.

    `add(on_done, timeout_ms, now)` returns the id to send; `on_done(response_dict)` runs exactly once:
    with the peer's response, or with an error response from `expire(now)` or `fail_all`.
    """

    def __init__(self, limit=16, first_id=1):
        self.limit = limit
        self.next_id = first_id
        self.table = {}  # id -> [deadline, on_done]

    def add(self, on_done, timeout_ms, now):
        if len(self.table) >= self.limit:
            raise RpcError(QUEUE_FULL, "queue full: %d calls already waiting for the host" % self.limit)
        i = self.next_id
        while i in self.table:
            i = i + 1 if i < 0x7FFFFFFF else 1
        self.next_id = i + 1 if i < 0x7FFFFFFF else 1
        self.table[i] = [ticks_add(now, timeout_ms), on_done]
        return i

    def resolve(self, response):
        """Deliver a response; False when nobody waits for its id (late or unknown)."""
        entry = self.table.pop(response.get("id"), None)
        if entry is None:
            return False
        entry[1](response)
        return True

    def expire(self, now, code=HOST_TIMEOUT, message=None):
        late = [i for i, e in self.table.items() if ticks_diff(now, e[0]) >= 0]
        for i in late:
            self.table.pop(i)[1]({"id": i, "error": {"code": code, "message": message or MESSAGES[code]}})
        return len(late)

    def fail_all(self, code, message=None):
        ids = list(self.table)
        for i in ids:
            self.table.pop(i)[1]({"id": i, "error": {"code": code, "message": message or MESSAGES[code]}})
