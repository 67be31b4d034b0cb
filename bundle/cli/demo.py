"""`ccm demo`: the virtual product end to end, including the manual's host OTA (§4–§5)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import click

from bundle.cli.common import WireTrace, main
from ccm.rpc import RpcError


def _wait(cond, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise click.ClickException(f"the demo stopped: {what} did not happen within {timeout:g} s")
        time.sleep(0.05)


@main.command()
@click.option("--embedded", is_flag=True, help="Use the embedded amqtt broker even when mosquitto is installed.")
def demo(embedded: bool) -> None:
    """The virtual product end to end: cloud, CCM and host MCU, no hardware.

    Starts an MQTT broker with the shadow service, boots a virtual STM32 whose emulated Cortex-M3 runs
    the lamp firmware v1 (examples/stm32-lamp, C on host_lib/c) and a virtual CCM wired to it (UART,
    BOOT0, NRST), replays the CCM manual's examples printing every frame on the UART, then builds
    firmware v2, bundles it with the manual's command and pushes it with `ccm ota` over WebSocket: the
    CCM re-flashes the STM32 through its ROM bootloader, v2 boots and the cloud sees it.

    The firmware is built with arm-none-eabi-gcc when it is installed, else taken prebuilt from
    examples/stm32-lamp/prebuilt/.
    """
    from bundle.cli.ota_cmds import StageBar
    from bundle.ota_client import OtaFailed, push
    from bundle.transport import WsRpc
    from cloud.broker import start_broker
    from cloud.client import CloudClient
    from cloud.shadow_service import ShadowService
    from pc import fwbundle
    from sim.lamp_fw import FirmwareUnavailable, lamp_image
    from sim.product import LampProduct

    say = click.echo
    device = "ccm-demo01"
    trace = WireTrace()
    work = tempfile.mkdtemp(prefix="ccm-demo-")
    say("Starting the local cloud: MQTT broker + AWS-style shadow service")
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # its per-client chatter is not the story
    broker = start_broker(embedded=embedded)
    service = ShadowService(broker.url).start()
    say(f"  broker: {broker.kind} on {broker.url}")
    key = os.path.join(work, "signing.pem")  # made on the spot: the CCM takes only bundles it signed
    fwbundle.new_signing_key(key)
    fs_dir = os.path.join(work, "ccm-fs")
    os.makedirs(fs_dir)
    with open(os.path.join(fs_dir, "ota.pub.pem"), "wb") as f:  # as `ccm build --sign-key` puts it there
        f.write(open(fwbundle.public_path(key), "rb").read())
    trust = {"ota": {"pubkey": "ota.pub.pem", "require_signature": True}}
    try:
        product = LampProduct(device, broker.url, fs_dir, trace=trace, config=trust)
        v2, _ = lamp_image("2.0")
    except FirmwareUnavailable as e:
        service.stop()
        broker.close()
        raise click.ClickException(str(e)) from None
    say(
        f"A virtual STM32F103 runs the lamp firmware v1 ({len(product.image)} bytes, {product.how}) on an emulated Cortex-M3;"
    )
    say("Booting a virtual CCM wired to it (TX/RX, IO14 -> BOOT0, IO27 -> NRST); every frame on the UART is printed:")
    product.start()
    v, mcu = product.ccm, product.mcu
    cloud = CloudClient(broker.url, client_id="demo-app")
    ok = False
    try:
        cloud.start()
        _wait(lambda: v.call("Sys.GetInfo")["cloud"]["connected"], "the CCM's connection to the broker")
        say("\n1. The cloud calls the host's Sum through the CCM (manual §6), over MQTT and the UART:")
        say(f"   result: {cloud.call(device, 'Sum', [2, 3])}")
        say("\n2. ...and a function the host does not have:")
        try:
            cloud.call(device, "This_Function_Does_Not_Exist", True)
        except RpcError as e:
            say(f"   error: {e.message} ({e.code})")
        say("\n3. The CCM asks the host what it exports and what it runs (manual §9):")
        say(f"   RPC.List: {v.host_call('RPC.List')}")
        say(f"   Sys.Info: {v.host_call('Sys.Info')}")
        say("\n4. The cloud switches the lamp on through the device shadow (manual §9):")
        cloud.shadow_update(device, {"desired": {"on": True}})
        doc = _wait(
            lambda: (d := cloud.shadow_get(device))["state"].get("reported", {}).get("on") is True and d,
            "the host's shadow report",
        )
        say(f"   shadow now: {json.dumps(doc['state'])} (version {doc['version']})")
        say(f"   the lamp's LED (PC13): {'on' if mcu.led else 'off'}")
        say("\n5. MQTT both ways (manual §6): the cloud publishes a command the host subscribed to, the host")
        say("   switches and publishes its status:")
        cloud.subscribe("lamp/status")
        mark = cloud.mark()
        cloud.publish("lamp/cmd", "off")
        _, topic, payload = cloud.wait_message("lamp/status", after=mark)
        say(f"   the cloud got {payload.decode()!r} on {topic}; the LED is {'on' if mcu.led else 'off'}")

        say("\n6. Host firmware v2 over the air (manual §4-§5). Built, then bundled with the manual's command:")
        fw = os.path.join(work, "FIRMWARE.BIN")
        with open(fw, "wb") as f:
            f.write(v2)
        bundle_path = os.path.join(work, "fw.zip")
        part = ["host_fw:type=STM32,src=FIRMWARE.BIN,addr=0x8000000"]
        say(f"   ccm create-fw-bundle -o fw.zip --name fw --platform ccm_host {part[0]} --sign-key signing.pem")
        m = fwbundle.create(bundle_path, "fw", "ccm_host", part, sign_keys=[key], src_dir=work)
        say(f"   -> fw.zip: version {m['version']}, host_fw {m['parts']['host_fw']['size']} bytes, signed")
        ws = v.rpc_url()  # with the password the CCM made at its first boot in it
        link = WsRpc(ws)
        unsigned = os.path.join(work, "unsigned.zip")
        fwbundle.create(unsigned, "fw", "ccm_host", part, src_dir=work)
        try:
            push(link, open(unsigned, "rb").read())
            raise click.ClickException("the demo's CCM took an unsigned bundle")
        except OtaFailed as e:
            say(f"   (the same firmware unsigned is refused: {e})")
        say(f"   ccm --port {ws} ota fw.zip")
        trace.paused = True  # the UART now carries the bootloader's binary protocol
        bar = StageBar()
        try:
            st = push(link, open(bundle_path, "rb").read(), progress=bar)
        except OtaFailed as e:
            raise click.ClickException(f"the demo's OTA failed: {e}") from None
        finally:
            bar.close()
            link.close()
            trace.paused = False
        say(f"   {st.get('message')}")
        info = cloud.call(device, "Sys.Info")
        say(f"   through the cloud, the host's Sys.Info: {json.dumps(info)}")
        ok = info.get("fw_version") == "2.0" and mcu.cpu is not None and not mcu.cpu.crashed
    finally:
        cloud.stop()
        product.stop()
        service.stop()
        broker.close()
        shutil.rmtree(work, ignore_errors=True)  # its bundle, firmware and the CCM's filesystem
    if not ok:
        raise click.ClickException("the demo did not end with the host on v2")
    say(
        "\nDone: the host runs v2. Next, with a dashboard: `ccm cloud`, then `ccm sim ccm --host lamp --mqtt HOST:PORT`,\n"
        "and open the link `ccm cloud` printed: the lamp's shadow, its RPC, its firmware update, in the browser."
    )
