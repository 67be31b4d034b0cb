"""`ccm check`: the acceptance a CI run does, run against a real module (or the virtual product).

Each check is a row — what was checked, PASS / FAIL / SKIP, a figure (round-trip times, heap), and for a
failure what to do about it. Checks that need an earlier one (the cloud needs the link) are skipped when
it failed, so the first failing row is the one to mend.

    rows = run_checks(link, broker="mqtt://127.0.0.1:1883", host_image=None)
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccm.rpc import RpcError

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
LOW_HEAP = 16 * 1024  # below this a module has no room left for a TLS handshake or an OTA chunk


@dataclass
class Row:
    check: str
    result: str
    figure: str = ""
    advice: str = ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _timed(fn: Callable[[], Any], n: int = 1) -> tuple[Any, float]:
    """fn's last value and the median of n runs' durations (seconds)."""
    times, value = [], None
    for _ in range(n):
        t0 = time.monotonic()
        value = fn()
        times.append(time.monotonic() - t0)
    return value, statistics.median(times)


def _why(e: Exception) -> str:
    return e.message if isinstance(e, RpcError) else str(e)


def run_checks(
    link,
    port: str,
    broker: str | None = None,
    host_image: str | None = None,
    host_addr: int = 0x08000000,
    timeout: float = 5.0,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Check the CCM behind `link` (any transport of bundle.transport). `broker`: mqtt://HOST:PORT to reach
    the CCM's cloud from this PC (default: its own mqtt.server); `host_image`: a host firmware to flash
    over OTA, as the last check."""
    rows: list[Row] = []

    def add(row: Row) -> Row:
        rows.append(row)
        if progress:
            progress(row)
        return row

    # -- the link -------------------------------------------------------------------------------
    try:
        info, rtt = _timed(lambda: link.call("Sys.GetInfo", None, timeout), 5)
    except (TimeoutError, RpcError, OSError) as e:
        serial = "://" not in port
        advice = (
            "no answer on the UART: cross TX and RX (CCM TX = IO25 to the adapter's RX, CCM RX = IO26 to its TX), "
            "join GND, check the baud rate (--baud, host.rpc.uart.baud_rate) and that the CCM is powered and booted"
            if serial
            else f"no answer from {port}: is the CCM on that network/broker, and is the address right?"
        )
        add(Row("link: Sys.GetInfo", FAIL, "", f"{_why(e)}. {advice}"))
        for name in ("config", "heap", "cloud connection", "RPC from the cloud", "shadow round trip", "host OTA"):
            add(Row(name, SKIP, "", "needs the link"))
        return rows
    device = info.get("device_id", "?")
    add(Row("link: Sys.GetInfo", PASS, f"{_ms(rtt)} round trip, {device}, firmware {info.get('fw_version')}"))

    # -- config ---------------------------------------------------------------------------------
    try:
        mqtt, _ = _timed(lambda: link.call("Config.Get", {"key": "mqtt"}, timeout))
        add(Row("config", PASS, f"mqtt.enable={mqtt.get('enable')} mqtt.server={mqtt.get('server') or '-'}"))
    except (TimeoutError, RpcError) as e:
        mqtt = {}
        add(Row("config", FAIL, "", f"Config.Get failed: {_why(e)}. Reflash the firmware (ccm flash)"))

    # -- heap -----------------------------------------------------------------------------------
    free, low = info.get("heap_free"), info.get("heap_low")
    if free is None:
        add(Row("heap", SKIP, "not reported (a CCM on CPython has no fixed heap)"))
    else:
        figure = f"{free} B free" + (f", low-water {low} B" if low is not None else "")
        least = low if low is not None else free
        ok = least >= LOW_HEAP
        advice = (
            "" if ok else "little heap left: use a module with PSRAM or the frozen image (README, supported modules)"
        )
        add(Row("heap", PASS if ok else FAIL, figure, advice))
    faults = info.get("faults") or {}

    # -- the cloud --------------------------------------------------------------------------------
    cloud_info = info.get("cloud") or {}
    if not mqtt.get("enable"):
        add(
            Row(
                "cloud connection",
                FAIL,
                "",
                "mqtt.enable is false: ccm config-set mqtt.enable=true mqtt.server=HOST:PORT",
            )
        )
    elif not cloud_info.get("connected"):
        why = cloud_info.get("reason") or faults.get("cloud") or "not connected"
        add(
            Row(
                "cloud connection",
                FAIL,
                "",
                f"{why}. Check mqtt.server ({mqtt.get('server')}) is reachable from the module, the broker runs "
                "(ccm cloud), and the TLS/credential settings (mqtt.ssl_*, mqtt.user)",
            )
        )
    else:
        add(Row("cloud connection", PASS, f"connected to {mqtt.get('server')}, {cloud_info.get('queued', 0)} queued"))
    if rows[-1].result != PASS:
        for name in ("RPC from the cloud", "shadow round trip", "host OTA"):
            add(Row(name, SKIP, "", "needs the cloud connection"))
        return rows

    from cloud.client import CloudClient, ShadowError

    url = broker or "mqtt://" + mqtt.get("server", "")
    try:
        cloud = CloudClient(url, client_id=f"ccm-check-{os.getpid()}").start()
    except (OSError, ConnectionError, TimeoutError) as e:
        add(Row("RPC from the cloud", FAIL, "", f"this PC cannot reach the broker {url}: {e}. Give --broker"))
        add(Row("shadow round trip", SKIP, "", "needs the broker"))
        add(Row("host OTA", SKIP, "", "needs the broker"))
        return rows
    try:
        try:
            _, rtt = _timed(lambda: cloud.call(device, "Sys.GetInfo", None, timeout), 5)
            add(Row("RPC from the cloud", PASS, f"{_ms(rtt)} round trip over {url}"))
        except (TimeoutError, RpcError) as e:
            add(Row("RPC from the cloud", FAIL, "", f"{_why(e)}. Is --broker the broker the module uses?"))
        nonce = int(time.time() * 1000) % 1000000

        def report_seen():
            link.call("Shadow.Report", {"ccm_check": nonce}, timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if cloud.shadow_get(device, timeout).get("state", {}).get("reported", {}).get("ccm_check") == nonce:
                    return True
                time.sleep(0.05)
            raise TimeoutError(f"the reported state did not reach the shadow within {timeout:g} s")

        try:
            _, rtt = _timed(report_seen)
            add(Row("shadow round trip", PASS, f"{_ms(rtt)} Shadow.Report until the shadow shows it"))
            link.call("Shadow.Report", {"ccm_check": None}, timeout)
        except (TimeoutError, RpcError, ShadowError) as e:
            add(
                Row(
                    "shadow round trip",
                    FAIL,
                    "",
                    f"{_why(e)}. A shadow service must answer on $aws/things/…: run `ccm cloud`, or use AWS IoT",
                )
            )
    finally:
        cloud.stop()

    # -- host OTA -------------------------------------------------------------------------------
    if not host_image:
        add(Row("host OTA", SKIP, "", "give --host-image FILE to flash the host over OTA"))
    else:
        add(_host_ota(link, port, host_image, host_addr, timeout))
    return rows


def _host_ota(link, port: str, image: str, addr: int, timeout: float) -> Row:
    from bundle.ota_client import OtaFailed, push
    from pc import fwbundle

    with tempfile.TemporaryDirectory(prefix="ccm-check-") as d:
        out = os.path.join(d, "host.zip")
        try:
            fwbundle.create(out, "check", "ccm_host", [f"host_fw:type=STM32,src={image},addr={addr:#x}"], "check")
        except (fwbundle.SpecError, OSError) as e:
            return Row("host OTA", FAIL, "", f"cannot make a bundle of {image}: {e}")
        data = open(out, "rb").read()
    chunk = 2048 if "://" in port else 512
    t0 = time.monotonic()
    try:
        st = push(link, data, chunk, call_timeout=timeout)
    except (OtaFailed, TimeoutError, RpcError) as e:
        return Row("host OTA", FAIL, "", f"{_why(e)}. Check BOOT0 (IO14) and NRST (IO27) are wired to the host")
    dt = time.monotonic() - t0
    return Row(
        "host OTA", PASS, f"{len(data)} B in {dt:.1f} s ({len(data) / dt / 1024:.1f} KiB/s): {st.get('message')}"
    )
