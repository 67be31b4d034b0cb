"""`ccm sim`: virtual hardware."""

from __future__ import annotations

import os
import sys

import click

from bundle.cli.common import WireTrace, main, stop_on_sigterm, wait_for_ctrl_c


@main.group()
def sim() -> None:
    """Run virtual hardware (no board needed)."""
    stop_on_sigterm()


@sim.command("ccm")
@click.option("--device-id", default="ccm-000000", show_default=True, help="device.id of the virtual module.")
@click.option(
    "--uart",
    default="pty",
    show_default=True,
    metavar="pty|tcp:PORT|DEVICE",
    help="Where the host UART is: a new pty, a TCP port (hosts use socket://127.0.0.1:PORT), or a serial device wired to a real host.",
)
@click.option(
    "--mqtt",
    "mqtt_server",
    metavar="[mqtt://USER:PASSWORD@]HOST:PORT",
    help="Connect to this MQTT broker, as `ccm cloud` prints it (with the device's user and password).",
)
@click.option("--trace/--no-trace", default=False, help="Print every frame on the UART.")
@click.option(
    "--host",
    "host_kind",
    type=click.Choice(["none", "lamp"]),
    default="none",
    show_default=True,
    help="lamp: wire a virtual STM32F103 running the lamp firmware (examples/stm32-lamp) to the UART, BOOT0 "
    "and NRST, so the cloud can drive it and update its firmware (host OTA).",
)
@click.option(
    "--flash",
    "flash_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Boot the firmware `ccm flash` wrote into this virtual ESP32 flash file, on MicroPython (WebAssembly).",
)
@click.option(
    "--ble",
    is_flag=True,
    help="Give it BLE (ble.enable, mos's RPC over GATT) on a virtual radio, and print the HCI transport a "
    "central joins it with: ccm --hci tcp-client:127.0.0.1:PORT --port ble://DEVICE_ID ….",
)
def sim_ccm(
    device_id: str,
    uart: str,
    mqtt_server: str | None,
    trace: bool,
    host_kind: str,
    flash_path: str | None,
    ble: bool,
) -> None:
    """A virtual CCM with its host UART on a pseudo-terminal, until Ctrl-C.

    Any program that can open a serial port can be its host: host_lib, mjson on a PC, miniterm. With
    --host lamp its host is a virtual STM32 running real C firmware instead. With --flash it runs the
    .mpy firmware from a virtual ESP32's flash on real MicroPython instead of the source tree on CPython.

    \b
    Example:  ccm sim ccm --host lamp --mqtt mqtt://ccm-000000:PASSWORD@127.0.0.1:PORT   # as `ccm cloud` printed it
    """
    from sim.ccm import VirtualCcm

    if flash_path:
        from sim.mpy_ccm import FlashBootedCcm

        try:
            fb = FlashBootedCcm(flash_path).start()
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"CCM firmware from {flash_path} on MicroPython; its host UART is {fb.path}")
        click.echo(f"  ccm --port {fb.path} call RPC.List")
        click.echo("Ctrl-C stops it.")
        wait_for_ctrl_c()
        fb.stop()
        return

    if mqtt_server:
        _refuse_a_twin(mqtt_server, device_id)
    tracer = WireTrace() if trace else None
    if host_kind == "lamp":
        from sim.lamp_fw import FirmwareUnavailable
        from sim.product import LampProduct

        if uart != "pty":
            raise click.UsageError("--host lamp wires the virtual STM32 to the UART: leave out --uart")
        try:
            p = LampProduct(device_id, mqtt_server, trace=tracer).start()
        except FirmwareUnavailable as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"virtual CCM {device_id} is up, wired to a virtual STM32F103 running the lamp firmware 1.0")
        click.echo(f"  ({p.how}; UART {p.mcu.path}, IO14 -> BOOT0, IO27 -> NRST)")
        click.echo(
            f"  its /rpc endpoint (HTTP and WebSocket) is {p.ccm.http_url}, user admin, password {p.ccm.password}"
        )
        click.echo(f"  e.g.  ccm --port {p.ccm.rpc_url()} call Sys.GetInfo")
        if mqtt_server:
            click.echo("  in the dashboard of `ccm cloud`: switch it through its shadow, call Sum, update its firmware")
        click.echo("Ctrl-C stops it.")
        wait_for_ctrl_c()
        p.stop()
        return
    try:
        config: dict = {"device": {"id": device_id}}
        if mqtt_server:
            from pc.net import mqtt_settings

            config["mqtt"] = mqtt_settings(mqtt_server)
        if ble:
            config["ble"] = {"enable": True}
        v = VirtualCcm(config, trace=tracer, uart=uart, ble=ble).start()
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot open the UART {uart!r}: {e}") from None
    click.echo(f"virtual CCM {device_id} is up; its host UART is {v.path}")
    click.echo(f"its /rpc endpoint (HTTP and WebSocket) is {v.http_url}, user admin, password {v.password}")
    click.echo(f"  (the password it made at its first boot: ccm --port {v.rpc_url()} … takes it in the URL)")
    if ble:
        click.echo(f"its BLE (RPC over GATT) advertises as {device_id}; a central joins the air through")
        click.echo(f"  ccm --hci {v.ble_hci(0)} provision ble://{device_id} --ssid HomeNet --pass secret123")
        click.echo(f"  (a second central: --hci {v.ble_hci(1)})")
    click.echo("talk to it as the host would:")
    click.echo(f"  ccm --port {v.path} call RPC.List")
    click.echo(
        f'  {sys.executable} -m serial.tools.miniterm {v.path} 115200   then type {{"id":1,"method":"Sys.GetInfo"}}'
    )
    click.echo("Ctrl-C stops it.")
    wait_for_ctrl_c()
    v.stop()


def _refuse_a_twin(mqtt_server: str, device_id: str) -> None:
    """A CCM with this device id online on the broker already: two CCMs with one id take each other's MQTT
    session over for ever (the broker drops the older client of a client id), and both answer calls."""
    from cloud.client import CloudClient

    url = mqtt_server if "://" in mqtt_server else "mqtt://" + mqtt_server
    try:
        with CloudClient(url, client_id=f"ccm-sim-check-{os.getpid()}") as c:
            c.subscribe(f"{device_id}/status")
            try:  # presence is retained: "online" while a CCM with this id is connected
                c.wait_message(f"{device_id}/status", lambda p: p == b"online", timeout=1.0)
            except TimeoutError:
                return
    except (OSError, TimeoutError, ConnectionError):
        return  # no broker yet: the CCM reports that itself, and retries
    raise click.ClickException(
        f"a CCM with device id {device_id} is online on {mqtt_server.rpartition('@')[2]} already (another `ccm sim ccm`?): two with "
        "one id take each other's MQTT session over for ever. Stop that one, or give this one --device-id NAME"
    )


@sim.command("esp32")
@click.option(
    "--flash", "flash_path", default="esp32-flash.bin", show_default=True, help="The 4 MiB flash file (created blank)."
)
def sim_esp32(flash_path: str) -> None:
    """A virtual ESP32 in its ROM download mode on a pty, for esptool (--before no-reset --no-stub)."""
    from sim.esp32_rom import VirtualEsp32Rom

    rom = VirtualEsp32Rom(flash_path).start()
    click.echo(f"virtual ESP32 ROM loader on {rom.path}, flash in {flash_path}")
    click.echo(f"  ccm --port {rom.path} flash --no-reset --no-stub --firmware MICROPYTHON.BIN")
    click.echo("Ctrl-C stops it (the flash file is saved).")
    wait_for_ctrl_c()
    rom.stop()


@sim.command("stm32")
@click.option("--profile", type=click.Choice(["f103", "f411", "g071"]), default="f103", show_default=True)
@click.option(
    "--baud",
    type=int,
    default=0,
    help="Timing model at this baud (11 bits a byte) with datasheet erase/program times; 0: as fast as possible.",
)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Pre-flash this image and boot it.")
def sim_stm32(profile: str, baud: int, image: str | None) -> None:
    """A virtual STM32 on a pty, in its bootloader (or running --image), until Ctrl-C.

    With --image it boots that firmware on an emulated Cortex-M3 (RCC, GPIO, USART1 on the pty,
    SysTick): e.g. the lamp built on host_lib/c, examples/stm32-lamp/prebuilt/lamp-1.0.bin.

    \b
    Flash it with any tool:   stm32flash -m 8n1 -w fw.bin PTY
                              ccm --port PTY stm32 flash --mode 8n1 --lines none fw.bin
    """
    from sim.stm32 import VirtualStm32

    data = open(image, "rb").read() if image else None
    mcu = VirtualStm32(profile, baud or None)
    if data is not None and len(data) > len(mcu.core.flash):
        raise click.ClickException(
            f"{image} is {len(data)} bytes; the {profile}'s flash holds {len(mcu.core.flash)}. Pick another --profile."
        )
    mcu.start()
    if data is not None:
        mcu.core.flash[: len(data)] = data
        mcu.reset(boot0=False)
    else:
        mcu.reset(boot0=True)
    click.echo(f"virtual {mcu.core.chip.name} (0x{mcu.core.chip.pid:03X}) on {mcu.path}, {mcu.mode}")
    if mcu.mode == "silent":
        click.echo(
            f"  {image} does not boot (no Cortex-M vector table at its start): the chip stays silent, as a real one"
            " would; its bootloader still takes a new image"
        )
    if data is None or mcu.mode == "silent":  # in its bootloader: what flashes it
        click.echo(f"  stm32flash -m 8n1 -w fw.bin {mcu.path}")
    else:  # the app runs: talk to it; the bootloader needs BOOT0 high and a reset first
        click.echo(f"  ccm --port {mcu.path} call Sys.Info   (the app's JSON-RPC; its bootloader: BOOT0 + reset)")
    click.echo("Ctrl-C stops it.")
    wait_for_ctrl_c()
    mcu.stop()
    if mcu.turnarounds:  # how long the flashing tool took to answer the bootloader, all told
        click.echo(f"turnarounds: {mcu.turnarounds}, the host's reaction {mcu.host_wait:.3f} s in all")
