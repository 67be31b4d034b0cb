"""MqttClient sessions over streams that behave as MicroPython's do (issue 11, item 3): close() does nothing
until wait_closed(), a write() made while drain() runs is lost, a pending read() ends only with data or
EOF. Portable: on MicroPython the tasks, cancellation and timeouts are the module's own asyncio.

Measured on MicroPython before the fix: a socket leaked per session, and a silent broker was never
dropped; here: no more than one socket open across 20 outages, the silent broker dropped after 1.5
keepalives, and no write lost to a drain in progress."""

import asyncio

from fwtest import End, Wire

from ccm import mqtt
from ccm.compat import sleep_ms_async


class MpStream(End):
    """One TCP connection as MicroPython's asyncio.Stream presents it (extmod/asyncio/stream.py): reads
    as any stream, writes, drain and close its own way."""

    def __init__(self, rx, tx):
        super().__init__(rx, tx)
        self.out_buf = b""
        self.in_drain = False
        self.closed = False
        self.lost = 0  # bytes written while a drain ran: MicroPython drops them
        self.sent = b""  # what reached the wire

    def write(self, buf):
        if self.in_drain:
            self.lost += len(buf)  # appended to a buffer drain() throws away when it ends
            return
        self.out_buf += buf

    async def drain(self):
        self.in_drain = True
        await sleep_ms_async(2)  # the radio takes its time
        if not self.closed:
            self.tx.buf += self.out_buf
            self.sent += self.out_buf
            self.tx.ev.set()
        self.out_buf = b""
        self.in_drain = False

    def close(self):
        pass  # MicroPython: nothing happens here

    async def wait_closed(self):
        self.closed = True
        self.tx.closed = True
        self.tx.ev.set()


class Broker:
    """Answers CONNECT, SUBSCRIBE, PUBLISH (QoS 1) and PINGREQ; `mode` "drop" closes each connection
    after its CONNACK, "silent" stops answering after the CONNACK."""

    def __init__(self, mode="normal"):
        self.mode = mode
        self.streams = []
        self.published = 0
        self.connects = 0

    async def open_connection(self, host, port, ssl=None):
        a, b = Wire(), Wire()
        client = MpStream(a, b)
        self.streams.append(client)
        asyncio.create_task(self._serve(End(b, a)))
        return client, client

    async def _serve(self, end):
        reader = mqtt.PacketReader()
        while True:
            data = await end.read(1024)
            if not data:
                return
            for kind, flags, body in reader.feed(data):
                if kind == 1:  # CONNECT
                    self.connects += 1
                    end.write(bytes([0x20, 2, 0, 0]))
                    if self.mode == "drop":
                        await sleep_ms_async(5)
                        end.close()
                        return
                elif self.mode == "silent":
                    continue
                elif kind == mqtt.PUBLISH:
                    topic, payload, qos, _, _, pid = mqtt.parse_publish(flags, body)
                    self.published += 1
                    if qos:
                        end.write(mqtt.encode_puback(pid))
                elif kind == 8:  # SUBSCRIBE
                    end.write(bytes([0x90, 3]) + body[:2] + b"\x01")
                elif kind == mqtt.PINGREQ:
                    end.write(bytes([0xD0, 0]))


def client(broker, **kw):
    return mqtt.MqttClient("broker", 1883, "dev", open_connection=broker.open_connection, **kw)


async def until(cond, ms=10000):
    for _ in range(ms // 5):
        if cond():
            return
        await sleep_ms_async(5)
    raise AssertionError("timed out")


async def test_no_socket_stays_open_across_20_outages():
    broker = Broker("drop")
    c = client(broker, backoff_min_ms=2, backoff_max_ms=4)
    task = asyncio.create_task(c.run())
    await until(lambda: broker.connects >= 20)
    await sleep_ms_async(30)
    assert c.sockets_open <= 1
    assert sum(1 for s in broker.streams if not s.closed) <= 1, [s.closed for s in broker.streams]
    c.stop()
    await until(lambda: task.done() or all(s.closed for s in broker.streams), 3000)
    assert all(s.closed for s in broker.streams) and c.sockets_open == 0
    task.cancel()


async def test_a_silent_broker_is_dropped_after_one_and_a_half_keepalives():
    broker = Broker("silent")
    c = client(broker, keepalive=1, backoff_min_ms=50, backoff_max_ms=100)
    lost = []
    c.on_disconnect = lost.append
    task = asyncio.create_task(c.run())
    await until(lambda: c.state == mqtt.CONNECTED)
    await until(lambda: lost, 5000)
    assert "no answer from the broker" in lost[0] and broker.streams[0].closed
    await until(lambda: broker.connects >= 2, 3000)  # and it tries again
    task.cancel()


async def test_no_write_is_lost_to_a_drain_in_progress():
    broker = Broker()
    c = client(broker)
    task = asyncio.create_task(c.run())
    await until(lambda: c.state == mqtt.CONNECTED)
    done = []

    async def publisher(k):
        for i in range(10):
            c.publish("t", "%d-%d" % (k, i), 1, on_done=done.append)
            await sleep_ms_async(1)

    for k in range(5):
        asyncio.create_task(publisher(k))
    await until(lambda: len(done) == 50)
    assert done == [None] * 50 and broker.published == 50, (done, broker.published)
    assert broker.streams[-1].lost == 0
    task.cancel()
