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


class Walker:
    """A reader at a terminal: runs a README block's lines in order in a scratch folder — the servers
    (`ccm sim …`, `ccm cloud`) in the background, as in a second terminal, until they print "Ctrl-C
    stops it." — and puts what they printed in place of the README's capitals, as the reader does. A
    command that talks to a server just started is tried again for a while (the reader would, too)."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.subs: dict[str, str] = {}
        self.servers: list[subprocess.Popen] = []
        self.ran: list[str] = []

    def _argv(self, line: str) -> list[str]:
        for k, v in self.subs.items():
            line = line.replace(k, v)
        args = shlex.split(line)
        if args[0] == ".venv/bin/ccm":
            return [sys.executable, "-m", "bundle.cli", *args[1:]]
        if args[0] == ".venv/bin/python":
            return [sys.executable, *args[1:]]
        return args

    def serve(self, line: str, extra=()) -> str:
        p = subprocess.Popen(
            [*self._argv(line), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env=self.env,
        )
        self.servers.append(p)
        out = []
        while not out or "Ctrl-C stops it." not in out[-1]:
            out.append(p.stdout.readline())
            assert out[-1], f"{line} ended before it was up:\n{''.join(out)}"
        self.ran.append(line)
        return "".join(out)

    def run(self, line: str, tries_s: float = 20) -> str:
        import time

        deadline = time.monotonic() + tries_s
        while True:
            out = subprocess.run(
                self._argv(line), capture_output=True, text=True, cwd=self.cwd, env=self.env, timeout=60
            )
            if out.returncode == 0:
                self.ran.append(line)
                return out.stdout
            assert time.monotonic() < deadline, f"{line}\n{out.stdout[-1500:]}{out.stderr[-1500:]}"
            time.sleep(0.5)

    def close(self) -> None:
        for p in reversed(self.servers):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def block_with(text: str) -> list[str]:
    return next(b for b in sh_blocks() if any(text in line for line in b))


# lines a test cannot play: a person at a keyboard, a real board, a fixed port of this machine
NOT_HERE = ("miniterm", "/dev/ttyUSB0", "tcp:7000", "examples/lamp_host.py")


def test_the_readme_use_it_and_provisioning_blocks_run_as_written(tmp_path):
    """`ccm sim ccm`, then calls on the pty it printed; then provisioning as the manual has it: the AP's
    curl without a password, WiFi over the UART, the /rpc password read by the host, and calls over HTTP
    and WebSocket with it (issue 27)."""
    w = Walker(tmp_path)
    try:
        for line in block_with("call RPC.List") + block_with("Sys.Credentials"):
            if any(t in line for t in NOT_HERE):
                continue
            if line.startswith(".venv/bin/ccm sim ccm"):
                out = w.serve(line)
                w.subs["/dev/pts/5"] = re.search(r"host UART is (\S+)", out)[1]
                m = re.search(r"is http://127\.0\.0\.1:(\d+)/rpc, user admin, password (\w+)", out)
                w.subs["127.0.0.1:PORT"] = "127.0.0.1:" + m[1]
                w.subs["PASSWORD"] = m[2]
                continue
            out = w.run(line)
            if "Sys.Credentials" in line:
                assert w.subs["PASSWORD"] in out
            if "curl" in line:
                assert '"result":true' in out.replace(" ", ""), out
        assert len(w.ran) >= 7, w.ran
    finally:
        w.close()


def test_the_readme_ble_block_runs_as_written(tmp_path):
    """The manual's third way as the README shows it: a virtual module with BLE, provisioned over BLE in
    one command, then read with its password (issue 23)."""
    w = Walker(tmp_path)
    w.env["CCM_BLE_KEYS"] = str(tmp_path / "pc-bonds.json")  # the PC's BLE bonds, not the user's
    try:
        for line in block_with("provision ble://"):
            if line.startswith(".venv/bin/ccm sim ccm"):
                out = w.serve(line)
                w.subs["tcp-client:127.0.0.1:HCIPORT"] = re.search(r"--hci (tcp-client:\S+)", out)[1]
                w.subs["PASSWORD"] = re.search(r"user admin, password (\w+)", out)[1]
                continue
            out = w.run(line)
            if "provision" in line:
                assert "joined HomeNet" in out, out
            if "config-get wifi" in line:
                assert '"ssid": "HomeNet"' in out and '"pass": "***"' in out, out
        assert len(w.ran) == 3, w.ran
    finally:
        w.close()


def test_the_readme_cloud_block_runs_as_written(tmp_path):
    """`ccm cloud` (its dashboard on a free port instead of 8080: the one change, this machine's ports are
    not the reader's), the virtual CCM on the URL it printed with the device's password, calls and the
    shadow with the cloud's, then another device added while it runs."""
    if not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.fail("mosquitto is needed (apt-get install mosquitto; scripts/test installs it as root)")
    w = Walker(tmp_path)
    try:
        for line in block_with("ccm cloud add-device"):
            if line.startswith(".venv/bin/ccm cloud") and "add-device" not in line:
                out = w.serve(line, ["--http", "127.0.0.1:0"])
                w.subs["mqtt://ccm-000000:PASSWORD@127.0.0.1:PORT"] = re.search(r"ccm sim ccm --mqtt (\S+)", out)[1]
                w.subs["mqtt://ccm-cloud:CLOUDPW@127.0.0.1:PORT"] = re.search(r"--port (\S+)/ccm-000000", out)[1]
                continue
            if line.startswith(".venv/bin/ccm sim ccm"):
                w.serve(line)
                continue
            out = w.run(line)
            if "shadow get" in line:
                assert '"on": true' in out and '"brightness": 40' in out, out
            if "add-device" in line:
                assert "MQTT user lamp-0042" in out and "no ccm cloud running" not in out, out
        assert len(w.ran) == 6, w.ran
    finally:
        w.close()
