"""The /rpc server's listening socket: all of the server a module keeps loaded between requests.

The HTTP code (ccm/http.py, and ccm/digest.py once a password is set) loads when a client connects
and, on MicroPython, is dropped again when no request is being read: on a stock image its bytecode
would otherwise hold ~11 KB of a plain ESP32's heap for a server that is idle nearly always. A
WebSocket, once upgraded, is served by ccm/ws.py alone (a third of that), held while one is open.
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
        self._open = 0  # connections
        self._clients = []  # the writer of each: a stop ends them too, as a module's reset does
        self._http = 0  # of them, reading a request (ccm/http.py loaded)
        self._ws = 0  # of them, WebSocket sessions (ccm/ws.py loaded)

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
        """Stop serving and end the connections (a client of this boot must not be answered by its
        leftovers); a server that never started (its port was taken, say) has nothing to stop."""
        if self.server is not None:
            self.server.close()
        for writer in self._clients:  # its session reads the end and is over (on MicroPython close() is
            writer.close()  # a no-op: there a boot ends with a reset, which ends them anyway)

    async def _connection(self, reader, writer):
        if self._open >= MAX_CONNECTIONS:  # a flood of clients (slow or not) cannot take the heap
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass
            return
        self._open += 1
        self._clients.append(writer)
        try:
            session = await self._request(reader, writer)
            if session is not None:  # an upgraded WebSocket, without the HTTP code
                self._ws += 1
                try:
                    from ccm import ws

                    await ws.session(reader, writer, *session)
                finally:
                    self._ws -= 1
                    if not self._ws:
                        unload("ccm.ws")
        except Exception as e:  # no heap to load the server: this client goes, the link and the socket stay
            print("ccm: /rpc connection: %r" % e)
            writer.close()
        finally:
            self._open -= 1
            self._clients.remove(writer)

    async def _request(self, reader, writer):
        """The HTTP part of a connection (ccm/http.py): None when it is over, else a WebSocket session's
        arguments."""
        self._http += 1
        try:
            if self._serving is None:
                self._serving = self.handler(self.keep)
            return await self._serving.connection(reader, writer)
        finally:
            self._http -= 1
            if not self._http:
                self._serving = None
                unload("ccm.http", "ccm.digest")
