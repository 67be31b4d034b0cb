"""The /rpc server's listening socket: all of the server a module keeps loaded between requests.

The HTTP and WebSocket code (ccm/http.py, and ccm/digest.py once a password is set) loads when a
client connects and, on MicroPython, is dropped again when the last connection ends: on a stock image
its bytecode would otherwise hold ~7 KB of a plain ESP32's heap for a server that is idle nearly always.
What must outlive one connection (the Digest nonces' key) is in `keep`.
"""

import asyncio

from ccm.compat import unload

MAX_CONNECTIONS = 4  # served at once; beyond, a client is closed at once (each one costs heap on a module)


class Listener:
    def __init__(self, handler):
        self.handler = handler  # handler(keep) -> an object whose connection(reader, writer) serves one client
        self.keep = {}
        self.server = None
        self._serving = None
        self._open = 0

    async def serve(self, host, port, listening=None):
        """Serve until stopped. Port 0 takes a free port: `listening(server)` is called once it is bound,
        so the board can learn the port it got (and keep it for the next boot)."""
        self.server = await asyncio.start_server(self._connection, host, port)
        try:
            if listening is not None:
                listening(self.server)
            await self.server.wait_closed()
        finally:
            self.server.close()

    def stop(self):
        """Stop serving; a server that never started (its port was taken, say) has nothing to stop."""
        if self.server is not None:
            self.server.close()

    async def _connection(self, reader, writer):
        if self._open >= MAX_CONNECTIONS:  # a flood of clients (slow or not) cannot take the heap
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass
            return
        self._open += 1
        try:
            if self._serving is None:
                self._serving = self.handler(self.keep)
            await self._serving.connection(reader, writer)
        except Exception as e:  # no heap to load the server: this client goes, the link and the socket stay
            print("ccm: /rpc connection: %r" % e)
            writer.close()
        finally:
            self._open -= 1
            if not self._open:
                self._serving = None
                unload("ccm.http", "ccm.digest")
