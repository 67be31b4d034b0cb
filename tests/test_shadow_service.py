"""AWS IoT shadow semantics of the local cloud (cloud/shadow_service.py), and over a real broker."""

import json

import pytest

from cloud.client import ShadowError
from cloud.shadow_service import Shadows


def upd(s, thing, body):
    return dict(s.handle(thing, "update", json.dumps(body).encode() if not isinstance(body, bytes) else body))


def test_update_creates_versions_and_publishes_accepted_delta_documents():
    s = Shadows()
    out = upd(s, "t", {"state": {"desired": {"on": True, "c": {"r": 1}}}, "clientToken": "k1"})
    assert set(out) == {"update/accepted", "update/delta", "update/documents"}
    assert out["update/accepted"]["version"] == 1 and out["update/accepted"]["clientToken"] == "k1"
    assert out["update/accepted"]["metadata"]["desired"]["c"]["r"]["timestamp"] > 0
    assert out["update/delta"]["state"] == {"on": True, "c": {"r": 1}}
    assert out["update/documents"]["previous"] is None
    out = upd(s, "t", {"state": {"reported": {"on": True, "c": {"r": 1}}}})
    assert "update/delta" not in out  # nothing differs any more
    assert out["update/documents"]["previous"]["version"] == 1 and out["update/documents"]["current"]["version"] == 2
    got = dict(s.handle("t", "get", b""))["get/accepted"]
    assert got["state"] == {"desired": {"on": True, "c": {"r": 1}}, "reported": {"on": True, "c": {"r": 1}}}
    assert got["version"] == 2


def test_null_deletes_leaves_and_sections_and_arrays_compare_whole():
    s = Shadows()
    upd(s, "t", {"state": {"desired": {"a": 1, "b": {"x": 1, "y": 2}, "l": [1, 2]}, "reported": {"l": [1]}}})
    out = upd(s, "t", {"state": {"desired": {"a": None, "b": {"y": None}}}})
    assert out["update/delta"]["state"] == {"b": {"x": 1}, "l": [1, 2]}
    upd(s, "t", {"state": {"desired": None}})
    got = dict(s.handle("t", "get", b"{}"))["get/accepted"]
    assert got["state"] == {"reported": {"l": [1]}} and "delta" not in got["state"]


def test_metadata_follows_the_state_when_nulls_delete_keys():
    """AWS keeps metadata only for keys the state holds: a null deletes the key's metadata too, and a
    null on a key that never existed creates none (ours kept, and even created, such entries)."""
    s = Shadows()
    upd(s, "t", {"state": {"desired": {"a": 1, "b": {"x": 1, "y": 2}, "ghost": None}}})
    got = dict(s.handle("t", "get", b""))["get/accepted"]
    assert set(got["metadata"]["desired"]) == {"a", "b"}
    upd(s, "t", {"state": {"desired": {"a": None, "b": {"y": None}}}})
    got = dict(s.handle("t", "get", b""))["get/accepted"]
    assert got["state"]["desired"] == {"b": {"x": 1}}
    assert set(got["metadata"]["desired"]) == {"b"} and set(got["metadata"]["desired"]["b"]) == {"x"}
    upd(s, "t", {"state": {"desired": {"b": 5}}})  # an object replaced by a value: one leaf timestamp
    got = dict(s.handle("t", "get", b""))["get/accepted"]
    assert list(got["metadata"]["desired"]["b"]) == ["timestamp"]


def test_a_section_emptied_by_nulls_is_dropped():
    s = Shadows()
    upd(s, "t", {"state": {"desired": {"a": 1}, "reported": {"a": 1}}})
    upd(s, "t", {"state": {"desired": {"a": None}}})
    got = dict(s.handle("t", "get", b""))["get/accepted"]
    assert got["state"] == {"reported": {"a": 1}} and "desired" not in got["metadata"]


def test_a_recreated_shadow_continues_the_deleted_ones_version():
    s = Shadows()
    for i in range(3):
        upd(s, "t", {"state": {"reported": {"n": i}}})
    assert dict(s.handle("t", "delete", b""))["delete/accepted"]["version"] == 3
    out = upd(s, "t", {"state": {"reported": {"n": 9}}})
    assert out["update/accepted"]["version"] == 4 and out["update/documents"]["previous"] is None
    assert dict(s.handle("t", "get", b""))["get/accepted"]["state"] == {"reported": {"n": 9}}
    s.db.execute("UPDATE deleted SET ts = ts - 49 * 3600")  # past AWS's 48 hours: a new shadow
    s.handle("t", "delete", b"")
    s.db.execute("UPDATE deleted SET ts = ts - 49 * 3600")
    assert upd(s, "t", {"state": {"reported": {"n": 1}}})["update/accepted"]["version"] == 1


def test_rejections_carry_aws_codes_and_messages():
    s = Shadows()
    assert upd(s, "t", b"{nope")["update/rejected"] == {
        "code": 400,
        "message": "Payload contains invalid json",
        "timestamp": pytest.approx(0, abs=1e10),
    }
    assert upd(s, "t", {"clientToken": "c"})["update/rejected"]["message"] == "Missing required node: state"
    assert upd(s, "t", {"clientToken": "c"})["update/rejected"]["clientToken"] == "c"
    assert upd(s, "t", {"state": 5})["update/rejected"]["code"] == 400
    assert (
        upd(s, "t", {"state": {"bogus": {}}})["update/rejected"]["message"] == "State contains an invalid node: 'bogus'"
    )
    assert dict(s.handle("t", "get", b""))["get/rejected"] == {
        "code": 404,
        "message": "No shadow exists with name: 't'",
        "timestamp": pytest.approx(0, abs=1e10),
    }
    upd(s, "t", {"state": {"reported": {"x": 1}}})
    conflict = upd(s, "t", {"state": {"reported": {"x": 2}}, "version": 7})["update/rejected"]
    assert (conflict["code"], conflict["message"]) == (409, "Version conflict")
    assert "update/accepted" in upd(s, "t", {"state": {"reported": {"x": 2}}, "version": 1})
    assert dict(s.handle("t", "delete", b""))["delete/accepted"]["version"] == 2
    assert dict(s.handle("t", "delete", b""))["delete/rejected"]["code"] == 404


def test_shadows_persist_in_sqlite(tmp_path):
    db = str(tmp_path / "s.sqlite")
    upd(Shadows(db), "lamp", {"state": {"desired": {"on": True}}})
    got = dict(Shadows(db).handle("lamp", "get", b""))["get/accepted"]
    assert got["state"]["desired"] == {"on": True} and got["version"] == 1


def test_rejections_reach_the_cloud_client_over_mosquitto(shadow_service, cloud):
    with pytest.raises(ShadowError) as e:
        cloud.shadow_get("never-seen")
    assert e.value.code == 404
    doc = cloud.shadow_update("lamp", {"desired": {"on": True}})
    with pytest.raises(ShadowError) as e:
        cloud.shadow_update("lamp", {"desired": {"on": False}}, version=doc["version"] + 5)
    assert (e.value.code, e.value.message) == (409, "Version conflict")
    assert cloud.shadow_delete("lamp")["version"] == 1
