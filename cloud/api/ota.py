"""/api/bundles and /api/ota: stored bundles, rollouts to devices, and /fw/KEY/NAME.zip where devices
fetch them (KEY is a second secret that appears only in the URLs given to devices)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import AUTH, fleet, service
from cloud.api.models import OtaStart
from cloud.bundle_server import BundleRefused

router = APIRouter(tags=["ota"], dependencies=AUTH)
downloads = APIRouter(include_in_schema=False)


@router.get("/api/bundles")
def list_bundles(request: Request) -> list[dict]:
    """Stored bundles: name, version, platform, parts, size."""
    return request.app.state.store.list()


@router.post(
    "/api/bundles",
    status_code=201,
    responses={422: {"description": "not a bundle a CCM would take; detail says why"}},
)
async def upload_bundle(
    request: Request,
    file: Annotated[UploadFile, File(description="a bundle zip from `ccm create-fw-bundle`")],
) -> dict:
    """Upload a bundle: checked in full (manifest, parts' sizes and SHA-256) before it is kept."""

    def chunks():
        while True:
            chunk = file.file.read(1 << 16)
            if not chunk:
                return
            yield chunk

    try:
        return await run_in_threadpool(request.app.state.store.save, file.filename or "", chunks())
    except BundleRefused as e:
        raise HTTPException(422, str(e)) from None


@router.delete("/api/bundles/{name}", status_code=204)
def delete_bundle(request: Request, name: str):
    try:
        request.app.state.store.delete(name)
    except (FileNotFoundError, BundleRefused):
        raise HTTPException(404, f"no bundle {name!r}") from None


@router.post("/api/ota", status_code=202)
def start_ota(body: OtaStart, request: Request) -> dict:
    """Update devices to a stored bundle; follow it with GET /api/ota/{id} (or the dashboard)."""
    state = request.app.state
    try:
        entry = state.store.entry(body.bundle)
    except (FileNotFoundError, BundleRefused):
        raise HTTPException(404, f"no bundle {body.bundle!r}") from None
    if not entry.get("version"):
        raise HTTPException(422, f"{body.bundle} has no version in its manifest: a device could not report it")
    unknown = [d for d in body.devices if not fleet(request).known(d)]
    if unknown:
        raise HTTPException(404, f"no device {', '.join(map(repr, unknown))}")
    base = (state.public_url or str(request.base_url)).rstrip("/")
    url = f"{base}/fw/{state.fw_key}/{entry['name']}"
    return state.rollouts.start(entry, url, body.devices, body.via, service(request))


@router.get("/api/ota")
def list_ota(request: Request) -> list[dict]:
    """Rollouts, newest first, each device's state: pending, progress, success or error."""
    return request.app.state.rollouts.list()


@router.get("/api/ota/{rollout_id}")
def get_ota(request: Request, rollout_id: str) -> dict:
    rollouts = request.app.state.rollouts
    r = rollouts.items.get(rollout_id)
    if r is None:
        raise HTTPException(404, f"no rollout {rollout_id!r}")
    return rollouts.view(r)


@downloads.get("/fw/{key}/{name}")
def download(request: Request, key: str, name: str):
    if not hmac.compare_digest(key.encode(), request.app.state.fw_key.encode()):
        raise HTTPException(404)
    try:
        return FileResponse(request.app.state.store.path(name), media_type="application/zip")
    except (FileNotFoundError, BundleRefused):
        raise HTTPException(404) from None
