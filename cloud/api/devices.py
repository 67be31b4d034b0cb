"""/api/devices: presence, versions, history, and the live event stream."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from cloud.api.deps import AUTH, device_or_404, fleet
from cloud.api.models import DeviceDetail, DeviceSummary

router = APIRouter(tags=["devices"], dependencies=AUTH)


@router.get("/api/devices", response_model=list[DeviceSummary])
def list_devices(request: Request):
    """Every device seen on the presence topic or with a shadow: online state, last seen, versions."""
    return fleet(request).devices()


@router.get("/api/devices/{device_id}", response_model=DeviceDetail)
def get_device(request: Request, device_id: str, refresh: bool = Query(False, description="ask Sys.GetInfo now")):
    d = device_or_404(request, device_id)
    if refresh and d.online:
        fleet(request).refresh_info(device_id)
    return {**d.summary(), "info": d.info}


@router.get("/api/devices/{device_id}/history")
def get_history(request: Request, device_id: str) -> dict[str, list[tuple[float, float]]]:
    """Numeric series over time, [[unix time, value], …]: reported.* from the shadow, info.* from Sys.GetInfo."""
    device_or_404(request, device_id)
    return fleet(request).history(device_id)


@router.get("/api/events")
async def events(request: Request, device: str | None = Query(None, description="also its shadow changes")):
    """A text/event-stream: `device` events (presence, versions, OTA) for all devices, `shadow` events
    (new version) for the one named."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=2000)
    watcher = fleet(request)

    def put(ev: dict) -> None:
        try:
            queue.put_nowait(ev)
        except asyncio.QueueFull:
            pass

    def on_event(ev: dict) -> None:
        if ev["type"] == "shadow" and ev["id"] != device:
            return
        loop.call_soon_threadsafe(put, ev)

    watcher.events.subscribe(on_event)

    async def stream():
        try:
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                try:
                    ev = await asyncio.wait_for(queue.get(), 5)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {ev['type']}\ndata: {json.dumps(ev, separators=(',', ':'))}\n\n"
        finally:
            watcher.events.unsubscribe(on_event)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
