"""`ccm check`: a module (or the virtual product) through the acceptance CI runs, one row a check."""

from __future__ import annotations

import sys

import click

from bundle.cli.common import main, open_rpc_link, parse_int

MARK = {"PASS": click.style("PASS", fg="green"), "FAIL": click.style("FAIL", fg="red"), "SKIP": "skip"}


@main.command("check")
@click.option(
    "--broker", metavar="mqtt://HOST:PORT", help="The broker as this PC reaches it (default: the CCM's mqtt.server)."
)
@click.option(
    "--host-image",
    type=click.Path(exists=True, dir_okay=False),
    help="Host firmware to flash over OTA as the last check (needs a port other than the host UART).",
)
@click.option(
    "--host-addr", type=parse_int, default="0x08000000", show_default=True, metavar="ADDR", help="Where it goes."
)
@click.pass_context
def check_cmd(ctx: click.Context, broker: str | None, host_image: str | None, host_addr: int) -> None:
    """Check a CCM end to end and say what to fix: the link (round trip), its config, its heap, the
    cloud connection, a call from the cloud, a shadow round trip, and optionally a host OTA.

    \b
    Examples:
      ccm --port /dev/ttyUSB0 check                         a module on a USB-UART, without its host
      ccm --port /dev/ttyUSB0 check --broker mqtt://192.168.1.10:1883
      ccm --port ws://admin:PASSWORD@192.168.1.50/rpc check --host-image lamp-2.0.bin
    Exits 1 when a check failed; the first FAIL is the one to mend first.
    """
    from bundle.check import FAIL, PASS, SKIP, run_checks

    def show(row) -> None:
        click.echo(f"  {MARK[row.result]}  {row.check:<20} {row.figure}")
        if row.advice and row.result != PASS:
            click.echo(f"        {'-> ' if row.result == FAIL else ''}{row.advice}")

    link = open_rpc_link(ctx)
    click.echo(f"checking the CCM on {ctx.obj['port']}")
    try:
        rows = run_checks(link, ctx.obj["port"], broker, host_image, host_addr, ctx.obj["timeout"], show)
    finally:
        link.close()
    n = {r: sum(row.result == r for row in rows) for r in (PASS, FAIL, SKIP)}
    click.echo(f"checks: {n[PASS]} pass, {n[FAIL]} fail, {n[SKIP]} skipped")
    if n[FAIL]:
        sys.exit(1)
