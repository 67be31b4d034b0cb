"""Pushing a bundle to a CCM, as `mos ota` does (Status → Begin → Write… → End), then following the
apply stage through OTA.Status until the CCM says success or error. Works over any transport of
bundle/transport.py: serial, http://, ws://, mqtt://.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from ccm.rpc import RpcError

IDLE, PROGRESS, ERROR, SUCCESS = 0, 1, 2, 3
MIN_CHUNK = 256  # what a chunk is halved down to when the CCM runs out of heap for one
MAX_CHUNK = 2900  # base64 of it plus mos's envelope stays under rpc.max_frame_size (4096)


class OtaFailed(Exception):
    """The update did not happen; the message is the CCM's reason."""


def push(
    link,
    data: bytes,
    chunk_size: int = 2048,
    commit_timeout: int = 0,
    timeout: int = 600,
    call_timeout: float = 5.0,
    progress: Callable[[str, int, int], None] | None = None,
    apply_timeout: float = 600.0,
    wait: bool = True,
) -> dict:
    """Upload `data` and (with `wait`) follow the update to its end. Returns the final OTA.Status."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise OtaFailed(f"--chunk-size must be 1..{MAX_CHUNK} bytes (the frame limit of the CCM)")
    try:
        st = link.call("OTA.Status", None, call_timeout)
    except RpcError as e:
        hint = " (its firmware predates OTA: flash a newer one)" if e.code == -32601 else ""
        raise OtaFailed(f"OTA.Status refused: {e.message}{hint}") from None
    # 3 (success) is reported until someone reads it once: this read did, so the CCM is idle again (an
    # update the dashboard or the shadow started, nobody polled)
    if st.get("state") not in (IDLE, ERROR, SUCCESS):
        raise OtaFailed(
            f"an update is already in progress on the CCM ({st.get('stage') or 'state %s' % st.get('state')})"
        )
    hint = st.get("chunk")  # the size this module's heap takes best (a plain ESP32: 1 KiB when tight)
    if type(hint) is int and 1 <= hint < chunk_size:
        chunk_size = hint
    try:
        link.call("OTA.Begin", {"size": len(data), "timeout": timeout, "commit_timeout": commit_timeout}, call_timeout)
    except RpcError as e:
        raise OtaFailed(f"OTA.Begin refused: {e.message}") from None
    total = len(data)
    off = 0
    while off < total:
        size = chunk_size
        for attempt in range(3):  # mos retries a chunk three times at the same offset
            chunk = {"offset": off, "data": base64.b64encode(data[off : off + size]).decode()}
            try:
                link.call("OTA.Write", chunk, call_timeout)
                break
            except (RpcError, TimeoutError) as e:
                if attempt == 2 or (isinstance(e, RpcError) and e.code == -32602):
                    _abort(link, call_timeout)
                    why = e.message if isinstance(e, RpcError) else str(e)
                    raise OtaFailed(f"write failed at offset {off}: {why}") from None
                if isinstance(e, RpcError) and e.code == -32603:  # its heap is short: smaller pieces from here,
                    size = chunk_size = max(MIN_CHUNK, size // 2)  # after a pause (often it is short only while
                    time.sleep(0.2 * (attempt + 1))  # it sends an MQTT message or has yet to collect)
        off += size
        if progress:
            progress("upload", min(off, total), total)
    try:
        link.call("OTA.End", None, max(call_timeout, 120.0))
    except RpcError as e:
        raise OtaFailed(e.message) from None
    if not wait:
        return link.call("OTA.Status", None, call_timeout)
    return follow(link, progress, apply_timeout, call_timeout)


def _abort(link, call_timeout: float) -> None:
    try:
        link.call("OTA.End", None, call_timeout)  # as mos does: the CCM drops the partial upload
    except (RpcError, TimeoutError, OSError):
        pass


AWAY_S = 10.0  # how long the CCM may not answer: a reboot into its own update
# ... and when it said it reboots to flash its host: that boot flashes before its network is up


def follow(link, progress=None, apply_timeout: float = 600.0, call_timeout: float = 5.0, interval: float = 0.1) -> dict:
    """Poll OTA.Status until the update ends; the success status, or OtaFailed with the CCM's message.
    The CCM may be away for a while: AWAY_S after a reboot into its own update, up to `apply_timeout`
    after it said it reboots to flash its host (a stock image on a plain ESP32 flashes at boot)."""
    from bundle.transport import PortError

    deadline = time.monotonic() + apply_timeout
    away_since = None
    rebooting = False
    while time.monotonic() < deadline:
        try:
            st = link.call("OTA.Status", None, call_timeout)
            away_since = None
        except (TimeoutError, OSError, RpcError, PortError):
            now = time.monotonic()
            away_since = away_since or now
            if not rebooting and now - away_since > AWAY_S:
                raise OtaFailed("the CCM stopped answering OTA.Status") from None
            time.sleep(max(interval, 0.5))
            continue
        state = st.get("state")
        rebooting = "reboot" in str(st.get("stage") or "")
        if state == SUCCESS:
            return st
        if state == ERROR:
            raise OtaFailed(st.get("message") or "the CCM reports an error")
        if state == IDLE:
            last = st.get("last") or {}
            if last.get("state") == SUCCESS:
                return dict(st, state=SUCCESS, message=last.get("message"))
            if last.get("state") == ERROR:
                raise OtaFailed(last.get("message") or "the CCM reports an error")
            return st
        if progress and st.get("stage"):
            progress(st["stage"], int(st.get("progress", 0)), 100)
        time.sleep(interval)
    raise OtaFailed(f"the update did not finish within {apply_timeout:g} s")
