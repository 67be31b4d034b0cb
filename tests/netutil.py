"""A TCP forwarder the tests put between the CCM and the broker, to hold its reconnection back."""

import socket
import subprocess
import threading


class TcpProxy:
    """127.0.0.1:port → 127.0.0.1:target. `block()` refuses new connections and cuts the current ones;
    `pause()` stops reading from the client until `resume()`."""

    def __init__(self, target_port: int, rcvbuf: int | None = None):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # small: a pause() fills it soon, and the client's writes back up
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.flowing = threading.Event()  # cleared by pause(): client → target stops being read
        self.flowing.set()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.blocked = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b, gate in ((client, upstream, self.flowing), (upstream, client, None)):
                t = threading.Thread(target=self._pump, args=(a, b, gate), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump(self, a, b, gate=None):
        try:
            while True:
                while gate is not None and not gate.wait(0.1):
                    if self.closed:
                        return
                data = a.recv(4096)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def block(self):
        self.blocked = True
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def allow(self):
        self.blocked = False

    def pause(self):
        """The target stops reading what the client sends (a broker that stalls): TCP backpressure."""
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.block()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() alone leaves waiting
        except OSError:
            pass
        self.sock.close()
        for t in self.threads:
            t.join(5)


class UdpServer:
    """A UDP server on 127.0.0.1 (a free port, known before `start()`) answering each datagram with
    `answer(request)` (None: no answer) on a thread of its own; `answered` counts the answers."""

    def __init__(self):
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.answered = 0
        self._thread = None
        self._stop = False

    def start(self):
        import threading

        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop:
            try:
                req, addr = self.sock.recvfrom(512)
            except OSError:
                continue
            reply = self.answer(req)
            if reply is not None:
                self.sock.sendto(reply, addr)
                self.answered += 1

    def answer(self, request: bytes) -> bytes | None:
        raise NotImplementedError

    def stop(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close()


class SntpServer(UdpServer):
    """An SNTP server answering with this PC's time, as pool.ntp.org would. A CCM can be pointed at its
    port before it is started (a server that is not up yet)."""

    def answer(self, req):
        import struct
        import time

        now = time.time() + 2208988800
        secs, frac = int(now), int((now % 1) * 2**32)
        reply = bytes([0x24, 2, 6, 0xEC]) + b"\0" * 8 + b"LOCL" + struct.pack("!II", secs, frac) * 2
        return (reply + req[40:48] + struct.pack("!II", secs, frac))[:48]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name="ca", cn="ccm test CA"):
    """A self-signed CA certificate NAME.pem with its key NAME.key, made with openssl in the directory `d`."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={cn}",
        cwd=d,
    )


def make_pki(d):
    """A test CA (ca.pem), a server certificate for 127.0.0.1/localhost and a device (client) certificate,
    each with its key, made with openssl in the directory `d`."""
    make_ca(d)
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("device", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


class DnsServer(UdpServer):
    """A DNS server answering A questions for `names` ({name: ip}) after `delay` seconds (a slow
    resolver), NXDOMAIN for the rest; `queries` counts what it was asked. It starts at once."""

    def __init__(self, names: dict[str, str], delay: float = 0.0):
        super().__init__()
        self.names = names
        self.delay = delay
        self.queries = 0
        self.start()

    def answer(self, req):
        import struct
        import time

        self.queries += 1
        i, labels = 12, []
        while req[i]:
            labels.append(req[i + 1 : i + 1 + req[i]].decode())
            i += req[i] + 1
        question = req[12 : i + 5]
        ip = self.names.get(".".join(labels))
        time.sleep(self.delay)
        qid = struct.unpack("!H", req[:2])[0]
        if ip is None:
            return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(int(x) for x in ip.split("."))
        return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer
