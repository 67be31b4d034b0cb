"""Composition root: configuration + board → the CCM's tasks."""

import asyncio

from ccm import config as config_mod
from ccm import rpc
from ccm.compat import sleep_ms_async, ticks_add, ticks_diff, ticks_ms, unload
from ccm.config import Config
from ccm.files import read_json
from ccm.link import HostLink
from ccm.router import Router

OTA_METHODS = ("OTA.Status", "OTA.Begin", "OTA.Write", "OTA.End", "OTA.Update")  # the receiver's (serve())
HEALTHY_MS = 30000  # a boot that ran this long without failing counts as good
LAST_WORDS_MS = 2000  # how long a reboot waits for the will, DISCONNECT and the host's replies to leave
# MicroPython collects garbage only when an allocation fails, by default: by then what lives is scattered
# among what died, and the holes left do not fit the next upload's message or module. Collecting each
# time 1/GC_EVERY of the heap has been allocated keeps the heap packed: on the 32-bit build with .mpy
# files every flow then passes at 108 KiB, where it needed 116 (bench/memory.py). A fraction, not a
# fixed size: a collection takes longer the larger the heap (a module with PSRAM has megabytes).
GC_EVERY = 24


class Ccm:
    """One boot of the module: configuration loaded from the board's filesystem, the router, the host
    link over the board's UART, provisioning, the /rpc server and (when configured) the cloud.

    Only the link and Config.* are essential. Every other part (OTA, WiFi and /rpc, the cloud, a host
    update to finish) is started and supervised on its own: when it fails it is reported — Sys.GetInfo
    `faults`, and Cloud.Status to the host for the cloud — and started again after a back-off; the
    link goes on. `safe_mode` (a reason) runs the link on factory settings and nothing optional."""

    def __init__(self, board, overrides=None, config=None, safe_mode=None):
        self.board = board
        self.overrides = overrides
        self.config = config or Config(overrides, board.config_path)
        self.safe_mode = safe_mode
        self.faults = {}  # part -> why it is not running
        self.router = Router(self.config, board, self._schedule_reboot)
        self.router.status["faults"] = lambda: dict(self.faults)
        if safe_mode:
            self.router.status["safe_mode"] = lambda: safe_mode
        config_mod.serve(self.router, self.config)
        self.router.add("Sys.Credentials", self._credentials)
        if self.config.get("rpc.auth.open"):
            self.router.status["warnings"] = lambda: ["rpc.auth.open: /rpc serves anyone on the network, no password"]
        self.guarded = False  # run_forever counts this boot (ccm/boot.py's BootGuard): told when it has lasted
        self.link = None
        self._host_update = None  # ccm/ota/host.py's HostUpdate, while one is needed (host_update)
        self.mqtt = None
        self.cloud = None
        self.provisioner = None
        self.http = None  # the /rpc Listener
        self.ble = None  # RPC over BLE, with ble.enable
        self.http_address = None
        self.ota = None  # the OTA receiver, once something needs it (load_ota)
        self.ota_listeners = []  # fn(status) the receiver is to tell of every change, once loaded
        self._jobs = []  # work that ends with this boot
        self._stop = asyncio.Event()
        self._reboot_delay = -1

    def _schedule_reboot(self, delay_ms):
        self._reboot_delay = delay_ms
        self._stop.set()

    async def _serve_link(self):
        try:
            await self.link.run(self.hello())
        except Exception as e:  # the link itself failed: this boot is over, and counts as a failure
            self._link_error = e
        finally:
            self._stop.set()

    _link_error = None

    def hello(self):
        h = self.router.hello()
        if self.safe_mode:
            h["safe_mode"] = self.safe_mode
        return h

    # -- optional parts ---------------------------------------------------------------------------
    def fault(self, part, error):
        """Record why an optional part is not running (Sys.GetInfo `faults`); the cloud's also reaches
        the host as Cloud.Status {connected: false, reason}. Never raises: with no heap left even to say
        it (a MemoryError while telling), whoever reports the fault still starts the part again."""
        try:
            self._fault(part, error)
        except Exception:  # noqa: BLE001, S110 - nothing more can be said; the part's restart must go on
            pass

    def _fault(self, part, error):
        why = error if type(error) is str else "%s: %s" % (type(error).__name__, error)
        self.faults[part] = why
        print("ccm: %s: %s" % (part, why))
        if part == "cloud" and self.mqtt is None:  # it never started: its methods say why
            self.router.status["cloud"] = lambda: {"connected": False, "reason": why}

            def offline(params, call):
                raise rpc.RpcError(rpc.NOT_CONNECTED, "not connected: the cloud did not start: " + why)

            from ccm import cloud

            for name in cloud.methods():
                self.router.add(name, offline)
        if part == "cloud" and self.link is not None:
            self.link.notify("Cloud.Status", {"connected": False, "reason": why})

    def _optional(self, part, start):
        """Start an optional part: its tasks, or [] and a fault when starting it raised."""
        try:
            return start() or []
        except Exception as e:
            self.fault(part, e)
            return []

    def supervise(self, part, factory, backoff_ms=1000, max_ms=60000):
        """A task running `factory()` (a coroutine) again after a back-off whenever it fails."""

        async def loop():
            delay = backoff_ms
            while True:
                try:
                    await factory()
                    return
                except Exception as e:  # CancelledError is not an Exception: cancelling still works
                    self.fault(part, e)
                await sleep_ms_async(delay)
                delay = min(delay * 2, max_ms)
                self.faults.pop(part, None)

        return asyncio.create_task(loop())

    async def _housekeeping(self, healthy_ms):
        """This boot counts as good after `healthy_ms`; the uptime is read every minute (see Uptime)."""
        await sleep_ms_async(healthy_ms)
        if self.guarded:
            boot_guard(self.board.fs_dir, "healthy")
        while True:
            self.router.uptime.seconds()
            await sleep_ms_async(60000)

    async def run(self):
        """Run until a reboot is requested (returns True) or the UART closes (returns False). An error of
        the link itself is raised (the boot failed); optional parts never raise here."""
        link_config = Config(self.overrides) if self.safe_mode else self.config  # factory UART settings
        stream = await self.board.open_uart(link_config)
        if self.board.uart_note:
            self.faults["uart"] = self.board.uart_note
        self.link = HostLink(stream, self.router, link_config)
        self.link.set_parity = self.board.uart_parity
        self.router.host = self.link
        tasks = [asyncio.create_task(self._serve_link()), asyncio.create_task(self._housekeeping(HEALTHY_MS))]
        await sleep_ms_async(0)  # Sys.Init goes first: whatever the other parts report comes after it
        if not self.safe_mode:
            from ccm import parts

            tasks += parts.start(self)
            unload("ccm.parts")
        try:
            await self._stop.wait()
            if self._link_error is not None:
                raise self._link_error
            if self._reboot_delay >= 0:
                if self.guarded:
                    boot_guard(self.board.fs_dir, "healthy")  # a reboot asked for is not a failure
                await sleep_ms_async(self._reboot_delay)
                await self._last_words(LAST_WORDS_MS)
                return True
            return False
        finally:
            self._stop_parts(tasks + self._jobs)

    async def _last_words(self, ms):
        """Before a reset: the MQTT session ends cleanly (the will published, then DISCONNECT, so the
        broker does not publish it again) and every frame queued for the host (the reply to Sys.Reboot
        or OTA.Revert) is written. A module resets the moment this returns; at most `ms`."""
        if self.mqtt is not None:
            self.mqtt.stop()
        end = ticks_add(ticks_ms(), ms)
        while ticks_diff(end, ticks_ms()) > 0:
            mqtt_done = self.mqtt is None or self.mqtt.sockets_open == 0
            if mqtt_done and (self.link is None or self.link.flushed()):
                return
            await sleep_ms_async(10)

    def _stop_parts(self, tasks):
        """End this boot's parts. Stopping one that failed or never started must not fail the boot (nor
        swallow the cancel that ends it), so each stop is on its own."""
        for part in (self.mqtt, self.http, self.ble):
            if part is not None:
                try:
                    part.stop()
                except Exception as e:
                    print("ccm: stopping %s: %s" % (type(part).__name__, e))
        for t in tasks:
            t.cancel()
        self.router.host = None

    def _credentials(self, params, call):
        """Sys.Credentials: the /rpc user and password, to the host on the UART only."""
        rpc.take(params)
        if call.src is None or call.src is not self.link:
            raise rpc.RpcError(rpc.FORBIDDEN, "forbidden: Sys.Credentials is served over the UART only")
        c = self.config
        return {"user": c.get("rpc.auth.user"), "password": c.get("rpc.auth.password"), "open": c.get("rpc.auth.open")}

    def spawn(self, coro):
        """Run background work that belongs to this boot (a reboot cancels it)."""
        t = asyncio.create_task(coro)
        self._jobs.append(t)
        return t

    def fs_root(self):
        return self.board.fs_dir

    def load_ota(self):
        """The OTA receiver, loaded (and serving OTA.*) the first time something needs it."""
        if self.ota is None:
            from ccm.ota.receiver import attach

            self.ota = attach(self)
        return self.ota

    def take_ota_delta(self, delta):
        """The shadow's taker for desired.ota: ccm/ota/shadow_ota.py, loaded for a delta that holds it."""
        if type(delta) is not dict or "ota" not in delta:
            return delta
        from ccm.ota.shadow_ota import take

        return take(self.cloud.shadow, self.load_ota, delta)

    def report_ota(self, status):
        """reported.ota on each change the receiver tells of (ccm/ota/shadow_ota.py)."""
        from ccm.ota.shadow_ota import report

        report(self.cloud.shadow, self.load_ota(), status)

    def serve_ota_on_demand(self):
        """OTA.* load the receiver at their first call (it serves them from then on) — but OTA.Status,
        which a client polls across the reboot into its update, answers from ota/state.json without it."""
        for name in OTA_METHODS:
            if name == "OTA.Status":  # until the receiver loads (its serve() takes the name over then)
                self.router.add(name, self.on_demand("ccm.ota.states", "serve_idle_status"))
            else:
                self.router.add(name, self._ota_first_call(name))

    def _ota_first_call(self, name):
        def first(params, call):
            self.load_ota()  # serves OTA.* from now on: hand this call to it
            return self.router.local.methods[name](params, call)

        return first

    def on_demand(self, module, name):
        """A router handler whose code loads for each call and goes after it: `module`'s
        `name(ccm, params, call)` — a method called once in a while need not sit in a stock image's heap."""

        def handler(params, call):
            try:
                return getattr(__import__(module, None, None, (name,)), name)(self, params, call)
            finally:
                unload(module)

        return handler

    @property
    def host_update(self):
        """Flashing the host (ccm/ota/host.py), loaded when something needs it: a host OTA, the pins at
        boot, a flash a reboot cut short."""
        if self._host_update is None:
            from ccm.ota.host import HostUpdate

            self._host_update = HostUpdate(self.link, self.board, self.config, self.fs_root(), self.spawn)
        return self._host_update

    def drop_host_update(self):
        self._host_update = None
        unload("ccm.ota.host")

    async def start_after(self, first):
        """Once `first` — a host flash a reboot left — is over: flashed, a reboot, and the next boot starts
        the network and the cloud on a heap the flasher never held (a plain ESP32's stock image has room
        for one or the other; the outcome waits in ota/state.json for OTA.Status). Not flashed (the host
        does not take it), they start now: the module stays reachable, and the next boot tries again."""
        try:
            await first
        except Exception:  # noqa: BLE001 - its outcome is reported by whoever flashed (the OTA receiver)
            pass
        if self.host_update.pending() is None:  # (or the work was an update's check, done either way)
            self._schedule_reboot(0)
            return
        from ccm import parts

        self._jobs += parts.start_connected(self)
        unload("ccm.parts")

    # -- what runs on after the parts started (ccm/parts.py) ----------------------------------------
    def unprovisioned(self):
        """True while the WiFi provisioning waits on its access point for settings (the AP's rules)."""
        if self.provisioner is None:  # no radio: never unprovisioned
            return False
        from ccm.provision import AP  # (loaded with the provisioner)

        return self.provisioner.state == AP

    def http_server(self, keep):
        """What ccm/listener.py serves a connection with: ccm/http.py, loaded per request."""
        from ccm.http import RpcServer

        return RpcServer(self.config, self.router, self.unprovisioned, keep)

    async def run_ble(self):
        """RPC over BLE (ccm/ble.py), loaded only with ble.enable."""
        from ccm import ble

        await ble.serve(self)

    def serve_http(self):
        return self.http.serve(self.http_address[0], self.http_address[1], self.board.http_listening)

    async def run_cloud(self):
        if self.mqtt.ssl is not None:
            await self.set_clock()
        await self.mqtt.run()

    async def set_clock(self, tries=0):
        """TLS checks certificate dates: when the board's clock was never set (an ESP32 starts at
        2000-01-01), set it over SNTP first (ccm/sntp.py, loaded until it is) — whoever needs it first:
        the MQTT connection or an HTTPS download. `tries`: give up after so many (0: never). True once
        the clock is valid."""
        if self.board.clock_valid():
            return True
        from ccm import sntp

        ok = await sntp.set_clock(self, tries)
        if ok:
            unload("ccm.sntp", "ccm.dns")
        return ok


async def run_forever(board, overrides=None, switch=True, setup=None):
    """Boot, serve, and boot again after every Sys.Reboot: the board decides what a reboot is.
    `switch`: swap in a staged self-update at each boot (main.py does it itself on the module).
    `setup(ccm)` runs at each boot before the link comes up. A boot that fails (an exception out of the
    CCM) is recorded and counts towards safe mode; the board reboots as after Sys.Reboot."""
    _collect_early()
    while True:
        if switch:
            from ccm.ota.selfupdate import SelfUpdate

            SelfUpdate(board.fs_dir, board).at_boot()
        ccm = None
        try:
            ccm = Ccm(board, overrides, safe_mode=boot_guard(board.fs_dir, "begin"))
            ccm.guarded = True
            if setup is not None:
                setup(ccm)
            rebooting = await ccm.run()
        except Exception as e:
            why = "%s: %s" % (type(e).__name__, e)
            print("ccm: this boot failed:", why)
            boot_guard(board.fs_dir, "failed", why)
            rebooting = True
            await sleep_ms_async(200)  # as a module's reset takes a moment: no tight crash loop
        if not rebooting or not board.reboot():
            return


def boot_guard(fs_dir, what, *args):
    """BootGuard's `what` ("begin", "healthy", "failed") on the filesystem at `fs_dir`: ccm/boot.py, loaded
    for it and dropped after — it is called a few times a boot, and a stock image's heap is short."""
    from ccm.boot import BootGuard

    try:
        return getattr(BootGuard(fs_dir), what)(*args)
    finally:
        unload("ccm.boot")


def _collect_early():
    """gc.threshold at 1/GC_EVERY of the heap (MicroPython; CPython's collector is not this one)."""
    import gc

    if hasattr(gc, "threshold") and hasattr(gc, "mem_free"):
        gc.collect()
        gc.threshold((gc.mem_free() + gc.mem_alloc()) // GC_EVERY)


def factory_config(path="/conf0.json"):
    """The vendor's configuration that `ccm build --config` wrote next to the firmware."""
    return read_json(path)


def run_module(board, factory, reset):
    """The CCM until power-off, as a module runs it. Whatever escapes the boot loop — an exception, a
    KeyboardInterrupt from a Ctrl-C on the REPL's UART, anything but SystemExit — is recorded for the next
    boot's safe-mode count and `reset()` is called (a module resets and never returns; a test board
    returns True and the CCM boots again on a fresh event loop). It never falls back to the REPL."""
    while True:
        try:
            asyncio.run(run_forever(board, factory, switch=False))
            return
        except SystemExit:
            raise
        except BaseException as e:  # noqa: B036 - KeyboardInterrupt too: the host link must stay up
            _stopped(board, e)
        if not reset():
            return
        asyncio.new_event_loop()  # the interrupted boot's tasks go with the old loop


def _stopped(board, e):
    """Record why the CCM stopped, for the next boot's safe-mode count. Never raises, so the reset comes:
    with no heap to say it — exhausted, or locked for good (the unix port raises a Ctrl-C from its signal
    handler, so it may land inside a garbage collection, which then never ends) — only the exception's
    name is printed, which allocates nothing."""
    try:
        why = "%s: %s" % (type(e).__name__, e)
        print("ccm: the CCM stopped:", why)
        boot_guard(board.fs_dir, "failed", why)
    except Exception:  # noqa: BLE001 - a MemoryError here must not keep the module from its reset
        print("ccm: the CCM stopped:", type(e).__name__)


def start():
    """Entry point on the module (main.py calls this): the ESP32 board, the CCM until power-off."""
    import machine

    try:
        import micropython

        micropython.kbd_intr(-1)  # Ctrl-C on UART0 (the REPL) is a byte, not a KeyboardInterrupt
    except (ImportError, AttributeError):
        pass
    try:
        from ccm.board.esp32 import Esp32Board

        board = Esp32Board()
    except Exception as e:  # e.g. a MemoryError or a bad pin before the CCM was up
        boot_guard("", "failed", "%s: %s" % (type(e).__name__, e))
        machine.reset()
    run_module(board, factory_config(), machine.reset)
    machine.reset()
