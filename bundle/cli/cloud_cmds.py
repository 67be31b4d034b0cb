"""`ccm cloud` and `ccm shadow`: the local cloud."""

from __future__ import annotations

import os

import click

from bundle.cli.common import main, parse_dotted, print_json, stop_on_sigterm, user_errors, wait_for_ctrl_c
from cloud.users import DEFAULT_DEVICE, CloudState

STATE_OPTION = click.option(
    "--state",
    "state_dir",
    default="ccm-cloud",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the broker's users are kept: each device's MQTT password (ccm cloud add-device) and the cloud's.",
)


@main.group("cloud", invoke_without_command=True)
@click.option("--broker", metavar="mqtt://HOST:PORT", help="Use this broker; without it one is started on 127.0.0.1.")
@click.option("--port", "broker_port", type=int, default=0, help="Port for the broker started here (0: any free one).")
@click.option("--db", default="ccm-shadows.sqlite", show_default=True, help="SQLite file the shadows persist in.")
@click.option("--embedded", is_flag=True, help="Start the embedded amqtt broker even when mosquitto is installed.")
@click.option(
    "--serve-dir",
    type=click.Path(file_okay=False),
    help="Serve the bundles in this directory over HTTP (NAME.zip, and NAME.json / latest.json for ota.poll_url); "
    "made when missing.",
)
@click.option("--http-port", type=int, default=0, help="Port for --serve-dir (0: any free one).")
@click.option(
    "--http",
    "http_addr",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the dashboard and REST API listen (PORT 0: any free one). 'none' turns them off.",
)
@click.option(
    "--token",
    envvar="CCM_CLOUD_TOKEN",
    help="The dashboard's and API's token (env CCM_CLOUD_TOKEN); without it one is made up and printed.",
)
@click.option(
    "--bundles",
    "bundles_dir",
    type=click.Path(file_okay=False),
    help="Where bundles uploaded to the dashboard are kept (default: --serve-dir, else ./ccm-bundles).",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="The dashboard's address as devices reach it, for the bundle URLs they are sent "
    "(default: the address the browser used).",
)
@STATE_OPTION
@click.pass_context
def cloud_cmd(
    ctx: click.Context,
    broker: str | None,
    broker_port: int,
    db: str,
    embedded: bool,
    serve_dir: str | None,
    http_port: int,
    http_addr: str,
    token: str | None,
    bundles_dir: str | None,
    public_url: str | None,
    state_dir: str,
) -> None:
    """A local cloud for private brokers: shadow service, dashboard and REST API, until Ctrl-C.

    Without --broker it starts mosquitto (when installed) or an embedded broker. mosquitto lets in only
    the devices `ccm cloud add-device` made (each on its own topics: its shadow, ID/…) and the cloud's own
    clients; the embedded broker lets anyone in. Beside it run an AWS
    IoT compatible shadow service and, on --http, the dashboard (devices online/offline, shadows, an
    RPC console, config, firmware updates with progress) and its REST API (OpenAPI at /api/docs),
    both behind a token. With --serve-dir it also serves bundles for the CCMs' own pulls (ota.poll_url).

    \b
    Example:  ccm cloud                      # then open the dashboard link it prints
              ccm cloud add-device lamp-0042  # its MQTT user and password, for ccm build / ccm sim ccm
              ccm sim ccm --mqtt mqtt://ccm-000000:PASSWORD@127.0.0.1:PORT
              curl -H "Authorization: Bearer TOKEN" http://127.0.0.1:8080/api/devices
    """
    if ctx.invoked_subcommand is not None:
        return
    stop_on_sigterm()  # a SIGTERM while it starts still stops mosquitto and the rest
    from cloud.api import Dashboard
    from cloud.broker import start_broker
    from cloud.shadow_service import ShadowService

    web = None
    if http_addr != "none":
        host, _, port_s = http_addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port_s.isdigit() or int(port_s) > 65535:
            raise click.UsageError(f"--http {http_addr}: expected HOST:PORT with PORT 0-65535, e.g. 127.0.0.1:8080")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise click.UsageError(f"--public-url {public_url}: expected http://HOST:PORT or https://…")
        if token is not None and len(token) < 8:
            raise click.UsageError("--token: at least 8 characters")
        bundles_dir = bundles_dir or serve_dir or "ccm-bundles"
        try:
            os.makedirs(bundles_dir, exist_ok=True)
        except OSError as e:
            raise click.UsageError(f"--bundles {bundles_dir}: cannot create it ({e.strerror})") from None
        web = (host, int(port_s))
    started = None
    device_url = None  # how the virtual CCM reaches the broker, as ccm-000000
    if not broker:
        from cloud.broker import CLOUD_USER

        state = CloudState(state_dir)
        users = {CLOUD_USER: state.cloud_password(), **state.devices()}
        started = start_broker(broker_port or None, embedded=embedded, users=users)
        state.running(started)
        base = started.url.removeprefix("mqtt://")
        if started.kind == "mosquitto":
            broker = f"mqtt://{CLOUD_USER}:{users[CLOUD_USER]}@{base}"
            device_url = f"mqtt://{DEFAULT_DEVICE}:{users[DEFAULT_DEVICE]}@{base}"
            click.echo(f"MQTT broker ({started.kind}) on {started.url}: devices by their own user ({state_dir}/)")
            click.echo(f"  the cloud's own clients: user {CLOUD_USER}, password {users[CLOUD_USER]}")
        else:
            added = sorted(set(users) - {CLOUD_USER, DEFAULT_DEVICE})
            if added:  # devices that were given credentials must not meet a broker that ignores them
                started.close()
                raise click.ClickException(
                    f"{len(added)} device(s) have their own MQTT user in {state_dir}/ ({', '.join(added[:3])}…), but "
                    "the embedded broker cannot hold them to their own topics: install mosquitto "
                    "(apt-get install mosquitto), or give another --state"
                )
            broker = device_url = started.url
            click.echo(f"MQTT broker ({started.kind}) on {broker}")
            click.echo(
                "  WARNING: the embedded broker lets any client in and publish anywhere (no per-device users): "
                "install mosquitto for that",
                err=True,
            )
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

        os.makedirs(serve_dir, exist_ok=True)  # the README's `--serve-dir ./bundles` needs no mkdir first
        bundles = BundleServer(serve_dir, port=http_port).start()
        click.echo(
            f"bundles in {serve_dir} served on {bundles.url}/NAME.zip (poll documents: {bundles.url}/latest.json)"
        )
    dashboard = None
    if web:
        try:
            dashboard = Dashboard(broker, service, bundles_dir, web[0], web[1], token, public_url).start()
        except OSError as e:
            service.stop()
            if bundles:
                bundles.stop()
            if started:
                started.close()
            raise click.ClickException(f"dashboard: {e} (pick another with --http HOST:PORT)") from None
        click.echo(f"dashboard on {dashboard.url}; bundles uploaded there are kept in {dashboard.store.directory}")
        click.echo(f"  open:      {dashboard.login_url}")
        click.echo(f"  REST API:  {dashboard.url}/api/docs  (Authorization: Bearer {dashboard.token})")
    click.echo(f"  virtual CCM on it:  ccm sim ccm --mqtt {device_url or broker}   (--host lamp: with an STM32 host)")
    click.echo(f"  set a shadow:       ccm --port {broker}/{DEFAULT_DEVICE} shadow desired on=true")
    click.echo("Ctrl-C stops it.")
    wait_for_ctrl_c()
    if dashboard:
        dashboard.stop()
    service.stop()
    if bundles:
        bundles.stop()
    if started:
        started.close()
        CloudState(state_dir).running(None)


@cloud_cmd.command("add-device")
@click.argument("device_id")
@STATE_OPTION
@user_errors()
def add_device(device_id: str, state_dir: str) -> None:
    """Let a device on `ccm cloud`'s broker: its MQTT user (its id) and password, on its own topics only.

    \b
    Then:  ccm build --config device.id=ID --config mqtt.user=ID --config mqtt.pass=PASSWORD ...
           ccm sim ccm --device-id ID --mqtt mqtt://ID:PASSWORD@HOST:PORT
    A running `ccm cloud` (same --state) lets it in at once.
    """
    try:
        password, live = CloudState(state_dir).add(device_id)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    where = live.removeprefix("mqtt://") if live else "HOST:PORT"
    click.echo(f"device {device_id}: MQTT user {device_id}, password {password}")
    click.echo(
        f"  ccm build --config device.id={device_id} --config mqtt.user={device_id} --config mqtt.pass={password}"
    )
    click.echo(f"  ccm sim ccm --device-id {device_id} --mqtt mqtt://{device_id}:{password}@{where}")
    if not live:
        click.echo(f"  (no ccm cloud running with --state {state_dir}: it lets the device in when it starts)")


@main.group()
@click.pass_context
def shadow(ctx: click.Context) -> None:
    """Read or change a device's shadow in the cloud (needs --port mqtt://HOST:PORT/DEVICE_ID)."""
    port = ctx.obj["port"] or ""
    if not port.startswith("mqtt://"):
        raise click.UsageError("shadow commands go through the cloud: --port mqtt://HOST:PORT/DEVICE_ID")


@user_errors()
def _shadow_call(ctx: click.Context, fn) -> None:
    from bundle.transport import MqttRpc
    from cloud.client import ShadowError

    link = MqttRpc(ctx.obj["port"])
    try:
        print_json(fn(link.cloud, link.device))
    except ShadowError as e:
        raise click.ClickException(f"shadow of {link.device}: {e.message} ({e.code})") from None
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
    state = parse_dotted(pairs)
    _shadow_call(ctx, lambda cloud, device: cloud.shadow_update(device, {"desired": state}, timeout=ctx.obj["timeout"]))
