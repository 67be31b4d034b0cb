"""/api/devices/{id}/shadow: the device's shadow, read and changed through the shadow service."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from cloud.api.deps import AUTH, device_or_404, service
from cloud.api.models import ShadowPatch

router = APIRouter(tags=["shadow"], dependencies=AUTH)


@router.get("/api/devices/{device_id}/shadow")
def get_shadow(request: Request, device_id: str) -> dict:
    """The shadow as AWS's get answers it: state.desired, state.reported, state.delta, metadata, version."""
    device_or_404(request, device_id)
    ok, doc = service(request).request(device_id, "get")
    if not ok:
        raise HTTPException(doc.get("code", 404), doc.get("message"))
    return doc


@router.patch("/api/devices/{device_id}/shadow")
def patch_shadow(request: Request, device_id: str, body: ShadowPatch) -> dict:
    """Change state.desired (the device gets the delta); the accepted document comes back."""
    device_or_404(request, device_id)
    req: dict = {"state": {"desired": body.desired}}
    if body.version is not None:
        req["version"] = body.version
    ok, doc = service(request).request(device_id, "update", req)
    if not ok:
        raise HTTPException(doc.get("code", 400), doc.get("message"))
    return doc
