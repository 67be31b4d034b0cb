"""What the `ccm` command's groups share: the top-level group (`main`) with its connection options, the
connection to a CCM, the mapping of the errors a user can act on to one `Error:` line (`user_errors`),
progress bars, the wire trace, and the parsing of k=v arguments."""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading

import click

from ccm.rpc import RpcError, _find_open, _scan_close

EPILOG = """\b
Examples:
  ccm demo                                   the virtual product, end to end, no hardware
  ccm sim ccm                                a virtual CCM on a pty; prints its port
  ccm --port /dev/pts/5 call Sys.GetInfo     call a CCM method as the host would
  ccm --port /dev/ttyUSB0 call Config.Get '{"key":"device"}'
  ccm --port /dev/ttyUSB0 wifi HomeNet secret123   provision WiFi, like mos wifi
  ccm provision ble://ccm-a1b2c3 --ssid HomeNet --pass secret123   over BLE, as a phone app would
  ccm --port http://192.168.4.1/rpc config-get wifi
  ccm --port ws://10.0.0.7/rpc --password PASSWORD config-set mqtt.server=broker:1883
  ccm cloud                                  broker + AWS-style shadow service on this PC
  ccm --port mqtt://127.0.0.1:1883/ccm-000000 call Sum '[2,3]'
  ccm --port mqtt://127.0.0.1:1883/ccm-000000 shadow desired on=true
  ccm --port /dev/ttyUSB0 stm32 flash host.bin     flash an STM32 host from this PC
  ccm sim stm32                              a virtual STM32 that stm32flash accepts
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--port",
    envvar="CCM_PORT",
    metavar="PORT",
    help="Serial port or pyserial URL of the CCM's host UART (env CCM_PORT).",
)
@click.option("--baud", default=115200, show_default=True, help="UART speed (host.rpc.uart.baud_rate).")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--user", default="admin", show_default=True, help="User for HTTP Digest auth (rpc.auth.user).")
@click.option(
    "--password", envvar="CCM_PASSWORD", help="Password for HTTP Digest auth (rpc.auth.password; env CCM_PASSWORD)."
)
@click.option(
    "--hci",
    envvar="CCM_BLE_HCI",
    metavar="TRANSPORT",
    help="The Bluetooth controller for ble:// ports (Bumble's transports): usb:0 (default), serial:/dev/ttyACM0, "
    "or tcp-client:127.0.0.1:PORT, the virtual module's air that `ccm sim ccm --ble` prints (env CCM_BLE_HCI).",
)
@click.pass_context
def main(
    ctx: click.Context, port: str | None, baud: int, timeout: float, user: str, password: str | None, hci: str | None
) -> None:
    """ccm-bridge: turn an ESP32 into a Cloud Communication Module, and develop without hardware.

    PORT can be a serial port (the host UART), http://IP/rpc or ws://IP/rpc (the module's network
    endpoint), mqtt://HOST:PORT/DEVICE_ID (through the cloud), or ble://DEVICE_ID (its RPC-over-GATT
    service, mos's: through the Bluetooth controller --hci names).
    """
    ctx.obj = {"port": port, "baud": baud, "timeout": timeout, "user": user, "password": password, "hci": hci}


def user_message(e: Exception) -> str | None:
    """What to tell a user about an error they can act on (a port that does not open, a bad bundle or
    part spec, a build that cannot be made, a CCM that answers with an error), or None: a bug, let it show."""
    from bundle.transport import PortError
    from ccm.ota.bundle import BundleError
    from pc.fwbundle import SpecError
    from pc.fwimage import BuildError

    if isinstance(e, RpcError):
        return f"{e.message} (code {e.code})"
    if isinstance(e, (PortError, BundleError, SpecError, BuildError, TimeoutError)):
        return str(e)
    return None


def user_errors(hint: str = ""):
    """Decorate a command (or a helper of one): the errors a user can act on end in one `Error:` line —
    `user_message(e)`, then `hint` for a time-out — never in a traceback."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except click.ClickException:
                raise
            except Exception as e:
                why = user_message(e)
                if why is None:
                    raise
                if isinstance(e, TimeoutError) and hint:
                    why = f"{why}. {hint}"
                raise click.ClickException(why) from None

        return run

    return wrap


@user_errors()
def open_rpc_link(ctx: click.Context):
    from bundle.transport import open_rpc

    port = ctx.obj["port"]
    if not port:
        raise click.UsageError(
            "no port: give --port PORT (a serial port such as /dev/ttyUSB0, the path `ccm sim ccm` prints, "
            "or mqtt://HOST:PORT/DEVICE_ID)"
        )
    return open_rpc(port, ctx.obj["baud"], ctx.obj["password"], ctx.obj["user"], ctx.obj.get("hci"))


@user_errors("Is the CCM powered, and is PORT the right one?")
def run_call(ctx: click.Context, method: str, params=None):
    """Call and return the result; every failure becomes a message that says what to do."""
    link = open_rpc_link(ctx)
    try:
        return link.call(method, params, timeout=ctx.obj["timeout"])
    except RpcError as e:
        if isinstance(e, TimeoutError):
            raise
        raise click.ClickException(f"{method} failed: {e.message} (code {e.code})") from None
    finally:
        link.close()


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def parse_int(text: str) -> int:
    return int(text, 0)


class ProgressBar:
    """A click progress bar fed by the flasher's progress(stage, done, total) callback."""

    def __init__(self):
        self.bar = None
        self.stage = None
        self.last = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "retry":
            click.echo(f"\n  retrying ({done}/{total})", err=True)
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            label = {"erase": "Erasing ", "write": "Writing ", "verify": "Verified", "read": "Reading "}.get(
                stage, stage
            )
            self.bar = click.progressbar(length=total, label=label, show_pos=True, width=36, file=sys.stderr)
            self.bar.__enter__()
            self.last = 0
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def split_closed(data):
    """(values, rest): the top-level JSON values in `data` that have closed (each with the bytes before
    it), and what is left — how a frame without a newline ends, by the CCM framer's own scanner."""
    values = []
    i = 0
    while True:
        j = _find_open(data, i, len(data))
        k = _scan_close(data, j, len(data), 0, False, False)[0] if j >= 0 else -1
        if k < 0:
            return values, data[i:]
        values.append(data[i:k])
        i = k


class WireTrace:
    """Prints UART traffic a frame per line, the way the manual shows it."""

    def __init__(self, out=None):
        self.out = out or (lambda s: click.echo(s))
        self.partial = {"rx": b"", "tx": b""}
        self.paused = False  # while the UART carries the STM32 bootloader's binary protocol

    def __call__(self, direction: str, data: bytes) -> None:
        if self.paused:
            self.partial[direction] = b""
            return
        buf = self.partial[direction] + data
        *lines, rest = buf.split(b"\n")
        frames = []
        for line in lines:  # frames glued on one line show one per line
            closed, tail = split_closed(line)
            frames += closed + [tail]
        closed, rest = split_closed(rest)  # frames a host sends without a newline show at once
        frames += closed
        if len(rest) > 65536:  # a line that never ends is still shown, in pieces
            frames.append(rest)
            rest = b""
        self.partial[direction] = rest
        arrow = "CCM -> Host" if direction == "tx" else "Host -> CCM"
        for frame in frames:
            if frame.strip():
                self.out(f"  {frame.strip().decode(errors='replace'):<72} // {arrow}")


_terminated = threading.Event()


def stop_on_sigterm() -> None:
    """SIGTERM (kill, a service manager, a test harness) ends a long-running command as Ctrl-C does,
    whenever it comes: during start-up it is remembered, wait_for_ctrl_c() then returns at once, and what
    was started is stopped (its temporary directories go with it)."""
    signal.signal(signal.SIGTERM, lambda *a: _terminated.set())


def wait_for_ctrl_c() -> None:
    stop_on_sigterm()
    try:
        while not _terminated.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def parse_value(text: str):
    """k=v values: JSON when they parse (true, 42, [1,2], {"a":1}), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_dotted(pairs: tuple[str, ...]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value, e.g. on=true or color.r=255")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        # a version is text: 2.0 is "2.0", and 2.10 must not become 2.1 (desired.ota.version, fw_version)
        node[leaf] = val if leaf.endswith("version") and val != "null" else parse_value(val)
    return out
