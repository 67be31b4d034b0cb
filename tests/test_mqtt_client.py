"""MqttClient against a scripted broker, for what a well-behaved mosquitto never does on cue:
withhold a PUBACK across a disconnect, or stop answering pings."""

import asyncio

from ccm import mqtt


class ScriptedBroker:
    """Accepts connections and hands each one to the test as (packets, writer)."""

    def __init__(self):
        self.conns: asyncio.Queue = asyncio.Queue()

    async def start(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer):
        await self.conns.put(Conn(reader, writer))


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.pr = mqtt.PacketReader()
        self.pending = []

    async def packet(self):
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(1024), 10)
            assert data, "client closed"
            self.pending += self.pr.feed(data)
        return self.pending.pop(0)

    async def accept_connect(self):
        kind, _, _ = await self.packet()
        assert kind == mqtt.CONNECT
        self.writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted

    def close(self):
        self.writer.close()


async def test_unacknowledged_qos1_is_resent_with_dup_after_reconnect():
    broker = ScriptedBroker()
    await broker.start()
    client = mqtt.MqttClient("127.0.0.1", broker.port, client_id="t", backoff_min_ms=50, backoff_max_ms=100)
    task = asyncio.create_task(client.run())
    c1 = await broker.conns.get()
    await c1.accept_connect()
    done = []
    while client.state != mqtt.CONNECTED:
        await asyncio.sleep(0.01)
    client.publish("a/b", "payload", 1, False, done.append)
    kind, flags, body = await c1.packet()
    topic, payload, qos, retain, dup, pid = mqtt.parse_publish(flags, body)
    assert (kind, topic, payload, qos, dup) == (mqtt.PUBLISH, "a/b", b"payload", 1, False)
    c1.close()  # no PUBACK: the broker went away

    c2 = await broker.conns.get()
    await c2.accept_connect()
    kind, flags, body = await c2.packet()
    again = mqtt.parse_publish(flags, body)
    assert again == ("a/b", b"payload", 1, False, True, pid)  # same id, DUP set (MQTT 3.1.1 §4.4)
    assert done == []
    c2.writer.write(mqtt.encode_puback(pid))
    while not done:
        await asyncio.sleep(0.01)
    assert done == [None] and client.inflight == {}
    client.stop()
    task.cancel()


async def test_a_broker_that_stops_answering_pings_is_left_and_reconnected():
    broker = ScriptedBroker()
    await broker.start()
    client = mqtt.MqttClient("127.0.0.1", broker.port, keepalive=1, backoff_min_ms=50, backoff_max_ms=100)
    lost = []
    client.on_disconnect = lost.append
    task = asyncio.create_task(client.run())
    c1 = await broker.conns.get()
    await c1.accept_connect()
    kind, _, _ = await c1.packet()
    assert kind == mqtt.PINGREQ  # sent after 3/4 of the keepalive of silence; never answered
    c2 = await asyncio.wait_for(broker.conns.get(), 10)
    assert lost and "keepalive" in lost[0]
    await c2.accept_connect()
    while client.state != mqtt.CONNECTED:
        await asyncio.sleep(0.01)
    assert client.connects == 2
    client.stop()
    task.cancel()


async def test_refused_connection_is_reported_and_retried_with_backoff():
    broker = ScriptedBroker()
    await broker.start()
    client = mqtt.MqttClient("127.0.0.1", broker.port, backoff_min_ms=50, backoff_max_ms=200)
    task = asyncio.create_task(client.run())
    for _ in range(3):
        c = await broker.conns.get()
        await c.packet()
        c.writer.write(b"\x20\x02\x00\x05")  # CONNACK: not authorized
    while not client.last_error:
        await asyncio.sleep(0.01)
    assert "not authorized" in client.last_error and client.state != mqtt.CONNECTED
    client.stop()
    task.cancel()
