"""Starting a boot's optional parts (ccm/main.py's Ccm): the host's pins, OTA, WiFi and /rpc, the cloud,
a host flash to finish. Run once per boot and dropped after: on a stock image this code would otherwise
sit in a plain ESP32's heap for the whole boot. What runs on afterwards — the /rpc handler, the cloud's
task, a trial's deadline — is the Ccm's own (a closure defined here would keep this module loaded).

Each part is started on its own: one that fails is a fault (Sys.GetInfo `faults`), the others go on.
"""

import asyncio

from ccm.compat import random_bytes, unload
from ccm.files import read_json, write_json

PASSWORD_CHARS = "abcdefghijkmnpqrstuvwxyz23456789"  # 32: no 0/o, 1/l; a byte % 32 is uniform
PASSWORD_LEN = 16  # 80 bits


def start(ccm):
    """The optional parts' tasks. A host flash a reboot left goes first: the network and the cloud start
    once it is over (Ccm.start_after), so that it runs on a heap they do not hold yet."""
    ccm._optional("host pins", lambda: ccm.host_update.pins_idle())
    ccm._optional("ota", lambda: start_ota(ccm))
    flash = ccm._optional("host update", lambda: resume_host_update(ccm))
    if flash:
        return flash + [asyncio.create_task(ccm.start_after(flash[0]))]
    return start_connected(ccm)


def start_connected(ccm):
    """WiFi and /rpc, and the cloud."""
    tasks = ccm._optional("network", lambda: start_network(ccm))
    return tasks + ccm._optional("cloud", lambda: start_cloud(ccm))


def start_network(ccm):
    """WiFi provisioning when the board has a radio; the /rpc server when rpc.http.enable."""
    tasks = []
    if ccm.board.radio:
        from ccm.provision import Provisioner

        ccm.provisioner = Provisioner(ccm.config, ccm.board, ccm.router)
        tasks.append(ccm.supervise("wifi", ccm.provisioner.run))
    address = ccm.board.http_address(ccm.config) if ccm.config.get("rpc.http.enable") else None
    if address is not None:
        from ccm.listener import Listener

        own_password(ccm)
        ccm.http = Listener(ccm.http_server)
        ccm.http_address = address
        tasks.append(ccm.supervise("rpc.http", ccm.serve_http))
    if ccm.config.get("ble.enable"):
        if ccm.board.bluetooth() is None:
            ccm.fault("ble", "ble.enable is set but this board has no Bluetooth")
        else:
            tasks.append(ccm.supervise("ble", ccm.run_ble))
    return tasks


def own_password(ccm):
    """/rpc is never open by accident: a module whose image gave it no password makes its own, once,
    and keeps it in its saved settings — readable over the UART only (Sys.Credentials: physical
    access is the trust anchor) — unless the vendor chose rpc.auth.open."""
    c = ccm.config
    if c.get("rpc.auth.password") or c.get("rpc.auth.open"):
        return
    pw = "".join(PASSWORD_CHARS[b % len(PASSWORD_CHARS)] for b in random_bytes(PASSWORD_LEN))
    c.set({"rpc": {"auth": {"password": pw}}})
    try:
        c.save()
    except Exception as e:  # no filesystem: good for this boot, and said
        ccm.faults["rpc.auth"] = "the /rpc password made at this boot could not be saved: %s" % e
    print(
        "ccm: /rpc password for %s: %s (made at first boot; Sys.Credentials over the UART)"
        % (c.get("rpc.auth.user"), pw)
    )


def start_ota(ccm):
    """OTA.* on the router; a self-update on trial is committed or timed; a poll when configured.
    The receiver loads at the first upload or trigger (an idle OTA.Status is answered without it), or
    now when a job a reboot interrupted waits in ota/state.json or a self-update's trial ended; its
    appliers and the self-update code load only when used."""
    ccm.serve_ota_on_demand()
    ccm.router.add("OTA.Commit", ccm.on_demand("ccm.ota.selfupdate", "commit_rpc"))
    ccm.router.add("OTA.Revert", ccm.on_demand("ccm.ota.selfupdate", "revert_rpc"))
    root = ccm.fs_root() or ""
    rec = read_json(root + "/ota/self.json")
    if rec.get("state") == "trial":  # selfupdate.TRIAL: this boot runs a self-update on trial
        from ccm.ota.selfupdate import SelfUpdate, trial_deadline

        timeout = rec.get("commit_timeout") or 0
        if not timeout:
            SelfUpdate(ccm.fs_root(), ccm.board).commit()  # no explicit commit asked for: booting this far is enough
        else:
            ccm.spawn(trial_deadline(ccm, timeout))
    elif rec.get("app_rollback"):  # its files could not be unpacked: the app staged with them goes too
        rec["app_rollback"] = False
        write_json(root + "/ota/self.json", rec)
        ccm.board.app_rollback()
    else:  # the app that runs is the one to keep: else ESP-IDF's bootloader rolls back a reverted-to or
        try:  # freshly flashed app it boots as pending verification (ESP32_GENERIC-OTA)
            ccm.board.app_mark_valid()
        except Exception as e:  # no otadata (the stock table): nothing to mark
            print("ccm: app not marked valid: %r" % e)
    unload("ccm.ota.selfupdate")  # loaded again when a trial's deadline or OTA.Commit/Revert needs it
    saved = read_json(root + "/ota/state.json")
    if saved.get("job") or saved.get("trial"):  # a job to finish, or a self-update's trial to settle
        if ccm.load_ota().settled():  # a trial that ended: the receiver goes until OTA.* needs it
            ccm.ota = None
            ccm.serve_ota_on_demand()
            unload("ccm.ota.receiver", "ccm.ota.states")
    url = ccm.config.get("ota.poll_url")
    if url:
        from ccm.ota import pull

        ccm.spawn(pull.poll(ccm.load_ota(), url, ccm.config.get("ota.poll_interval_s")))


def start_cloud(ccm):
    """The cloud connection for mqtt.* when mqtt.enable is set, with every capability on it (ccm/cloud.py):
    the host's MQTT.*, the shadow, RPC from the cloud, OTA through the shadow. The client reconnects by
    itself."""
    if not ccm.config.get("mqtt.enable"):
        return []
    from ccm.cloud import Cloud
    from ccm.cloud_rpc import CloudRpc
    from ccm.mqtt_host import HostMqtt
    from ccm.shadow import Shadow

    config, router = ccm.config, ccm.router
    cloud = ccm.cloud = Cloud(config, router, mqtt_client(config, ccm.board))
    cloud.host_mqtt = HostMqtt(cloud, router)
    cloud.shadow = Shadow(cloud, config, router)
    cloud.rpc = CloudRpc(cloud, config, router)
    cloud.shadow.takers.append(ccm.take_ota_delta)  # OTA through the shadow (ccm/ota/shadow_ota.py)
    ccm.ota_listeners.append(ccm.report_ota)
    ccm.mqtt = cloud.client
    return [ccm.supervise("cloud", ccm.run_cloud)]


def mqtt_client(config, board):
    """An MqttClient for mqtt.* (server "host:port", TLS when a CA or client certificate is set), opening
    its connections through the board's connect() (names resolved without blocking); relative
    certificate paths are on the board's filesystem."""
    from ccm.mqtt import MqttClient

    server = config.get("mqtt.server")
    host, _, port = server.rpartition(":")
    if port and not port.isdigit():
        raise ValueError("mqtt.server %s: expected host:port, the port a number" % server)
    ssl_ctx = None
    if config.get("mqtt.ssl_ca_cert") or config.get("mqtt.ssl_cert"):
        from ccm.tls import mqtt_context

        ssl_ctx = mqtt_context(config, board.fs_dir)
        unload("ccm.tls")  # the context is made once per boot: its code need not stay (a stock image's heap)
    return MqttClient(
        host or "localhost",
        int(port or (8883 if ssl_ctx else 1883)),
        client_id=config.get("mqtt.client_id") or config.get("device.id"),
        keepalive=config.get("mqtt.keep_alive"),
        user=config.get("mqtt.user") or None,
        password=config.get("mqtt.pass") or None,
        ssl=ssl_ctx,
        queue_size=config.get("mqtt.queue_size"),
        backoff_min_ms=config.get("mqtt.reconnect_timeout_min_ms"),
        backoff_max_ms=config.get("mqtt.reconnect_timeout_max_ms"),
        open_connection=board.connect,
    )


def resume_host_update(ccm):
    """An update's job a reboot cut short or left to this boot (the OTA receiver's: a check, a host
    flash), or a host flash cut short (its record says so), is done now; with none, the flashing code
    goes until an update needs it (on a stock image it is heap)."""
    job = ccm.ota.resume() if ccm.ota is not None else None
    if job is not None:
        return [job]
    host = ccm.host_update
    if not host.wired() or host.pending() is None:
        if ccm.ota is None or not ccm.ota.busy():  # an update in flight may be flashing it
            ccm.drop_host_update()
        return []
    return [asyncio.create_task(host.resume())]
