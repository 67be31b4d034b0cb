"""The few file operations the CCM's state files need, the same on a module's LittleFS and on a PC:
a small JSON record read forgivingly and written atomically, quiet removal, nested directories."""

import json
import os

BLE_BONDS = "ble_bonds.json"  # ccm/ble.py's pairing bonds, on the filesystem's root: a factory reset forgets them


def read_json(path):
    """The JSON object in `path`, or {} when it is missing, broken or not an object: state files start
    empty and a half-written one never stops a boot."""
    try:
        with open(path) as f:
            d = json.load(f)  # parsed from the file: the text is never one piece of heap
    except (OSError, ValueError):
        return {}
    return d if type(d) is dict else {}


def write_json(path, obj):
    """Write through a temporary file and a rename: a power cut leaves the old record or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)  # written as it is encoded: no string of the whole record on the heap
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def makedirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        cur = cur + part if (not cur or cur == "/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass
