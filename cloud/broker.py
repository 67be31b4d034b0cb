"""An MQTT broker on 127.0.0.1 for the local cloud, the virtual product and the tests.

mosquitto when it is on PATH (the real peer), else the embedded amqtt broker, so the local cloud also
works on a bare machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pc.net import listening_ports, pick_port, wait_listening


class Mosquitto:
    """A mosquitto process on a free port; `stop()`/`start()` again keep the same port (outage tests).
    mosquitto cannot take port 0: a port is picked, and another one when that was taken meanwhile."""

    kind = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        tls: dict | None = None,
        users: dict | None = None,
        exe: str | None = None,
        acl: bool = False,
    ):
        self.exe = exe or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._repick = port is None  # until the first start succeeds, a taken port may be swapped for another
        self.port = port or pick_port()
        self.tls = tls  # {"cafile", "certfile", "keyfile", "require_certificate"}
        self.users = users  # {user: password}: anonymous clients are refused
        self.acl = acl  # each device on its own topics (DEVICE_ACL); CLOUD_USER everywhere
        self.dir = Path(tempfile.mkdtemp(prefix="ccm-mosquitto-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _conf(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                set_password(pw, user, password)
            lines += ["allow_anonymous false", f"password_file {pw}"]
            if self.acl:
                (self.dir / "acl").write_text(DEVICE_ACL)
                lines.append(f"acl_file {self.dir / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        lines.append("set_tcp_nodelay true")  # else Nagle + delayed ACK add ~40 ms to every small exchange
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to `mosquitto`, who cannot read our private files
        if self.tls:
            lines += [
                f"cafile {self.tls['cafile']}",
                f"certfile {self.tls['certfile']}",
                f"keyfile {self.tls['keyfile']}",
            ]
            if self.tls.get("require_certificate"):
                lines += ["require_certificate true", "use_identity_as_username true"]
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Mosquitto:
        if not Path(self.exe).exists():
            raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        for _ in range(5):
            log_path = self.dir / "mosquitto.log"
            log_path.write_bytes(b"")
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen([self.exe, "-c", str(self._conf())], stdout=log, stderr=log)
            why = self._wait_listening()
            if why is None:
                self._repick = False
                return self
            self.stop()
            if not (self._repick and "in use" in why):
                raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}: {why}")
            self.port = pick_port()
        raise RuntimeError(f"mosquitto did not start: every port tried was taken ({why})")

    def _wait_listening(self, timeout: float = 10.0) -> str | None:
        """None once mosquitto itself listens on our port, else why not (its log's last lines)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return (self.dir / "mosquitto.log").read_text(errors="replace")[-2000:].strip() or "it exited"
            if self.port in listening_ports(self.proc.pid):
                return None
            time.sleep(0.02)
        return f"not listening after {timeout:g} s"

    def stop(self) -> None:
        """Kill it hard: an outage, not a polite shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def set_password(passwd_file, user: str, password: str) -> None:
    """A user's password in a mosquitto password file (mosquitto_passwd hashes it)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([exe, "-b", str(passwd_file), user, password], check=True, capture_output=True)


CLOUD_USER = "ccm-cloud"  # the cloud's own clients: the shadow service, the dashboard, ccm's CLI
# mosquitto's ACL when `ccm cloud` runs it: a device (its MQTT user is its device id) uses its own shadow and
# its own topics ({id}/rpc, {id}/status, what its host publishes under {id}/), and answers the cloud's calls
# under cloud/ (cloud/client.py) — it can neither call another device nor touch its shadow.
DEVICE_ACL = f"""user {CLOUD_USER}
topic readwrite #
topic readwrite $aws/#

pattern readwrite $aws/things/%u/shadow/#
pattern readwrite %u/#
pattern write cloud/+/rpc
"""


class _DollarTopic(str):
    """A topic amqtt does not see as starting with `$`: it closes the connection of any client that
    publishes to one, and the AWS shadow topics are `$aws/things/…`. (Mosquitto and AWS IoT accept them.)"""

    def startswith(self, prefix, *args):
        return False if prefix == "$" else str.startswith(self, prefix, *args)


def _embedded_broker_class():
    from amqtt.broker import Broker

    class AwsTopicsBroker(Broker):
        async def _handle_message_delivery(self, client_session, handler, wait_deliver):
            msg = wait_deliver.result()
            topic = getattr(msg, "topic", None)
            if isinstance(topic, str) and topic.startswith("$aws/"):
                msg.topic = _DollarTopic(topic)
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    return AwsTopicsBroker


class EmbeddedBroker:
    """amqtt's broker in a thread, for machines without mosquitto."""

    kind = "amqtt"

    def __init__(self, port: int | None = None):
        self.port = port or pick_port()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        Broker = _embedded_broker_class()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            try:
                self.broker = Broker(config, loop=self.loop)
                self.loop.run_until_complete(self.broker.start())
            except BaseException as e:  # reported to the caller of start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="amqtt broker", daemon=True)
        self.thread.start()
        ready.wait(20)
        if errors:
            raise RuntimeError(f"the embedded MQTT broker did not start: {errors[0]}")
        wait_listening(self.port)
        return self

    def close(self) -> None:
        if self.loop and self.broker:
            asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    stop = close

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def start_broker(
    port: int | None = None, embedded: bool = False, users: dict | None = None
) -> Mosquitto | EmbeddedBroker:
    """mosquitto when installed (unless `embedded`), else the embedded broker; started, on 127.0.0.1.
    `users` ({user: password}, CLOUD_USER among them): mosquitto lets only them in, each device on its own
    topics (DEVICE_ACL); the embedded broker cannot, and lets anyone in."""
    if not embedded and (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")):
        return Mosquitto(port, users=users, acl=bool(users)).start()
    return EmbeddedBroker(port).start()
