"""The configuration's schema and what changes a configuration (ccm/config.py holds the live tree).

- `DEFAULTS`: every key with its compiled-in default, whose type a new value must have; `RULES`: what a
  type check lets through that a module could not use.
- `apply(tree, patch, acl)`: a patch checked — unknown keys and wrong types are refused naming the key,
  and so is any key the `conf_acl` globs do not allow — then deep-merged.
- `save(config)`: only what differs from the factory configuration, atomically: a temporary file,
  flushed and synced, then renamed over the old one. A power cut at any instant leaves the old file or
  the new one, never a broken one.

Loaded to build the tree at boot and for each Config.Set/Save, dropped between: on a stock image this
module's code and the DEFAULTS tree would otherwise hold a plain ESP32's heap for the whole boot.
"""

import json
import os

from ccm import rpc
from ccm.config import REDACTED, is_secret

DEFAULTS = {
    "device": {"id": "ccm-000000"},
    "conf_acl": "*",  # comma-separated globs of the keys Config.Set may change; "-glob" denies
    "wifi": {
        "sta": {"enable": False, "ssid": "", "pass": ""},
        "ap": {"enable": True, "ssid": "CCM-??????", "pass": "", "ip": "192.168.4.1"},
    },
    "provision": {
        "btn": {"pin": 0, "pull_up": True, "hold_ms": 0},  # factory reset: pin held low this long (0: off)
        "led": {"pin": -1, "active_high": True},  # status LED
        "stable_state": 3,
        "timeout": 300,
        "max_state": 3,
    },
    "rpc": {
        "max_frame_size": 4096,  # longest JSON-RPC frame accepted on any link
        "host_timeout_ms": 5000,  # how long a forwarded call waits for the host
        "jsonrpc_member": False,  # emit "jsonrpc":"2.0" (costs 17 bytes a frame on the UART)
        "max_pending": 16,  # calls waiting for the host at once
        "tx_queue": 16,  # frames waiting to be written to the host
        "http": {"enable": True, "port": 80, "timeout_ms": 10000},  # a request's head and body must come in time
        # HTTP Digest on /rpc with the module's password: `ccm build` gives each module its own, else it makes
        # one at first boot (Sys.Credentials over the UART). open=true: no password, knowingly (a warning)
        "auth": {"user": "admin", "password": "", "realm": "ccm", "open": False},
    },
    "host": {
        "rpc": {
            "uart": {
                "num": 1,
                "baud_rate": 115200,
                "tx_pin": 25,
                "rx_pin": 26,
                "fc_enable": False,
                "rts_pin": -1,  # with fc_enable: the UART's RTS/CTS pins, both needed (-1: none)
                "cts_pin": -1,
            }
        },
        "ota": {
            "stm32": {
                "boot0_pin": 14,  # driven low from boot on, high only while entering the bootloader
                "rst_pin": 27,
                "rst_open_drain": True,  # pull NRST low and let go: safe beside the host's own reset circuit
                "uart": {"baud_rate": 115200},
            }
        },
    },
    "mqtt": {
        "enable": False,
        "server": "",  # host:port
        "client_id": "",  # empty: device.id
        "user": "",
        "pass": "",
        "keep_alive": 60,  # seconds
        "ssl_ca_cert": "",  # CA file: verify the broker
        "ssl_cert": "",  # client certificate (mutual TLS, e.g. AWS IoT)
        "ssl_key": "",
        "ssl_insecure": False,  # TLS without checking the broker's certificate: only knowingly
        "queue_size": 32,  # messages held while offline; beyond it new ones are refused and counted
        "reconnect_timeout_min_ms": 500,
        "reconnect_timeout_max_ms": 30000,
    },
    # RPC over BLE (ccm/ble.py, mos's rpc-gatts): advertised while unprovisioned, and for window_s after a
    # boot once provisioned; name: what it advertises (empty: device.id)
    "ble": {"enable": False, "name": "", "window_s": 300},
    "sntp": {"enable": True, "server": "pool.ntp.org"},  # the clock TLS needs, set when the board's is not
    "shadow": {"enable": True, "topic_prefix": "$aws/things/{device.id}/shadow"},
    "ota": {
        "require_signature": False,  # refuse bundles without a valid signature by ota.pubkey
        "pubkey": "",  # PEM file of the ECDSA P-256 key bundles are signed with
        "poll_url": "",  # a URL giving {version, url}: a version not installed yet is pulled and applied
        "poll_interval_s": 3600,
        "fetch_stall_s": 10,  # a download with no data for this long fails
        "ssl_ca_cert": "",  # CA file to verify https:// bundle servers (without it https:// is refused)
        "ssl_insecure": False,  # https:// without checking the server's certificate: only knowingly
    },
}


def _copy(v):
    if type(v) is dict:
        return {k: _copy(x) for k, x in v.items()}
    if type(v) is list:
        return [_copy(x) for x in v]
    return v


def merge(base, over):
    """Deep-merge dict `over` into a deep copy of `base` (nothing is shared with either)."""
    out = _copy(base)
    for k, v in over.items():
        if type(v) is dict and type(out.get(k)) is dict:
            out[k] = merge(out[k], v)
        else:
            out[k] = _copy(v)
    return out


def diff(base, tree):
    """What `tree` changes relative to `base`: the part worth saving."""
    out = {}
    for k, v in tree.items():
        b = base.get(k)
        if type(v) is dict and type(b) is dict:
            d = diff(b, v)
            if d:
                out[k] = d
        elif k not in base or b != v:
            out[k] = v
    return out


def glob_match(pattern, name):
    """`*` any run of characters (dots included), `?` one character; MicroPython has no fnmatch."""
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(glob_match(pattern[1:], name[i:]) for i in range(len(name) + 1))
    return bool(name) and (pattern[0] == "?" or pattern[0] == name[0]) and glob_match(pattern[1:], name[1:])


def acl_allows(acl, key):
    """First matching glob decides; a leading `-` denies. Nothing matches: denied."""
    for pattern in acl.split(","):
        pattern = pattern.strip()
        if not pattern:
            continue
        deny = pattern[0] == "-"
        if pattern[0] in "+-":
            pattern = pattern[1:]
        if glob_match(pattern, key):
            return not deny
    return False


def _type_name(v):
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", dict: "an object"}.get(
        type(v), "a value"
    )


def _invalid(msg):
    return rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: " + msg)


def check(patch, *acls):
    """The dotted keys a patch changes; RpcError(-32602/-32003) naming the first bad key: a key the
    defaults do not have, a value of another type or against RULES, a key one of `acls` does not allow."""
    if type(patch) is not dict:
        raise _invalid("config must be an object")
    changed = []
    _check(patch, DEFAULTS, "", changed)
    for acl in acls:
        for key in changed:
            if not acl_allows(acl, key):
                raise rpc.RpcError(rpc.FORBIDDEN, "forbidden: %s is locked by conf_acl" % key)
    return changed


def _check(patch, schema, prefix, changed):
    for k, v in patch.items():
        key = prefix + k
        if type(schema) is not dict or k not in schema:
            raise _invalid("unknown key %s" % key)
        want = schema[k]
        if type(want) is dict:
            if type(v) is not dict:
                raise _invalid("%s must be an object" % key)
            _check(v, want, key + ".", changed)
        elif is_secret(key) and v == REDACTED:
            continue  # a redacted value sent back unchanged
        elif type(v) is not type(want) and not (type(want) is float and type(v) is int):
            raise _invalid("%s must be %s, not %s" % (key, _type_name(want), _type_name(v)))
        else:
            rule = RULES.get(key)
            if rule is not None and not rule[0](v):
                raise _invalid("%s %s" % (key, rule[1]))
            changed.append(key)


def apply(tree, patch, *acls):
    """Check a patch, then merge it into `tree`. Returns the dotted keys changed."""
    changed = check(patch, *acls)
    for key in changed:
        node = tree
        *parents, leaf = key.split(".")
        src = patch
        for p in parents:
            node = node[p]
            src = src[p]
        node[leaf] = src[leaf]
    return changed


def save(config):
    """Write what differs from the factory configuration: temp file, flush, fsync, rename (atomic on
    POSIX and LittleFS)."""
    if not config.path:
        raise rpc.RpcError(rpc.INTERNAL_ERROR, "internal error: this board has no place to save config")
    tmp = config.path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(diff(merge(DEFAULTS, config.factory), config.tree), f)
        f.flush()
        _fsync(f)
    os.rename(tmp, config.path)
    _sync_dir(config.path)


def load_saved(path):
    """The saved overlay; a file that does not parse is ignored (defaults win), never fatal."""
    from ccm.files import remove

    remove(path + ".tmp")  # an interrupted save left it; the real file is intact
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if type(saved) is dict else {}


def set_rpc(router, config, params, call):
    """Config.Set {config, save?, reboot?} (ccm/config.py's serve)."""
    p = rpc.take(params, config=(dict, rpc.REQUIRED), save=(bool, False), reboot=(bool, False))
    extra = getattr(call.src, "acl", None)
    apply(config.tree, p["config"], config.get("conf_acl"), *([extra] if extra is not None else []))
    if p["save"] or p["reboot"]:
        save(config)
    if p["reboot"]:
        router.request_reboot(100)
    router.config_changed()
    return True


def save_rpc(router, config, params, call):
    """Config.Save {reboot?} (ccm/config.py's serve)."""
    p = rpc.take(params, reboot=(bool, False))
    save(config)
    if p["reboot"]:
        router.request_reboot(100)
    return True


def _wpa_pass(v):
    return v == "" or 8 <= len(v) <= 63  # WPA2: 8 to 63 characters; empty for an open network


def _host_port(v):
    host, _, port = v.rpartition(":")
    return v == "" or (port.isdigit() and 0 < int(port) < 65536 and bool(host)) or ":" not in v


# Values a type check lets through that a module could not use (the radio refuses a short WPA password
# with an OSError that used to end provisioning): refused at Config.Set, before anything is stored.
RULES = {
    "wifi.ap.pass": (_wpa_pass, "must be empty (an open AP) or 8 to 63 characters (WPA2)"),
    "wifi.sta.pass": (_wpa_pass, "must be empty (an open network) or 8 to 63 characters (WPA2)"),
    "mqtt.server": (_host_port, "must be host or host:port, the port a number from 1 to 65535"),
}


def _fsync(f):
    if hasattr(os, "fsync"):
        os.fsync(f.fileno())
    elif hasattr(os, "sync"):
        os.sync()


def _sync_dir(path):
    """The rename itself must reach the disk too (POSIX); LittleFS commits it atomically."""
    if hasattr(os, "O_DIRECTORY"):
        d = path.rsplit("/", 1)[0] if "/" in path else "."
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
