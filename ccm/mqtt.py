"""MQTT 3.1.1 for the CCM: a sans-I/O packet codec and a small asyncio client (docs/protocol.md, the cloud).

The codec (`encode_*`, `PacketReader`, `parse_*`) turns packets into bytes and bytes into packets, and
runs anywhere. `MqttClient` moves those bytes over asyncio streams (TLS when configured) and keeps the
connection alive as the normal path: keepalive pings, reconnect with exponential backoff and jitter,
resubscribe, QoS 1 retransmission with DUP, and a bounded offline queue whose overflow is counted and
reported.
"""

import asyncio
import struct

from ccm.compat import random_bytes, sleep_ms_async, ticks_diff, ticks_ms, wait_ms

# MQTT 3.1.1 §2.2.1 control packet types
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# MQTT 3.1.1 §3.2.2.3 CONNACK return codes
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Codec


def _str(s):
    b = s.encode() if type(s) is str else bytes(s)
    return struct.pack("!H", len(b)) + b


def _packet(first, body):
    """Fixed header (§2.2) + body: the remaining length is a base-128 varint."""
    n = len(body)
    head = bytearray([first])
    while True:
        byte = n & 0x7F
        n >>= 7
        head.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(head) + body


def encode_connect(client_id, keepalive=60, clean=True, user=None, password=None, will=None):
    """CONNECT (§3.1). `will` = (topic, message, qos, retain)."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    return _packet(CONNECT << 4, _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def encode_publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    """PUBLISH (§3.3); payload as bytes or str."""
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body = _str(topic)
    if qos:
        body += struct.pack("!H", pid)
    return _packet(first, body + (payload.encode() if type(payload) is str else bytes(payload)))


def encode_puback(pid):
    return bytes([PUBACK << 4, 2]) + struct.pack("!H", pid)


def encode_subscribe(pid, topics):
    """SUBSCRIBE (§3.8): topics = [(filter, qos), …]."""
    body = struct.pack("!H", pid)
    for t, q in topics:
        body += _str(t) + bytes([q])
    return _packet(SUBSCRIBE << 4 | 2, body)


def encode_unsubscribe(pid, topics):
    body = struct.pack("!H", pid)
    for t in topics:
        body += _str(t)
    return _packet(UNSUBSCRIBE << 4 | 2, body)


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])
OUT_HIGH = 4096  # bytes waiting for the socket beyond which publishes wait in the queue (and its bound)
WRITE_MAX = 1460  # bytes joined into one write: a TCP segment's worth


class PacketReader:
    """Bytes in, (type, flags, body) out. A packet longer than `max_packet` raises MqttError.

    Once a packet's length is known its body gets one buffer of that size, filled as bytes arrive: a
    16 KB publish read 1 KB at a time no longer builds 16 ever longer copies (the heap churn and
    fragmentation a 96 KB heap cannot take)."""

    def __init__(self, max_packet=16384):
        self.max_packet = max_packet
        self.head = b""  # the fixed header, until its remaining length is complete
        self.first = 0
        self.body = None  # bytearray of the packet being received
        self.got = 0

    def _header(self):
        """Parse self.head: the bytes after the header, or None while it is incomplete."""
        b = self.head
        n = 0
        shift = 0
        i = 1
        while True:
            if i >= len(b):
                return None  # length not complete yet
            byte = b[i]
            n |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttError("malformed remaining length")
        if n > self.max_packet:
            raise MqttError("packet of %d bytes exceeds mqtt.max_packet %d" % (n, self.max_packet))
        self.first = b[0]
        self.body = bytearray(n)
        self.got = 0
        self.head = b""
        return b[i:]

    def feed(self, data):
        out = []
        while True:
            if self.body is None:
                if not data:
                    return out
                self.head += data
                data = self._header()
                if data is None:
                    return out
            take = min(len(data), len(self.body) - self.got)
            if take:
                self.body[self.got : self.got + take] = memoryview(data)[:take]
                self.got += take
                data = data[take:]
            if self.got < len(self.body):
                return out
            out.append((self.first >> 4, self.first & 0x0F, bytes(self.body)))
            self.body = None


def parse_connack(body):
    """(session_present, return_code)"""
    return bool(body[0] & 1), body[1]


def parse_publish(flags, body):
    """(topic, payload bytes, qos, retain, dup, pid)"""
    tlen = struct.unpack("!H", body[:2])[0]
    topic = body[2 : 2 + tlen].decode()
    qos = (flags >> 1) & 3
    i = 2 + tlen
    pid = 0
    if qos:
        pid = struct.unpack("!H", body[i : i + 2])[0]
        i += 2
    return topic, body[i:], qos, bool(flags & 1), bool(flags & 8), pid


def parse_pid(body):
    """The packet identifier of PUBACK, SUBACK, UNSUBACK."""
    return struct.unpack("!H", body[:2])[0]


def topic_matches(pattern, topic):
    """MQTT topic filter matching (§4.7): `+` one level, `#` the rest."""
    if pattern == topic:
        return True
    p = pattern.split("/")
    t = topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t):
            return False
        if part != "+" and part != t[i]:
            return False
    return len(p) == len(t)


# ---------------------------------------------------------------------------------------------------
# Client

DISCONNECTED = 0
CONNECTING = 1
CONNECTED = 2


class Outgoing:
    """One message to publish; `on_done(error)` runs once: None when sent (QoS 0) or acknowledged (QoS 1)."""

    def __init__(self, topic, payload, qos, retain, on_done=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.on_done = on_done
        self.pid = 0

    def done(self, error=None):
        cb = self.on_done
        self.on_done = None
        if cb:
            cb(error)


class MqttClient:
    """One MQTT connection that keeps itself up.

    `on_message(topic, payload_bytes)`, `on_connect()` and `on_disconnect(reason)` are set by the owner
    (the shadow bridge). `publish` works in any state: offline, messages wait in a queue of
    `queue_size`; when that is full the new message is refused (`publish` returns False, its `on_done`
    gets "queue full") and `dropped` counts it.
    """

    def __init__(
        self,
        host,
        port=1883,
        client_id="ccm",
        keepalive=60,
        user=None,
        password=None,
        will=None,
        ssl=None,
        queue_size=32,
        backoff_min_ms=500,
        backoff_max_ms=30000,
        max_packet=16384,
        open_connection=None,
    ):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will
        self.ssl = ssl
        self.queue_size = queue_size
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_packet = max_packet
        self._open = open_connection or asyncio.open_connection
        self.state = DISCONNECTED
        self.subs = {}  # filter -> qos, resubscribed on every connect
        self.queue = []  # Outgoing waiting for a connection
        self.inflight = {}  # pid -> Outgoing, QoS 1 sent and not yet acknowledged
        self.dropped = 0
        self.connects = 0
        self.last_error = None
        self.on_message = None
        self.on_connect = None
        self.on_disconnect = None
        self._pid = 0
        self._writer = None
        self._stop = False
        self._sent_ms = 0
        self._heard_ms = 0
        self._dirty = asyncio.Event()
        self._ended = None  # set when the session must end: EOF, an error, the keepalive, stop()
        self._why = None  # why it ended
        self._out = []  # bytes for the flusher
        self._out_bytes = 0
        self._flushing = False
        self.sockets_open = 0  # connections opened and not yet closed (never more than 1)

    # -- API --------------------------------------------------------------------------------------
    def publish(self, topic, payload, qos=0, retain=False, on_done=None, control=False, reserved=False):
        """Send now, or queue; False (and on_done("queue full…")) when the bound is reached.

        `control` messages are the CCM's own (presence, shadow get, refusals): sent ahead of the queue
        and outside its bound when connected, dropped when not (they are sent again at every connect).
        `reserved` messages had their room counted by the caller before it took on the work (replies
        to cloud RPC): they are queued whatever the bound says, never refused.
        """
        msg = Outgoing(topic, payload, qos, retain, on_done)
        if self.state == CONNECTED and (control or (not self.queue and self._room())):
            self._send_publish(msg)
            return True
        if control:
            msg.done("not connected")
            return False
        if not reserved and len(self.queue) + len(self.inflight) >= self.queue_size:
            self.dropped += 1
            msg.done("queue full: %d messages already wait for the broker" % self.queue_size)
            return False
        self.queue.append(msg)
        return True

    def subscribe(self, topic, qos=0):
        self.subs[topic] = qos
        if self.state == CONNECTED:
            self._write(encode_subscribe(self._next_pid(), [(topic, qos)]))

    def unsubscribe(self, topic):
        self.subs.pop(topic, None)
        if self.state == CONNECTED:
            self._write(encode_unsubscribe(self._next_pid(), [topic]))

    async def run(self):
        """Connect, serve, and reconnect with backoff until `stop()`."""
        delay = self.backoff_min_ms
        while not self._stop:
            try:
                await self._session()
                delay = self.backoff_min_ms  # it worked for a while: start again from the shortest wait
            except Exception as e:  # connection refused, reset, TLS failure, protocol error
                self.last_error = str(e) or type(e).__name__
            if self._stop:
                break
            self._lost(self.last_error or "connection closed")
            await sleep_ms_async(delay // 2 + _jitter(delay // 2))
            delay = min(delay * 2, self.backoff_max_ms)
        self._lost("stopped")

    def stop(self):
        """Say DISCONNECT and end the session (its task closes the socket: see _session). A clean
        DISCONNECT makes the broker drop the last will, so the will is published first: watchers of
        the presence topic see a stopped CCM go offline as they see a lost one."""
        self._stop = True
        if self._writer is not None:
            if self.will and self.state == CONNECTED:
                topic, message, _, retain = self.will
                self._write(encode_publish(topic, message, 0, retain, 0))
            self._write(DISCONNECT_PACKET)
        self._end(None)

    # -- the connection -----------------------------------------------------------------------
    async def _session(self):
        """One connection, from CONNECT to its end. MicroPython's streams differ from CPython's
        (docs/architecture.md, the runtimes): close() does nothing until wait_closed(), a write() while
        another task is in drain() is lost, a pending read() only ends when data or EOF comes, and a
        read cancelled by a timeout takes the socket's whole poll entry with it — a writer waiting in
        drain() on the same socket is then never woken (extmod/asyncio/core.py, IOQueue.remove). So:
        one task writes (the flusher), one task reads and is never timed out (the reader), the session
        waits for an event that EOF, an error, the keepalive or stop() sets, and the socket is closed
        with wait_closed() whatever ends it."""
        self.state = CONNECTING
        self._out = []
        self._out_bytes = 0
        self._flushing = False
        self._why = None
        ended = self._ended = asyncio.Event()
        if self.ssl is not None:
            reader, writer = await self._open(self.host, self.port, ssl=self.ssl)
        else:
            reader, writer = await self._open(self.host, self.port)
        self.sockets_open += 1
        packets = PacketReader(self.max_packet)
        try:
            writer.write(encode_connect(self.client_id, self.keepalive, True, self.user, self.password, self.will))
            await writer.drain()
            first = await self._connack(reader, packets, self.keepalive * 1000 or 30000)
            if not first or first[0][0] != CONNACK:
                raise MqttError("no CONNACK from %s:%d" % (self.host, self.port))
            rc = parse_connack(first[0][2])[1]
            if rc:
                raise MqttError("broker refused the connection: %s" % CONNACK_REASONS.get(rc, rc))
            self._writer = writer
            self._connected()
            for p in first[1:]:
                self._handle(p)
            helpers = [
                asyncio.create_task(self._pinger()),
                asyncio.create_task(self._flusher(writer)),
                asyncio.create_task(self._reader(reader, packets)),
            ]
            try:
                if not self._stop:
                    await ended.wait()
                if not self._stop:
                    raise MqttError(self._why or "the broker closed the connection")
                await wait_ms(self._flushed(), 1000)  # stop(): the will and DISCONNECT still to go
            finally:
                for t in helpers:
                    t.cancel()
        finally:
            self._writer = None
            await self._close(writer)

    async def _close(self, writer):
        try:
            writer.close()
            await wait_ms(writer.wait_closed(), 2000)  # on MicroPython this is what closes the socket
        except Exception:
            pass
        self.sockets_open -= 1

    async def _connack(self, reader, packets, timeout_ms):
        """The first packets (CONNACK first); [] at EOF or after `timeout_ms` of silence. A timed-out
        read is safe here: nothing else waits on the socket yet."""
        while True:
            try:
                data = await wait_ms(reader.read(1024), timeout_ms)
            except asyncio.TimeoutError:
                return []
            if not data:
                return []
            self._heard_ms = ticks_ms()
            got = packets.feed(data)
            if got:
                return got

    async def _reader(self, reader, packets):
        """The session's only reader: packets handled as they complete, until EOF or an error."""
        why = "the broker closed the connection"
        try:
            while True:
                data = await reader.read(1024)
                if not data:
                    break
                self._heard_ms = ticks_ms()
                for p in packets.feed(data):
                    self._handle(p)
        except Exception as e:  # a reset, a packet over max_packet, a malformed one
            why = str(e) or type(e).__name__
        self._end(why)

    def _end(self, why):
        """End the session (stop(): why is None)."""
        if self._why is None:
            self._why = why
        if self._ended is not None:
            self._ended.set()

    def _connected(self):
        self.state = CONNECTED
        self.connects += 1
        self.last_error = None
        if self.subs:
            self._write(encode_subscribe(self._next_pid(), list(self.subs.items())))
        # QoS 1 messages the broker never acknowledged go again, marked DUP (§4.4)
        for msg in list(self.inflight.values()):
            self._write(encode_publish(msg.topic, msg.payload, 1, msg.retain, msg.pid, dup=True))
        if self.on_connect:
            self.on_connect()
        self._send_queued()

    def _room(self):
        """A publish may go to the socket now: the acknowledgements and the socket keep up."""
        return len(self.inflight) < self.queue_size and self._out_bytes < OUT_HIGH

    def _send_queued(self):
        while self.queue and self.state == CONNECTED and self._room():
            self._send_publish(self.queue.pop(0))

    def _lost(self, reason):
        was = self.state
        self.state = DISCONNECTED
        if was == CONNECTED and self.on_disconnect:
            self.on_disconnect(reason)

    def _handle(self, packet):
        kind, flags, body = packet
        if kind == PUBLISH:
            topic, payload, qos, retain, dup, pid = parse_publish(flags, body)
            if qos:
                self._write(encode_puback(pid))
            if self.on_message:
                self.on_message(topic, payload)
        elif kind == PUBACK:
            msg = self.inflight.pop(parse_pid(body), None)
            if msg:
                msg.done()
                self._send_queued()
        # SUBACK, UNSUBACK, PINGRESP: hearing from the broker is all they tell us

    def _send_publish(self, msg):
        if msg.qos:
            msg.pid = self._next_pid()
            self.inflight[msg.pid] = msg
        self._write(encode_publish(msg.topic, msg.payload, msg.qos, msg.retain, msg.pid))
        if not msg.qos:
            msg.done()

    def _write(self, data):
        """Queue bytes for the flusher, the session's only writer."""
        if self._writer is not None:
            self._out.append(data)
            self._out_bytes += len(data)
            self._sent_ms = ticks_ms()
            self._dirty.set()

    async def _flusher(self, writer):
        """The session's only writer. While the broker does not read, drain() waits: what is published
        meanwhile waits in the bounded queue (see _room), not in memory without end."""
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                self._flushing = True
                while self._out:
                    data = self._take(WRITE_MAX)
                    writer.write(data)
                    await writer.drain()
                    self._out_bytes -= len(data)
                self._flushing = False
                self._send_queued()
        except Exception as e:  # the connection broke under a write
            self._end(str(e) or type(e).__name__)
        finally:
            self._flushing = False

    def _take(self, limit):
        """The next packets from the out queue, joined up to `limit` bytes (one at least): small ones go
        in one write, and no copy of everything waiting is made (a stalled broker lets it grow)."""
        out = self._out
        n = 1
        size = len(out[0])
        while n < len(out) and size + len(out[n]) <= limit:
            size += len(out[n])
            n += 1
        if n == 1:
            return out.pop(0)
        data = b"".join(out[:n])
        del out[:n]
        return data

    async def _flushed(self):
        while self._out or self._flushing:
            await sleep_ms_async(10)

    async def _pinger(self):
        """PINGREQ when we have been quiet for the keepalive; give up on a broker silent for 1.5×."""
        if not self.keepalive:
            return
        ka = self.keepalive * 1000
        while True:
            await sleep_ms_async(min(ka // 4, 1000))
            now = ticks_ms()
            if ticks_diff(now, self._heard_ms) > ka * 3 // 2:
                self._end("no answer from the broker for %g s (keepalive)" % (ka * 3 / 2000))
                return
            if ticks_diff(now, self._sent_ms) >= ka * 3 // 4:
                self._write(PINGREQ_PACKET)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        while self._pid in self.inflight:
            self._pid = self._pid % 65535 + 1
        return self._pid


def _jitter(n):
    """0..n-1 at random: a fleet that lost its broker together must not come back together."""
    return int.from_bytes(random_bytes(2), "big") % n if n > 0 else 0
