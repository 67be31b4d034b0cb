"""The configuration tree: compiled-in defaults overlaid by the saved file (DESIGN §5).

This is the read side the rest of the firmware needs; Config.Get/Set/Save, the ACL and atomic saving
build on it.
"""

DEFAULTS = {
    "device": {"id": "ccm-000000"},
    "rpc": {
        "max_frame_size": 4096,  # longest JSON-RPC frame accepted on any link
        "host_timeout_ms": 5000,  # how long a forwarded call waits for the host
        "jsonrpc_member": False,  # emit "jsonrpc":"2.0" (costs 17 bytes a frame on the UART)
        "max_pending": 16,  # calls waiting for the host at once
        "tx_queue": 16,  # frames waiting to be written to the host
    },
    "host": {"rpc": {"uart": {"num": 1, "baud_rate": 115200, "tx_pin": 25, "rx_pin": 26, "fc_enable": False}}},
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
        "queue_size": 32,  # messages held while offline; beyond it new ones are refused and counted
        "reconnect_timeout_min_ms": 500,
        "reconnect_timeout_max_ms": 30000,
    },
    "shadow": {"enable": True, "topic_prefix": "$aws/things/{device.id}/shadow"},
}


def merge(base, over):
    """Deep-merge dict `over` into a copy of `base`."""
    out = dict(base)
    for k, v in over.items():
        if type(v) is dict and type(out.get(k)) is dict:
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class Config:
    def __init__(self, overrides=None):
        self.tree = merge(DEFAULTS, overrides or {})

    def get(self, key, default=None):
        """A dotted key (`rpc.max_frame_size`) or a sub-tree; `default` when absent."""
        node = self.tree
        for part in key.split("."):
            if type(node) is not dict or part not in node:
                return default
            node = node[part]
        return node
