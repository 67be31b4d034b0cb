"""`ccm cloud` and `ccm shadow`: the local cloud."""

from __future__ import annotations

import click

from bundle.cli import _dotted, _print_json, _wait_for_ctrl_c, main


@main.command("cloud")
@click.option("--broker", metavar="mqtt://HOST:PORT", help="Use this broker; without it one is started on 127.0.0.1.")
@click.option("--port", "broker_port", type=int, default=0, help="Port for the broker started here (0: any free one).")
@click.option("--db", default="ccm-shadows.sqlite", show_default=True, help="SQLite file the shadows persist in.")
@click.option("--embedded", is_flag=True, help="Start the embedded amqtt broker even when mosquitto is installed.")
@click.option(
    "--serve-dir",
    type=click.Path(file_okay=False, exists=True),
    help="Serve the bundles in this directory over HTTP (NAME.zip, and NAME.json / latest.json for ota.poll_url).",
)
@click.option("--http-port", type=int, default=0, help="Port for --serve-dir (0: any free one).")
def cloud_cmd(
    broker: str | None, broker_port: int, db: str, embedded: bool, serve_dir: str | None, http_port: int
) -> None:
    """A local cloud for private brokers: an AWS IoT compatible shadow service, until Ctrl-C.

    Without --broker it starts mosquitto (when installed) or an embedded broker. With --serve-dir it
    also serves firmware bundles for the CCMs' pulls (OTA.Update, desired.ota, ota.poll_url).

    \b
    Example:  ccm cloud --serve-dir ./bundles
              ccm --port mqtt://127.0.0.1:PORT/ccm-000000 shadow desired ota.url=http://127.0.0.1:HTTP/fw.zip ota.version=2.0
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
    bundles = None
    if serve_dir:
        from cloud.bundle_server import BundleServer

        bundles = BundleServer(serve_dir, port=http_port).start()
        click.echo(
            f"bundles in {serve_dir} served on {bundles.url}/NAME.zip (poll documents: {bundles.url}/latest.json)"
        )
    click.echo(f"  virtual CCM on it:  ccm sim ccm --mqtt {broker.removeprefix('mqtt://')}")
    click.echo(f"  set a shadow:       ccm --port {broker}/ccm-000000 shadow desired on=true")
    click.echo("Ctrl-C stops it.")
    _wait_for_ctrl_c()
    service.stop()
    if bundles:
        bundles.stop()
    if started:
        started.close()


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
