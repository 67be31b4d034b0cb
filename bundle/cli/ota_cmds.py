"""`ccm create-fw-bundle`, `ccm bundle info|verify`, `ccm ota`: the manual's §4–§5 with `ccm` for `mos`."""

from __future__ import annotations

import sys
import time

import click

from bundle.cli.common import main, open_rpc_link, user_errors

STAGES = {
    "upload": "Uploading",
    "verifying": "Verifying",
    "unpacking": "Unpacking",
    "erase": "Erasing host",
    "write": "Flashing host",
    "verify": "Verified",
    "retry": "Retrying",
    "applying": "Applying",
    "writing app": "Writing app",
}


class StageBar:
    """One line per stage on stderr: a bar, the percentage, and for the upload the rate and ETA."""

    def __init__(self, out=None, width: int = 30):
        self.out = out or sys.stderr
        self.width = width
        self.stage = None
        self.t0 = 0.0
        self.shown = 0.0
        self.tty = self.out.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            if self.stage is not None and self.tty:
                self.out.write("\n")
            self.stage = stage
            self.t0 = now
            self.shown = 0.0
        if now - self.shown < 0.1 and done < total:
            return
        self.shown = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        line = f"  {STAGES.get(stage, stage):<14} [{bar:<{self.width}}] {frac * 100:5.1f}%"
        dt = now - self.t0
        if stage == "upload" and dt > 0.2:
            rate = done / dt
            line += f"  {rate / 1024:8.1f} KiB/s  ETA {(total - done) / rate:4.0f} s"
        self.out.write(("\r" if self.tty else "") + line + ("" if self.tty else "\n"))
        self.out.flush()

    def close(self) -> None:
        if self.stage is not None and self.tty:
            self.out.write("\n")
        self.stage = None


@main.command("create-fw-bundle", context_settings={"ignore_unknown_options": False})
@click.option("-o", "--output", required=True, metavar="FILE.zip", help="The bundle to write.")
@click.option("--name", default="fw", show_default=True, help="The bundle's name (manifest `name`).")
@click.option(
    "--platform",
    required=True,
    help="ccm_host: firmware for the host MCU (STM32 parts); esp32: the CCM's own firmware (fs or app parts).",
)
@click.option("--version", "version", help="Manifest `version` (default: the build time, YYYYmmddHHMMSS).")
@click.option("--build-id", help="Manifest `build_id` (default: time/user@host).")
@click.option("--description", help="Manifest `description`.")
@click.option("--compress", is_flag=True, help="Deflate the parts (4 KiB window: the CCM inflates them in little RAM).")
@click.option(
    "--sign-key",
    "sign_keys",
    multiple=True,
    metavar="KEY.pem",
    help="Sign the manifest with this ECDSA P-256 private key (repeatable: sig0, sig1, …).",
)
@click.option("--src-dir", type=click.Path(file_okay=False), help="Where relative src= paths are.")
@click.argument("parts", nargs=-1, required=True, metavar="NAME:type=T,src=FILE,addr=A...")
@user_errors()
def create_fw_bundle(output, name, platform, version, build_id, description, compress, sign_keys, src_dir, parts):
    """Make a firmware bundle the CCM understands (the manual's §4, mos-compatible).

    Each part is NAME:k=v,k=v — src (a .bin, or an Intel .hex split into parts at its gaps), type, addr
    (0x… accepted); other k=v are kept in the manifest.

    \b
    Example:  ccm create-fw-bundle -o fw.zip --name fw --platform ccm_host \\
                  host_fw:type=STM32,src=FIRMWARE.BIN,addr=0x8000000
              ccm create-fw-bundle -o fw.zip --platform ccm_host --version 2.0 --sign-key ota.pem \\
                  host_fw:type=STM32,src=build/lamp.hex
    """
    from pc import fwbundle

    if platform not in fwbundle.PLATFORMS:
        raise click.BadParameter(
            f"{platform!r}: the CCM takes {' or '.join(fwbundle.PLATFORMS)}", param_hint="--platform"
        )
    m = fwbundle.create(
        output, name, platform, list(parts), version, build_id, description, compress, sign_keys, src_dir
    )
    size = sum(p["size"] for p in m["parts"].values())
    signed = f", signed ({len(sign_keys)} key{'s' if len(sign_keys) > 1 else ''})" if sign_keys else ""
    click.echo(f"{output}: {m['platform']} {m['name']} {m['version']}, {len(m['parts'])} part(s), {size} bytes{signed}")


@main.group("bundle")
def bundle_group() -> None:
    """Look inside a firmware bundle, or check it before sending it."""


def _inspect(path: str, pubkey: str | None, check: bool):
    from ccm.ota.bundle import BundleError
    from pc import fwbundle

    try:
        return fwbundle.inspect(path, pubkey, check)
    except BundleError as e:
        raise click.ClickException(f"{path}: {e}") from None


@bundle_group.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def bundle_info(file: str) -> None:
    """Print a bundle's manifest: platform, version, parts, signatures.

    \b
    Example:  ccm bundle info fw.zip
    """
    i = _inspect(file, None, False)
    m = i.manifest
    click.echo(f"{file}: {i.size} bytes, {i.signatures} signature(s)")
    for k in ("name", "platform", "version", "build_id", "build_timestamp", "description"):
        if k in m:
            click.echo(f"  {k:<16}{m[k]}")
    click.echo("  parts:")
    for name, p in m["parts"].items():
        addr = f"0x{p['addr']:08X}" if isinstance(p.get("addr"), int) else "-"
        sha = str(p.get("cs_sha256", ""))[:16]
        click.echo(
            f"    {name:<14} {str(p.get('type', '-')):<8} {addr:<11} {p.get('size', '?'):>9} B  sha256 {sha}…  {p.get('src')}"
        )


@bundle_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--pubkey", type=click.Path(exists=True, dir_okay=False), help="PEM public key: the signature must verify."
)
def bundle_verify(file: str, pubkey: str | None) -> None:
    """Check a bundle as the CCM will: manifest first, every part's size and SHA-256, the signature.

    \b
    Example:  ccm bundle verify fw.zip --pubkey ota-pub.pem
    """
    i = _inspect(file, pubkey, True)
    signed = " and its signature verifies" if pubkey else ""
    click.echo(f"{file}: OK — {len(i.manifest['parts'])} part(s) match their SHA-256{signed}")


@main.command("ota")
@click.argument("file", type=click.Path(exists=True, dir_okay=False), metavar="FIRMWARE.ZIP")
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Bytes per OTA.Write (default: 512 on a serial port, as mos; 2048 over the network). A module "
    "short of heap asks for less (OTA.Status chunk) and gets it.",
)
@click.option(
    "--commit-timeout",
    type=int,
    default=0,
    show_default=True,
    help="Seconds: a CCM self-update must get OTA.Commit within this time, or it rolls back (0: no commit needed).",
)
@click.option(
    "--no-wait", is_flag=True, help="Return once the bundle is uploaded and checked; do not follow the apply."
)
@click.pass_context
def ota_cmd(ctx: click.Context, file: str, chunk_size: int | None, commit_timeout: int, no_wait: bool) -> None:
    """Send a firmware bundle to the CCM and follow the update (the manual's §5).

    A ccm_host bundle re-flashes the host MCU through its bootloader; an esp32 bundle updates the CCM
    itself. Works over every PORT: the host UART, http://IP/rpc, ws://IP/rpc, mqtt://HOST:PORT/DEVICE.

    \b
    Example:  ccm --port ws://192.168.1.40/rpc ota fw.zip
              ccm --port mqtt://127.0.0.1:1883/ccm-000000 ota fw.zip
    """
    from bundle.ota_client import OtaFailed, push

    port = ctx.obj["port"] or ""
    if chunk_size is None:
        chunk_size = 2048 if "://" in port else 512
    data = open(file, "rb").read()
    link = open_rpc_link(ctx)
    bar = StageBar()
    t0 = time.monotonic()
    try:
        st = push(
            link, data, chunk_size, commit_timeout, call_timeout=ctx.obj["timeout"], progress=bar, wait=not no_wait
        )
    except (OtaFailed, TimeoutError) as e:
        hint = f". Is the CCM still reachable at {port}?" if isinstance(e, TimeoutError) else ""
        raise click.ClickException(f"OTA failed: {e}{hint}") from None
    finally:
        bar.close()
        link.close()
    bar.close()
    dt = time.monotonic() - t0
    click.echo(f"{file}: {st.get('message') or 'uploaded'} ({len(data)} bytes, {dt:.1f} s)")


@main.group("keys")
def keys_group() -> None:
    """Signing keys for updates (ECDSA P-256): modules built with one apply only bundles it signed."""


@keys_group.command("new")
@click.option("-o", "--output", default="ccm-signing.pem", show_default=True, help="The private key to write.")
@user_errors()
def keys_new(output: str) -> None:
    """Make a key pair: OUTPUT (private, yours only) and OUTPUT.pub.pem (public, what modules trust).

    \b
    Then:  ccm build --sign-key ccm-signing.pem ...      (the module trusts it: signatures required)
           ccm create-fw-bundle --sign-key ccm-signing.pem ...   (a bundle those modules take)
    """
    from pc import fwbundle

    pub = fwbundle.new_signing_key(output)
    click.echo(f"{output}: the private key (mode 600). Keep it secret and keep a copy: without it, modules that")
    click.echo("trust it take no update. Sign with: ccm create-fw-bundle --sign-key " + output)
    click.echo(f"{pub}: the public key (ccm build puts it in each module; ccm bundle verify --pubkey {pub})")
