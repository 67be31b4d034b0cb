"""Sans-I/O JSON-RPC 2.0 over newline-delimited frames (DESIGN §3).

Bytes go in (`Framer.feed`), parsed frames come out; `Dispatcher` turns a frame into replies through a
method table; `Pending` tracks calls we made and expires them by the clock we are given. Nothing here
reads a port, sleeps or knows about asyncio, so the same code runs on the ESP32, under CPython and in
tests fed with plain byte strings.
"""

import json

from ccm.compat import dumps, ticks_add, ticks_diff

# JSON-RPC 2.0 §5.1 error codes, and the CCM's server errors (DESIGN §3).
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

    def to_dict(self):
        d = {"code": self.code, "message": self.message}
        if self.data is not None:
            d["data"] = self.data
        return d


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
        loads = json.loads
        limit = self.max_frame_size
        while start < end:
            nl = data.find(b"\n", start)
            if nl > start and data[start] in _OPEN and nl - start <= limit and not self._discarding:
                try:  # fast path: the whole line is one frame (json.loads skips a trailing \r itself)
                    out.append(loads(data[start:nl]))
                    start = nl + 1
                    continue
                except Exception:
                    pass
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
                out.append(json.loads(data[o:e]))
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
                try:
                    out.append(json.loads(data[j:k]))
                except Exception:
                    out.append(FrameError(PARSE_ERROR, "parse error"))
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


def kind(msg):
    """REQUEST, NOTIFICATION, RESPONSE or INVALID (JSON-RPC 2.0 §4, §5)."""
    if type(msg) is not dict:
        return INVALID
    if "method" in msg:
        if type(msg["method"]) is not str:
            return INVALID
        return REQUEST if "id" in msg else NOTIFICATION
    if "id" in msg and ("result" in msg or "error" in msg):
        return RESPONSE
    return INVALID


def valid_id(msg):
    """The id to answer an invalid message with: its own when it is a legal id, else null."""
    i = msg.get("id") if type(msg) is dict else None
    return i if (i is None or type(i) in (int, str, float)) else None


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
        if not self.done:
            self._deliver(None if self.notification else encode_result(self.id, result, self._jsonrpc))

    def fail(self, code, message=None, data=None):
        if not self.done:
            self._deliver(None if self.notification else encode_error(self.id, code, message, data, self._jsonrpc))

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


class Batch:
    """Collects the replies of a batch and sends them as one array once every member has answered."""

    def __init__(self, n, send):
        self.left = n
        self.frames = []
        self._send = send

    def add(self, frame):
        if frame is not None:
            self.frames.append(frame[:-1])  # without its newline
        self.left -= 1
        if self.left == 0 and self.frames:
            self._send(b"[" + b",".join(self.frames) + b"]\n")


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
            batch = Batch(len(msg), send)
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
        handler = self.methods.get(call.method)
        if handler is None:
            if self.fallback is not None:
                self.fallback(call)
            else:
                call.fail(METHOD_NOT_FOUND)
            return
        try:
            result = handler(call.params, call)
        except RpcError as e:
            call.fail(e.code, e.message, e.data)
            return
        except Exception as e:  # a bug in a handler must not take the link down
            call.fail(INTERNAL_ERROR, "internal error: %s" % (e,))
            return
        if result is not LATER:
            call.reply(result)


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
