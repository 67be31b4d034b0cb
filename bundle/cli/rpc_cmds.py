"""Calling a CCM: call, info, config-get, config-set, wifi, provision, reboot."""

from __future__ import annotations

import json

import click

from bundle.cli.common import main, open_rpc_link, parse_value, print_json, run_call, user_errors


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
    print_json(run_call(ctx, method, p))


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
    print_json(run_call(ctx, "Config.Get", {"key": key} if key else None))


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
            current = run_call(ctx, "Config.Get", {"key": key})
        except click.ClickException:
            pass  # unknown key: Config.Set names it below
        node = patch
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = text if isinstance(current, str) else parse_value(text)
    params: dict = {"config": patch}
    if not no_save:
        params["save"] = True
        if not no_reboot:
            params["reboot"] = True
    run_call(ctx, "Config.Set", params)
    click.echo("saved, rebooting" if params.get("reboot") else ("saved" if params.get("save") else "set (not saved)"))


@main.command()
@click.argument("ssid")
@click.argument("password")
@click.pass_context
def wifi(ctx: click.Context, ssid: str, password: str) -> None:
    """Join the CCM to a WiFi network (sets wifi.sta.*, saves, reboots), like `mos wifi`."""
    sta = {"enable": True, "ssid": ssid, "pass": password}
    run_call(ctx, "Config.Set", {"config": {"wifi": {"sta": sta}}, "save": True, "reboot": True})
    click.echo(f"WiFi set to {ssid}; the CCM reboots and joins it")


@main.command()
@click.argument("port")
@click.option("--ssid", required=True, help="The WiFi network to join.")
@click.option("--pass", "password", default="", help="Its password (empty: an open network).")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait until the module says it joined.")
@click.pass_context
@user_errors("Is the module in range and in its provisioning window (unprovisioned, or just booted)?")
def provision(ctx: click.Context, port: str, ssid: str, password: str, wait: float) -> None:
    """Provision a module's WiFi over PORT and wait until it has joined: the manual's three ways —
    ble://DEVICE_ID (as a phone app), http://192.168.4.1/rpc (its access point) or the host's serial
    port.

    \b
    Example:  ccm provision ble://ccm-a1b2c3 --ssid HomeNet --pass secret123
              ccm --hci tcp-client:127.0.0.1:PORT provision ble://ccm-a1b2c3 --ssid HomeNet --pass secret123
    """
    import time

    ctx.obj["port"] = port
    link = open_rpc_link(ctx)
    try:
        sta = {"enable": True, "ssid": ssid, "pass": password}
        link.call("Config.Set", {"config": {"wifi": {"sta": sta}}, "save": True}, timeout=ctx.obj["timeout"])
        click.echo(f"WiFi set to {ssid}; waiting for the module to join it")
        end = time.monotonic() + wait
        st: dict = {}
        while time.monotonic() < end:
            st = link.call("Sys.GetInfo", timeout=ctx.obj["timeout"]).get("wifi") or {}
            if st.get("state") == "connected":
                click.echo(f"joined {ssid}: {st.get('ip')}")
                return
            time.sleep(0.5)
        why = st.get("reason") or "state %s" % st.get("state")
        raise click.ClickException(f"the module did not join {ssid} within {wait:g} s: {why}")
    finally:
        link.close()


@main.command()
@click.pass_context
def reboot(ctx: click.Context) -> None:
    """Reboot the CCM."""
    run_call(ctx, "Sys.Reboot")
    click.echo("rebooting")
