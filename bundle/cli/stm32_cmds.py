"""`ccm stm32`: flash an STM32 through its ROM bootloader from this PC."""

from __future__ import annotations

import errno
import termios

import click
import serial

from bundle.cli.common import ProgressBar, main, parse_int


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


_NO_LINES = (
    "{port} has no RTS/DTR lines to drive BOOT0/NRST: add --lines none and put the chip in its bootloader "
    "by hand (BOOT0 high, reset)"
)


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
    except termios.error:
        raise click.ClickException(f"{port} cannot carry parity (a pty or a simple adapter): add --mode 8n1") from None
    except (serial.SerialException, OSError) as e:
        if isinstance(e, OSError) and e.errno == errno.ENOTTY or "Inappropriate ioctl" in str(e):
            raise click.ClickException(_NO_LINES.format(port=port)) from None
        raise click.ClickException(f"cannot open {port}: {e}") from None


def _stm32run_call(coro_fn, port):
    from bundle import stm32_tool
    from ccm.ota import an3155
    from ccm.ota.stm32 import FlashError

    try:
        return stm32_tool.run(coro_fn())
    except OSError as e:
        if e.errno == errno.ENOTTY:
            raise click.ClickException(_NO_LINES.format(port=getattr(port, "serial", port).port)) from None
        raise click.ClickException(f"the port failed: {e}") from None
    except (an3155.BootloaderError, FlashError, KeyError) as e:
        raise click.ClickException(
            f"{e}. Check the wiring (TX/RX crossed, GND), BOOT0/NRST, and --baud/--mode."
        ) from None
    finally:
        port.close()


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

    info = _stm32run_call(go, port)
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
    "--address", type=parse_int, default="0x08000000", show_default=True, metavar="ADDR", help="Where the image goes."
)
@stm32_options
@click.pass_context
def stm32_flash(ctx: click.Context, file: str, address: int, **kw) -> None:
    """Erase the pages FILE covers, write it, verify it, and start it."""
    from bundle import stm32_tool

    image = open(file, "rb").read()
    port, pins = _stm32_port(ctx, kw)
    bar = ProgressBar()
    try:
        summary = _stm32run_call(lambda: stm32_tool.flash(port, pins, image, address, bar), port)
    finally:
        bar.close()
    click.echo(
        f"{summary['chip']}: {len(image)} bytes at 0x{address:08X}, {summary['pages_erased']} pages erased, "
        f"{summary['blocks_written']} blocks written ({summary['blocks_skipped']} blank skipped), verified by {summary['verified_by']}"
    )


@stm32.command("read")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option("--address", type=parse_int, default="0x08000000", show_default=True, metavar="ADDR")
@click.option("--size", type=parse_int, required=True, metavar="N", help="Bytes to read (0x… accepted).")
@stm32_options
@click.pass_context
def stm32_read(ctx: click.Context, file: str, address: int, size: int, **kw) -> None:
    """Read SIZE bytes of the chip's memory into FILE."""
    from bundle import stm32_tool

    port, pins = _stm32_port(ctx, kw)
    bar = ProgressBar()
    try:
        data = _stm32run_call(lambda: stm32_tool.read(port, pins, address, size, bar), port)
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
    info, count = _stm32run_call(lambda: stm32_tool.erase(port, pins, page_list), port)
    click.echo(f"erased {count} pages of 0x{info.pid:03X}")
