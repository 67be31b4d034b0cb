"""/api/devices/{id}/rpc and /config: calls to a device over MQTT, its own methods or its host's."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request

from cloud.api.deps import AUTH, call
from cloud.api.models import ConfigPatch, RpcResult

rpc_router = APIRouter(tags=["rpc"], dependencies=AUTH)
config_router = APIRouter(tags=["config"], dependencies=AUTH)


@rpc_router.post(
    "/api/devices/{device_id}/rpc/{method}",
    response_model=RpcResult,
    responses={
        502: {"description": "the device answered with an error: {error: {code, message, data?}}"},
        503: {"description": "the device is offline"},
        504: {"description": "no answer in time"},
    },
)
def rpc(
    request: Request,
    device_id: str,
    method: str,
    params: Annotated[Any, Body(description="the method's params, any JSON")] = None,
    timeout: float = Query(10.0, gt=0, le=900),
):
    """Call a method on the device over MQTT: the CCM's own (Sys.GetInfo, Config.Get, …) or its host's (e.g. Sum).
    The body is the params as JSON, with or without `Content-Type: application/json`."""
    if isinstance(params, bytes | bytearray | str):  # FastAPI hands over a body it was not told is JSON as is
        try:
            params = json.loads(params) if params.strip() else None
        except ValueError:
            raise HTTPException(400, "the body must be the method's params as JSON, e.g. [2, 3]") from None
    return call(request, device_id, method, params, timeout)


@config_router.get("/api/devices/{device_id}/config", response_model=RpcResult)
def get_config(request: Request, device_id: str, key: str | None = Query(None, description="a sub-tree, e.g. mqtt")):
    """Config.Get: the device's configuration (secrets come back redacted)."""
    return call(request, device_id, "Config.Get", {"key": key} if key else None, 10.0)


@config_router.patch("/api/devices/{device_id}/config", response_model=RpcResult)
def set_config(request: Request, device_id: str, body: ConfigPatch):
    """Config.Set (+ Config.Save unless save=false): the device's conf_acl decides what may change."""
    params: dict = {"config": body.config}
    if body.save:
        params["save"] = True
    if body.reboot:
        params["reboot"] = True
    return call(request, device_id, "Config.Set", params, 10.0)
