"""The configuration tree (docs/protocol.md, provisioning; the manual §10–§13): compiled-in defaults
(ccm/schema.py) overlaid by the image's factory settings and the saved file.

- `Config.get("a.b")` reads a key or a sub-tree.
- `Config.set(patch, acl)` deep-merges a patch, type-checked against the defaults; unknown keys and
  wrong types are refused naming the key, and so is any key the `conf_acl` globs do not allow.
- `Config.save()` writes only what differs from the factory configuration, atomically.
- `redacted()` is the tree as callers may see it: secrets (`*.pass`, `*.key`, `*password*`, `*token*`)
  are `"***"` when set and `""` when not; `"***"` sent back by `Config.Set` leaves the secret as it is.

Only reading is held for the whole boot: the schema and the code that changes the tree load for a
change and go after it (ccm/schema.py).
"""

from ccm import rpc
from ccm.compat import unload

REDACTED = "***"


def is_secret(key):
    leaf = key.rsplit(".", 1)[-1]
    return leaf in ("pass", "key", "ssl_key") or "password" in leaf or "token" in leaf or "secret" in leaf


class Config:
    """The live configuration of one boot. `path` is where it is saved (None: not persisted)."""

    def __init__(self, overrides=None, path=None):
        self.path = path
        self.factory = overrides or {}  # what the image sets over DEFAULTS: a reset returns to this
        from ccm import schema

        self.tree = schema.merge(schema.merge(schema.DEFAULTS, self.factory), schema.load_saved(path) if path else {})
        unload("ccm.schema")

    @property
    def base(self):
        """The factory configuration (DEFAULTS under the image's settings), made when asked for."""
        from ccm import schema

        try:
            return schema.merge(schema.DEFAULTS, self.factory)
        finally:
            unload("ccm.schema")

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
            raise rpc.RpcError(rpc.INVALID_PARAMS, "invalid params: no such key: %s" % key)
        return self._redact(node, (key + ".") if key else "")

    def _redact(self, node, prefix):
        if type(node) is not dict:
            return (REDACTED if node else "") if is_secret(prefix[:-1]) else node
        return {k: self._redact(v, prefix + k + ".") for k, v in node.items()}

    # -- changing (ccm/schema.py) ---------------------------------------------------------------
    def check(self, patch, *acls):
        """The dotted keys a patch changes; RpcError(-32602/-32003) naming the first bad key (one that
        an `acls` glob list does not allow: forbidden)."""
        return self._schema("check", patch, *acls)

    def set(self, patch, *acls):
        """Config.Set: check, then merge. Returns the dotted keys changed."""
        return self._schema("apply", self.tree, patch, *acls)

    def save(self):
        """Write what differs from the factory configuration (atomically: see ccm/schema.py)."""
        self._schema("save", self)

    def _schema(self, name, *args):
        from ccm import schema

        try:
            return getattr(schema, name)(*args)
        finally:
            unload("ccm.schema")


_MISSING = object()


def serve(router, config):
    """Config.Get/Set/Save on the router. A caller may carry its own `acl` (the provisioning AP's
    `wifi.*`), checked on top of conf_acl. Set and Save are ccm/schema.py's, loaded for the call."""

    def get(params, call):
        return config.redacted(rpc.take(params, key=((str, None), None))["key"])

    def change(name):
        return lambda params, call: config._schema(name, router, config, params, call)

    router.add("Config.Get", get)
    router.add("Config.Set", change("set_rpc"))
    router.add("Config.Save", change("save_rpc"))
