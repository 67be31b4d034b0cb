"""What the routers share: the fleet, the shadow service and the bundle store of the app a request
reached (`request.app.state`), and a device call mapped to HTTP (its own error → 502 with its code,
offline → 503, no answer → 504)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from ccm.rpc import RpcError
from cloud.auth import require_token
from cloud.fleet import Fleet, NotFound, Offline

AUTH = [Depends(require_token)]


def fleet(request: Request) -> Fleet:
    return request.app.state.fleet


def service(request: Request):
    return request.app.state.service


def device_or_404(request: Request, device_id: str):
    try:
        return fleet(request).get(device_id)
    except NotFound:
        raise HTTPException(404, f"no device {device_id!r} (never seen on the presence topic, no shadow)") from None


def call(request: Request, device_id: str, method: str, params: Any, timeout: float):
    device_or_404(request, device_id)
    try:
        return {"result": fleet(request).call(device_id, method, params, timeout)}
    except RpcError as e:
        err: dict = {"code": e.code, "message": e.message}
        if e.data is not None:
            err["data"] = e.data
        return JSONResponse({"error": err}, status_code=502)
    except Offline as e:
        raise HTTPException(503, str(e)) from None
    except TimeoutError as e:
        raise HTTPException(504, str(e)) from None
