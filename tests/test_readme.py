"""The README cannot drift from the tool (issue 27): its shell blocks are read from README.md itself.

Every `.venv/bin/ccm …` line parses as written against the CLI (commands, options, arguments); a file
it names may be missing only because an earlier step makes it. The bundles block then runs as written,
in order, in a scratch folder, against the virtual product (a virtual STM32 running the lamp v1 wired
to a virtual CCM): placeholders are filled from what the product says, as a reader fills them from
what earlier commands printed; the lines that start servers of their own (`ccm cloud`, the shadow call
that needs it) are left to the tests of those (test_cloud_cli.py)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bundle.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def sh_blocks() -> list[list[str]]:
    """The README's ```sh blocks, each a list of commands (continued lines joined, comments cut)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        lines = []
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
            if line and not line.startswith("#"):  # a comment line says where to run what follows
                lines.append(line)
        out.append(lines)
    return out


def ccm_lines() -> list[str]:
    return [line for block in sh_blocks() for line in block if line.startswith(".venv/bin/ccm ")]


def parse(args: list[str]) -> None:
    """Resolve the command chain and parse its options and arguments as click would, without running it."""
    ctx = main.make_context("ccm", list(args))
    cmd: click.Command = main
    rest = ctx._protected_args + ctx.args  # noqa: SLF001 - what is left for the subcommand
    while isinstance(cmd, click.Group) and rest:
        name, sub, rest = cmd.resolve_command(ctx, rest)
        ctx = sub.make_context(name, list(rest), parent=ctx)
        cmd = sub
        rest = ctx._protected_args + ctx.args if isinstance(sub, click.Group) else []  # noqa: SLF001


def test_the_readme_has_the_commands_this_test_reads():
    lines = ccm_lines()
    assert len(lines) >= 30 and any("create-fw-bundle" in line for line in lines)


@pytest.mark.parametrize("line", ccm_lines())
def test_every_ccm_command_in_the_readme_parses_as_written(line):
    try:
        parse(shlex.split(line)[1:])
    except click.BadParameter as e:  # a file an earlier step makes (or the reader brings): named, not wrong
        assert "does not exist" in e.format_message(), e.format_message()


def test_the_readme_bundles_block_runs_as_written_against_the_virtual_product(tmp_path):
    """keys new -> cp the host firmware -> create-fw-bundle (signed) -> ccm ota over WebSocket (the host
    flashed: it runs 2.0) -> bundle info -> bundle verify with the public key -> build --bundle."""
    from sim.product import LampProduct

    block = next(b for b in sh_blocks() if any("keys new" in line for line in b))
    product = LampProduct("ccm-readme", fs_dir=str(tmp_path / "ccm-fs")).start()
    try:
        assert product.ccm.host_call("Sys.Info")["fw_version"] == "1.0"
        url = product.ccm.rpc_url()  # ws://admin:PASSWORD@127.0.0.1:PORT/rpc
        env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
        (tmp_path / "examples").symlink_to(ROOT / "examples")
        ran = []
        for line in block:
            if " cloud " in f"{line} " or "mqtt://" in line:
                continue  # a server of its own, and what needs it: tests/test_cloud_cli.py
            line = line.replace("ws://admin:PASSWORD@IP_ADDRESS_OF_THE_CCM/rpc", url)
            args = shlex.split(line)
            if args[0] == ".venv/bin/ccm":
                args = [sys.executable, "-m", "bundle.cli", *args[1:]]
            elif args[0] == "cp":
                shutil.copyfile(tmp_path / args[1], tmp_path / args[2])
                ran.append(line)
                continue
            out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
            assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
            ran.append(line)
        assert len(ran) >= 6, ran
        assert product.ccm.host_call("Sys.Info")["fw_version"] == "2.0"  # the OTA line flashed the host
        assert (tmp_path / "ccm-fw.zip").exists() and (tmp_path / "ccm-signing.pub.pem").exists()
    finally:
        product.stop()
