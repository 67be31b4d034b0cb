"""The configuration tree (docs/protocol.md, provisioning; the manual §10–§13): compiled-in defaults overlaid by the saved file.

- `Config.get("a.b")` reads a key or a sub-tree.
- `Config.set(patch, acl)` deep-merges a patch, type-checked against the defaults; unknown keys and
  wrong types are refused naming the key, and so is any key the `conf_acl` globs do not allow.
- `Config.save()` writes only what differs from the defaults, atomically: a temporary file, flushed
  and synced, then renamed over the old one. A power cut at any instant leaves the old file or the new
  one, never a broken one.
- `redacted()` is the tree as callers may see it: secrets (`*.pass`, `*.key`, `*password*`, `*token*`)
  are `"***"` when set and `""` when not; `"***"` sent back by `Config.Set` leaves the secret as it is.
"""

import json
import os

from ccm import rpc
from ccm.files import remove

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

REDACTED = "***"


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


def is_secret(key):
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("pass", "key", "ssl_key") or "password" in leaf or "token" in leaf or "secret" in leaf


def leaves(tree, prefix=""):
    """(dotted key, value) for every leaf of a tree."""
    for k, v in tree.items():
        key = prefix + k
        if type(v) is dict and v:
            yield from leaves(v, key + ".")
        else:
            yield key, v


def _type_name(v):
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", dict: "an object"}.get(
        type(v), "a value"
    )


def _invalid(msg):
    return rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: " + msg)


class Config:
    """The live configuration of one boot. `path` is where it is saved (None: not persisted)."""

    def __init__(self, overrides=None, path=None):
        self.path = path
        self.factory = overrides or {}  # what the image sets over DEFAULTS: a reset returns to this
        self.tree = merge(merge(DEFAULTS, self.factory), self.load_saved() if path else {})

    @property
    def base(self):
        """The factory configuration (DEFAULTS under the image's settings), made when asked for: one
        tree fewer on the heap for the whole boot."""
        return merge(DEFAULTS, self.factory)

    # -- reading ------------------------------------------------------------------------------
    def get(self, key, default=None):
        """A dotted key (`rpc.max_frame_size`) or a sub-tree; `default` when absent."""
        node = self.tree
        if not key:
            return node
        for part in key.split("."):
            if type(node) is not dict or part not in node:
                return default
            node = node[part]
        return node

    def redacted(self, key=None):
        """Config.Get: the tree or a sub-tree, with secrets hidden."""
        node = self.get(key or "", _MISSING)
        if node is _MISSING:
            raise _invalid("no such key: %s" % key)
        return self._redact(node, (key + ".") if key else "")

    def _redact(self, node, prefix):
        if type(node) is not dict:
            return (REDACTED if node else "") if is_secret(prefix[:-1]) else node
        return {k: self._redact(v, prefix + k + ".") for k, v in node.items()}

    # -- changing -----------------------------------------------------------------------------
    def check(self, patch, acl=None):
        """The dotted keys a patch changes; RpcError(-32602/-32003) naming the first bad key."""
        if type(patch) is not dict:
            raise _invalid("config must be an object")
        changed = []
        self._check(patch, DEFAULTS, "", changed)
        if acl is not None:
            for key in changed:
                if not acl_allows(acl, key):
                    raise rpc.RpcError(rpc.FORBIDDEN, "forbidden: %s is locked by conf_acl" % key)
        return changed

    def _check(self, patch, schema, prefix, changed):
        for k, v in patch.items():
            key = prefix + k
            if type(schema) is not dict or k not in schema:
                raise _invalid("unknown key %s" % key)
            want = schema[k]
            if type(want) is dict:
                if type(v) is not dict:
                    raise _invalid("%s must be an object" % key)
                self._check(v, want, key + ".", changed)
            elif is_secret(key) and v == REDACTED:
                continue  # a redacted value sent back unchanged
            elif type(v) is not type(want) and not (type(want) is float and type(v) is int):
                raise _invalid("%s must be %s, not %s" % (key, _type_name(want), _type_name(v)))
            else:
                rule = RULES.get(key)
                if rule is not None and not rule[0](v):
                    raise _invalid("%s %s" % (key, rule[1]))
                changed.append(key)

    def set(self, patch, acl=None):
        """Config.Set: check, then merge. Returns the dotted keys changed."""
        changed = self.check(patch, acl)
        for key in changed:
            node = self.tree
            *parents, leaf = key.split(".")
            src = patch
            for p in parents:
                node = node[p]
                src = src[p]
            node[leaf] = src[leaf]
        return changed

    # -- persistence --------------------------------------------------------------------------
    def load_saved(self):
        """The saved overlay; a file that does not parse is ignored (defaults win), never fatal."""
        remove(self.path + ".tmp")  # an interrupted save left it; the real file is intact
        try:
            with open(self.path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return {}
        return saved if type(saved) is dict else {}

    def save(self):
        """Write what differs from the defaults: temp file, flush, fsync, rename (atomic on POSIX and LittleFS)."""
        if not self.path:
            raise rpc.RpcError(rpc.INTERNAL_ERROR, "internal error: this board has no place to save config")
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(diff(self.base, self.tree), f)
            f.flush()
            _fsync(f)
        os.rename(tmp, self.path)
        _sync_dir(self.path)


_MISSING = object()


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


def serve(router, config):
    """Config.Get/Set/Save on the router. A caller may carry its own `acl` (the provisioning AP's
    `wifi.*`), checked on top of conf_acl."""

    def acl_check(call, patch):
        config.check(patch, config.get("conf_acl"))
        extra = getattr(call.src, "acl", None)
        if extra is not None:
            config.check(patch, extra)

    def get(params, call):
        return config.redacted(rpc.take(params, key=((str, None), None))["key"])

    def set_(params, call):
        p = rpc.take(params, config=(dict, rpc.REQUIRED), save=(bool, False), reboot=(bool, False))
        acl_check(call, p["config"])
        config.set(p["config"])
        if p["save"] or p["reboot"]:
            config.save()
        if p["reboot"]:
            router.request_reboot(100)
        router.config_changed()
        return True

    def save(params, call):
        p = rpc.take(params, reboot=(bool, False))
        config.save()
        if p["reboot"]:
            router.request_reboot(100)
        return True

    router.add("Config.Get", get)
    router.add("Config.Set", set_)
    router.add("Config.Save", save)


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
