"""The configuration tree: type checks, ACL globs, redaction, atomic save. Portable (CPython + MicroPython)."""

import json
import os

from fwtest import raises, scratch_path

from ccm import rpc
from ccm.config import Config
from ccm.schema import DEFAULTS, acl_allows, glob_match


def test_set_merges_and_checks_types_against_the_defaults():
    c = Config()
    assert sorted(c.set({"wifi": {"sta": {"ssid": "Home", "enable": True}}})) == ["wifi.sta.enable", "wifi.sta.ssid"]
    assert c.get("wifi.sta.ssid") == "Home" and c.get("wifi.sta.pass") == ""
    e = raises(rpc.RpcError, c.set, {"wifi": {"sta": {"enable": 1}}})
    assert e.code == rpc.INVALID_PARAMS and "wifi.sta.enable must be a boolean" in e.message
    e = raises(rpc.RpcError, c.set, {"wifi": {"nope": 1}})
    assert "unknown key wifi.nope" in e.message
    assert DEFAULTS["wifi"]["sta"]["ssid"] == ""  # defaults are never touched


def test_acl_globs():
    assert glob_match("wifi.*", "wifi.sta.ssid") and not glob_match("wifi.*", "mqtt.server")
    assert glob_match("*.pass", "mqtt.pass") and glob_match("d?vice.id", "device.id")
    assert acl_allows("wifi.*,device.*", "device.id")
    assert not acl_allows("wifi.*,device.*", "conf_acl")
    assert not acl_allows("-wifi.ap.*,wifi.*", "wifi.ap.ssid") and acl_allows("-wifi.ap.*,wifi.*", "wifi.sta.ssid")
    c = Config({"conf_acl": "wifi.*"})
    e = raises(rpc.RpcError, c.check, {"mqtt": {"server": "x"}}, c.get("conf_acl"))
    assert e.code == rpc.FORBIDDEN and "mqtt.server" in e.message


def test_redaction():
    c = Config({"mqtt": {"pass": "p", "ssl_key": "/k.pem"}, "rpc": {"auth": {"password": "x"}}})
    r = c.redacted()
    assert r["mqtt"]["pass"] == "***" and r["mqtt"]["ssl_key"] == "***" and r["rpc"]["auth"]["password"] == "***"
    assert r["wifi"]["sta"]["pass"] == "" and c.redacted("mqtt.pass") == "***"
    c.set({"mqtt": {"pass": "***"}})
    assert c.get("mqtt.pass") == "p"


def test_save_writes_only_changes_and_a_broken_file_falls_back_to_defaults():
    path = scratch_path("conf.json")
    c = Config({"device": {"id": "factory"}}, path)
    c.set({"wifi": {"sta": {"ssid": "Home"}}})
    c.save()
    with open(path) as f:
        assert json.loads(f.read()) == {"wifi": {"sta": {"ssid": "Home"}}}
    assert Config({"device": {"id": "factory"}}, path).get("wifi.sta.ssid") == "Home"
    with open(path + ".tmp", "w") as f:
        f.write('{"half')  # an interrupted save
    assert Config(None, path).get("wifi.sta.ssid") == "Home"
    try:
        os.stat(path + ".tmp")
        raise AssertionError("the stale temp file was not removed")
    except OSError:
        pass
    with open(path, "w") as f:
        f.write("{garbage")
    assert Config(None, path).get("wifi.sta.ssid") == ""
