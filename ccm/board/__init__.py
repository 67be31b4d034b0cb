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

    def _nothing(self, *args, **kwargs):
        return None

    # What a board leaves out answers nothing (None). One function for them all: on a stock image each
    # function is heap, and these are overridden by every board that has the feature.
    uart_parity = _nothing  # (parity, baud=None): 8E1 ("E") for the STM32 bootloader, 8N1 ("N") for JSON-RPC
    heap_free = _nothing  # (): bytes free on the heap; None: the board does not say
    heap_peak = _nothing  # (): the most heap live at once since the last call (sampled); None: not sampled
    # (): the firmware's modules in memory now (what holds bytecode on a stock image); None: not said (the
    # measuring unix board says: what loads when is guarded by tests)
    loaded = _nothing
    fs_free = _nothing  # (): bytes free on the filesystem; None: unknown
    set_clock = _nothing  # (unix_seconds): set the clock (SNTP's answer)
    # (): the DNS server ("ip" or "ip:port") names are resolved with, without blocking the loop
    # (ccm/dns.py); None: the runtime's own getaddrinfo()
    dns_server = _nothing
    http_address = _nothing  # (config): (host, port) the /rpc server listens on; None: no network, no server
    # (server): the /rpc server is bound (port 0 took a free port: a board may keep the one it got)
    http_listening = _nothing
    bluetooth = _nothing  # (): MicroPython's `bluetooth` module (BLE(), UUID) with a BLE radio; None: none
    ota_partition = _nothing  # (): the next OTA app partition (esp32.Partition's block API); None: no app updates
    app_mark_valid = _nothing  # (): the running app is the one to keep (ESP-IDF's rollback)
    app_rollback = _nothing  # (): boot the previous app next

    def heap_short(self, need):
        """True when fewer than `need` bytes are free after a collection: work that needs them is left to a
        boot of its own (never where the board does not say what is free)."""
        if self.heap_free() is None:
            return False
        import gc

        gc.collect()
        return self.heap_free() < need

    def clock_valid(self):
        """False while the clock was never set (an ESP32 starts at 2000-01-01)."""
        return True

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

    def reboot(self):
        """True: boot again in this process (virtual boards); a module resets and never returns."""
        return True
