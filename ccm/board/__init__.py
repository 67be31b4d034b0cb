"""The hardware seam: what the CCM asks of the board it runs on.

`Board` names every call and gives the defaults a board may leave out, so the rest of the firmware asks
the board (`board.radio`, `board.host_pins`) instead of probing it. The boards: `esp32.py` (the module),
`unix.py` and `wasm.py` (MicroPython's unix and WebAssembly ports, in tests), and the virtual board of
the simulator (`sim/board.py`, CPython).
"""


def is_address(host):
    """True for a dotted IPv4 address (no lookup needed)."""
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


class Board:
    arch = "?"
    fw_id = ""
    mac = ""
    fs_dir = ""  # the filesystem's root ("" is /)
    config_path = None  # where Config.Save writes; None: nowhere (the settings live in memory only)
    radio = False  # wlan_* and ap_*: WiFi provisioning runs
    host_pins = False  # pin_write reaches the host's BOOT0/NRST: host OTA can flash it
    open_connection = None  # async (host, port, ssl=None) -> (reader, writer); None: asyncio's
    uart_note = None  # what open_uart could not do as configured (shown in Sys.GetInfo faults)

    async def open_uart(self, config):
        """The host UART (host.rpc.uart.*) as a stream: read(n), write(b), drain()."""
        raise NotImplementedError

    def uart_parity(self, parity, baud=None):
        """8E1 ("E") for the STM32 bootloader, 8N1 ("N") for JSON-RPC; a board without parity ignores it."""

    def heap_free(self):
        return None

    def heap_short(self, need):
        """True when fewer than `need` bytes are free after a collection: work that needs them is left to a
        boot of its own (never where the board does not say what is free)."""
        if self.heap_free() is None:
            return False
        import gc

        gc.collect()
        return self.heap_free() < need

    def heap_peak(self):
        """The most heap live at once since the last call (sampled), or None where nothing samples it."""
        return None

    def loaded(self):
        """The firmware's modules in memory now (what holds bytecode on a stock image), or None where the
        board does not say (the measuring unix board does: what loads when is guarded by tests)."""
        return None

    def fs_free(self):
        """Bytes free on the filesystem, or None when unknown."""
        return None

    def clock_valid(self):
        """False while the clock was never set (an ESP32 starts at 2000-01-01)."""
        return True

    def set_clock(self, unix_seconds):
        pass

    def dns_server(self):
        """The DNS server ("ip" or "ip:port") names are resolved with, without blocking the loop
        (ccm/dns.py); None: the runtime's own getaddrinfo()."""
        return None

    async def connect(self, host, port, ssl=None):
        """A TCP (or TLS) connection as (reader, writer), for MQTT and downloads: a name is resolved
        first through dns_server() without blocking the loop (ccm/dns.py, loaded only then), and TLS keeps
        the name for SNI and the certificate check; then open_connection (the board's, or asyncio's)."""
        import asyncio

        op = self.open_connection or asyncio.open_connection
        server = self.dns_server()
        if server is not None and not is_address(host):
            from ccm.dns import resolve

            ip = await resolve(host, server)
            if ssl is not None:
                return await op(ip, port, ssl=ssl, server_hostname=host)
            host = ip
        return await (op(host, port, ssl=ssl) if ssl is not None else op(host, port))

    def http_address(self, config):
        """(host, port) the /rpc server listens on, or None: no network, no server."""
        return None

    def http_listening(self, server):
        """The /rpc server is bound (port 0 took a free port: a board may keep the one it got)."""

    def bluetooth(self):
        """MicroPython's `bluetooth` module (BLE(), UUID) when the board has a BLE radio, else None."""
        return None

    def ota_partition(self):
        """The next OTA app partition (esp32.Partition's block API), or None: no app updates."""
        return None

    def app_mark_valid(self):
        pass

    def app_rollback(self):
        pass

    def reboot(self):
        """True: boot again in this process (virtual boards); a module resets and never returns."""
        return True
