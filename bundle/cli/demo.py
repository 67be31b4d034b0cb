"""`ccm demo`: the virtual product end to end."""

from __future__ import annotations

import json
import time

import click

from bundle.cli import WireTrace, main
from ccm.rpc import RpcError


@main.command()
@click.option("--embedded", is_flag=True, help="Use the embedded amqtt broker even when mosquitto is installed.")
def demo(embedded: bool) -> None:
    """The virtual product end to end: cloud, CCM and host MCU, no hardware.

    Starts an MQTT broker with the shadow service, boots a virtual CCM whose host UART is a pty,
    attaches a host program to it, and replays the CCM manual's examples, printing every frame on
    the UART.
    """
    from cloud.broker import start_broker
    from cloud.client import CloudClient
    from cloud.shadow_service import ShadowService
    from host_lib import Host
    from sim.ccm import VirtualCcm

    say = click.echo
    device = "ccm-demo01"
    say("Starting the local cloud: MQTT broker + AWS-style shadow service")
    broker = start_broker(embedded=embedded)
    service = ShadowService(broker.url).start()
    say(f"  broker: {broker.kind} on {broker.url}")
    v = VirtualCcm(
        {"device": {"id": device}, "mqtt": {"enable": True, "server": f"127.0.0.1:{broker.port}"}}, trace=WireTrace()
    )
    say("Booting a virtual CCM; its host UART is a pty, every frame on it is printed:")
    v.start()
    say(f"  host UART: {v.path}")
    host = Host(v.path, fw_version="1.0", arch="python", fw_id=time.strftime("%b %d %Y %H:%M:%S"), app="demo_lamp")
    cloud = CloudClient(broker.url, client_id="demo-app")
    lamp: dict = {}

    @host.method("Sum")
    def _sum(params):
        return params[0] + params[1]

    @host.on("Shadow.Delta")
    def _delta(state):
        lamp.update(state)
        host.shadow_report(lamp)

    ok = False
    try:
        host.start()
        cloud.start()
        deadline = time.monotonic() + 10
        while not host.call("Sys.GetInfo")["cloud"]["connected"]:
            if time.monotonic() > deadline:
                raise click.ClickException("the virtual CCM did not reach the broker")
            time.sleep(0.05)
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
        deadline = time.monotonic() + 10
        doc = cloud.shadow_get(device)
        while doc["state"].get("reported") != {"on": True} and time.monotonic() < deadline:
            time.sleep(0.05)
            doc = cloud.shadow_get(device)
        say(f"   shadow now: {json.dumps(doc['state'])} (version {doc['version']})")
        say("\n5. The host publishes to the cloud (manual §6):")
        cloud.subscribe("t1")
        mark = cloud.mark()
        host.mqtt_pub("t1", "hello")
        _, topic, payload = cloud.wait_message("t1", after=mark)
        say(f"   the cloud got {payload.decode()!r} on {topic}")
        ok = doc["state"].get("reported") == {"on": True}
    finally:
        host.close()
        cloud.stop()
        v.stop()
        service.stop()
        broker.close()
    if not ok:
        raise click.ClickException("the shadow round trip did not complete")
    say("\nDone. Next: `ccm cloud` and `ccm sim ccm --mqtt HOST:PORT` keep them running for your own host.")
