"""The UART link to the host (docs/protocol.md, the UART link): framer in, one writer out, calls to the host.

`stream` is anything with `await read(n)`, `write(bytes)` and `await drain()`: asyncio.StreamReader over
machine.UART on the ESP32, a pty on the virtual board, an in-memory pipe in tests.
"""

import asyncio

from ccm import rpc
from ccm.compat import sleep_ms_async, ticks_ms

READ_CHUNK = 256  # bytes per UART read: small enough to keep latency low, large enough to batch


class HostLink:
    """One host on one UART. `send` queues a frame; `call`/`notify` talk to the host's methods."""

    name = "host"

    def __init__(self, stream, router, config):
        self.stream = stream
        self.router = router
        self.framer = rpc.Framer(config.get("rpc.max_frame_size"))
        self.jsonrpc = config.get("rpc.jsonrpc_member")
        self.pending = rpc.Pending(config.get("rpc.max_pending"))
        self.timeout_ms = config.get("rpc.host_timeout_ms")
        self.tx_limit = config.get("rpc.tx_queue")
        self._tx = []
        self._tx_ready = asyncio.Event()
        self._tx_space = asyncio.Event()  # set by the writer when the queue drops below tx_limit
        self.stats = {
            "rx_frames": 0,
            "tx_frames": 0,
            "tx_dropped": 0,  # notifications that found the queue full (replies are never dropped)
            "rx_errors": 0,
            "rx_paused": 0,  # times reading stopped until the host had taken its answers
            "late_responses": 0,
        }
        self.info = None  # the host's last Sys.Info answer, when something asked for it
        self._raw = None  # while the UART is lent out: who takes its bytes (ccm/ota/host.py's RawPort)
        self.set_parity = None  # the board's uart_parity("E"|"N"), for the bootloader's 8E1

    # -- lending the UART (host flashing) ----------------------------------------------------
    def borrow(self, port):
        """Hand the raw UART to someone else (the STM32 flasher): what the host sends goes to
        `port.feed(data)` instead of the framer, and JSON-RPC pauses until give_back()."""
        self._raw = port
        return port

    def give_back(self):
        self._raw = None
        self.framer = rpc.Framer(self.framer.max_frame_size)  # bootloader bytes are not a frame
        self._tx_ready.set()
        self._tx_space.set()

    @property
    def busy(self):
        return self._raw is not None

    # -- output --------------------------------------------------------------------------------
    def send(self, frame):
        """Queue a frame the CCM starts (notification, forwarded request): False, counted, when full."""
        if len(self._tx) >= self.tx_limit:
            self.stats["tx_dropped"] += 1
            return False
        self._reply(frame)
        return True

    def _reply(self, frame):
        """Queue an answer to the host: always taken. The queue stays bounded because the reader stops
        reading while it is full (backpressure), so the host cannot ask faster than it takes answers."""
        self._tx.append(frame)
        self._tx_ready.set()

    def notify(self, method, params=None):
        return self.send(rpc.encode_notification(method, params, self.jsonrpc))

    def call_cb(self, method, params, on_done, timeout_ms=None):
        """Send a request; `on_done(response)` runs once with the host's answer or a -32000 timeout."""
        i = self.pending.add(on_done, timeout_ms or self.timeout_ms, ticks_ms())
        if not self.send(rpc.encode_request(i, method, params, self.jsonrpc)):
            del self.pending.table[i]
            raise rpc.RpcError(rpc.QUEUE_FULL, "queue full: the link to the host is not draining")
        return i

    # -- input ---------------------------------------------------------------------------------
    def receive(self, data):
        """Feed bytes read from the UART."""
        if self._raw is not None:
            self._raw.feed(data)
            return
        for item in self.framer.feed(data):
            if type(item) is rpc.FrameError:
                self.stats["rx_errors"] += 1
                self._reply(rpc.encode_error(None, item.code, item.message, None, self.jsonrpc))
                continue
            self.stats["rx_frames"] += 1
            try:
                self._item(item)
            except Exception as e:  # no frame may end the link (the dispatcher answers; this is the last net)
                self.stats["rx_errors"] += 1
                print("ccm: link: frame dropped after an internal error:", repr(e))

    def _item(self, item):
        if type(item) is list:
            rest = [m for m in item if rpc.kind(m) != rpc.RESPONSE or not self._response(m)]
            if rest or not item:  # [] is answered: one -32600
                self.router.dispatch(rest, self._reply, self)
        elif rpc.kind(item) == rpc.RESPONSE:
            self._response(item)
        else:
            self.router.dispatch(item, self._reply, self)

    def _response(self, msg):
        if not self.pending.resolve(msg):
            self.stats["late_responses"] += 1
        return True

    # -- tasks ---------------------------------------------------------------------------------
    async def _writer(self):
        while True:
            while not self._tx or self._raw is not None:  # frames wait while the UART is lent out
                self._tx_ready.clear()
                await self._tx_ready.wait()
            frame = self._tx.pop(0)
            if len(self._tx) < self.tx_limit:
                self._tx_space.set()
            self._writing = True
            self.stream.write(frame)  # one write per frame: frames never interleave
            await self.stream.drain()
            self._writing = False
            self.stats["tx_frames"] += 1

    _writing = False

    def flushed(self):
        """Every frame queued for the host is written (what a reset must wait for)."""
        return not self._writing and (not self._tx or self._raw is not None)

    async def _expirer(self):
        while True:
            await sleep_ms_async(20)
            if self.pending.table:
                self.pending.expire(ticks_ms())

    async def run(self, hello=None):
        """Serve the link until the stream ends. `hello` = params of the Sys.Init sent at link-up."""
        tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._expirer())]
        if hello is not None:
            self.notify("Sys.Init", hello)
        try:
            while True:
                while len(self._tx) >= self.tx_limit and self._raw is None:  # backpressure, not loss
                    self.stats["rx_paused"] += 1
                    self._tx_space.clear()
                    await self._tx_space.wait()
                data = await self.stream.read(READ_CHUNK)
                if not data:
                    break
                self.receive(data)
        finally:
            for t in tasks:
                t.cancel()
            self.pending.fail_all(rpc.NOT_CONNECTED, "not connected: the link to the host closed")
