"""A module that boots with something broken keeps its UART link and says what is wrong (issue 11, item 1):
optional parts that fail are reported and retried; boots that keep failing end in safe mode, where the
host can still mend the configuration over the UART."""

import json

import pytest
from conftest import cloud_config, unique_device, wait_until

from ccm import rpc
from ccm.link import HostLink
from host_lib import Host, RpcError
from sim.ccm import VirtualCcm


def test_a_broken_tls_path_leaves_the_link_and_config_working_and_says_why(mosquitto, tmp_path):
    device = unique_device()
    cfg = cloud_config(mosquitto.port, device, ssl_ca_cert="/no/such/ca.pem")
    with VirtualCcm(cfg, fs_dir=str(tmp_path)) as v:
        status = []
        host = Host(v.path)
        host.on("Cloud.Status")(status.append)
        with host:
            info = host.call("Sys.GetInfo")
            assert info["cloud"]["connected"] is False and "ca.pem" in info["cloud"]["reason"]
            assert "ca.pem" in info["faults"]["cloud"]
            with pytest.raises(RpcError) as e:
                host.call("MQTT.Pub", {"topic": "t", "message": "x"})
            assert e.value.code == rpc.NOT_CONNECTED and "ca.pem" in e.value.message
            host.call("Sys.Reboot", {"delay_ms": 0})  # the notification was sent before this host listened
            wait_until(lambda: status and "ca.pem" in status[-1].get("reason", ""), what="Cloud.Status with the reason")
            # mended over the UART, as a user would: the next boot connects
            host.call("Config.Set", {"config": {"mqtt": {"ssl_ca_cert": ""}}, "save": True, "reboot": True})
            wait_until(lambda: v.ccm.mqtt is not None and v.ccm.mqtt.state == 2, what="the cloud after the fix")
            assert host.call("Sys.GetInfo")["faults"] == {}


def test_boots_that_keep_failing_end_in_safe_mode_where_the_config_can_be_mended(tmp_path, monkeypatch):
    # a saved setting that breaks the link at every boot (here: a HostLink that cannot take max_pending 3)
    (tmp_path / "conf.json").write_text(json.dumps({"rpc": {"max_pending": 3}}))
    real_init = HostLink.__init__

    def init(self, stream, router, config):
        if config.get("rpc.max_pending") == 3:
            raise RuntimeError("the link cannot start with rpc.max_pending 3")
        real_init(self, stream, router, config)

    monkeypatch.setattr(HostLink, "__init__", init)
    with VirtualCcm({"device": {"id": "ccm-safe"}}, fs_dir=str(tmp_path)) as v:
        assert v.board.boots == 4  # three failed boots, then safe mode
        inits = []
        host = Host(v.path)
        host.on("Sys.Init")(inits.append)
        with host:
            info = host.call("Sys.GetInfo")
            assert "3 boots in a row failed" in info["safe_mode"] and "max_pending 3" in info["safe_mode"]
            assert host.call("Config.Get", {"key": "rpc.max_pending"}) == 3  # the saved tree, to mend
            assert "MQTT.Pub" not in host.call("RPC.List") and "OTA.Begin" not in host.call("RPC.List")
            host.call("Config.Set", {"config": {"rpc": {"max_pending": 16}}, "save": True, "reboot": True})
            # the safe-mode boot's own Sys.Init may reach this host late: wait for the normal boot's
            wait_until(lambda: inits and "safe_mode" not in inits[-1], what="a Sys.Init without safe_mode")
            info = host.call("Sys.GetInfo")
            assert "safe_mode" not in info and "OTA.Begin" in host.call("RPC.List")
