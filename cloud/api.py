"""The REST API and dashboard of `ccm cloud`: the open, local counterpart of mDash (DESIGN §4).

    app = create_app(fleet, service, store, token="…")
    server = WebServer(app, "127.0.0.1", 8080).start()   # uvicorn in a thread; server.url

FastAPI on uvicorn: the endpoints are typed functions, FastAPI validates requests and writes the
OpenAPI description (/api/openapi.json, browsable at /api/docs with Swagger UI served from the
swagger-ui-bundle package, not a CDN). Every /api route needs the token: `Authorization: Bearer TOKEN`,
HTTP Basic with TOKEN as the password, or the cookie the dashboard's login sets. Devices fetch bundles
from /fw/KEY/NAME.zip, KEY being a second secret that only appears in the URLs given to devices.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ccm.rpc import RpcError
from cloud.bundle_server import BundleRefused, BundleStore
from cloud.fleet import Fleet, NotFound, Offline

COOKIE = "ccm_token"
BEARER = HTTPBearer(auto_error=False, description="the token `ccm cloud` printed (or --token)")
ASSETS = os.path.join(os.path.dirname(__file__), "dashboard")


# -- what the API takes and gives (the OpenAPI description is made from these) --------------------
class DeviceSummary(BaseModel):
    id: str
    online: bool = Field(description="from the retained presence topic {id}/status")
    last_seen: float | None = Field(None, description="Unix time of the device's last message")
    since: float | None = Field(None, description="Unix time presence last changed")
    fw_version: str | None = Field(None, description="the CCM's firmware (Sys.GetInfo fw_version)")
    host_version: str | None = Field(None, description="the host MCU's firmware (Sys.GetInfo host.fw_version)")
    host_app: str | None = None
    info_at: float | None = Field(None, description="when Sys.GetInfo last answered")
    info_error: str | None = Field(None, description="why the last Sys.GetInfo failed")
    ota: dict | None = Field(None, description="the shadow's reported.ota {state, progress, message, version}")


class DeviceDetail(DeviceSummary):
    info: dict | None = Field(None, description="the last Sys.GetInfo answer")


class ShadowPatch(BaseModel):
    desired: dict[str, Any] | None = Field(description="merged into state.desired; a null value deletes its key")
    version: int | None = Field(None, description="only apply when the shadow is at this version (else 409)")


class ConfigPatch(BaseModel):
    config: dict[str, Any] = Field(description="merged into the device's config (its conf_acl applies)")
    save: bool = Field(True, description="persist it (Config.Save)")
    reboot: bool = Field(False, description="reboot after saving")


class RpcResult(BaseModel):
    result: Any = None


class Login(BaseModel):
    token: str


class OtaStart(BaseModel):
    bundle: str = Field(description="a stored bundle's name, as GET /api/bundles lists it")
    devices: list[str] = Field(min_length=1, description="device ids")
    via: Literal["shadow", "rpc"] = Field(
        "shadow", description="shadow: set desired.ota {url, version}; rpc: call OTA.Update {url}"
    )


def _rpc_error(e: RpcError) -> JSONResponse:
    err: dict = {"code": e.code, "message": e.message}
    if e.data is not None:
        err["data"] = e.data
    return JSONResponse({"error": err}, status_code=502)


class Rollouts:
    """OTA rollouts started from the API; each device's progress is read from its reported.ota."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.items: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ota rpc")

    def start(self, entry: dict, url: str, devices: list[str], via: str, service) -> dict:
        rid = str(next(self._ids))
        r = {
            "id": rid,
            "bundle": entry["name"],
            "version": entry["version"],
            "url": url,
            "via": via,
            "started": time.time(),
            "errors": {},
            "devices": devices,
        }
        self.items[rid] = r
        for dev in devices:
            if via == "shadow":
                ok, doc = service.request(
                    dev, "update", {"state": {"desired": {"ota": {"url": url, "version": r["version"]}}}}
                )
                if not ok:
                    r["errors"][dev] = doc.get("message", "refused")
            else:
                self._pool.submit(self._rpc, r, dev, url)
        return self.view(r)

    def _rpc(self, r: dict, dev: str, url: str) -> None:
        try:
            self.fleet.call(dev, "OTA.Update", {"url": url}, timeout=900)
        except (RpcError, TimeoutError, Offline, NotFound, ConnectionError) as e:
            r["errors"][dev] = str(e)

    def view(self, r: dict) -> dict:
        out = {k: v for k, v in r.items() if k not in ("errors", "devices")}
        states = {}
        for dev in r["devices"]:
            try:
                d = self.fleet.get(dev)
            except NotFound:
                states[dev] = {"state": "error", "progress": 0, "message": "unknown device"}
                continue
            states[dev] = self._device_state(r, d)
        out["devices"] = states
        counts = [s["state"] for s in states.values()]
        out["done"] = all(c in ("success", "error") for c in counts)
        out["succeeded"] = counts.count("success")
        out["failed"] = counts.count("error")
        return out

    @staticmethod
    def _device_state(r: dict, d) -> dict:
        ota = d.ota or {}
        fresh = (d.ota_at or 0) >= r["started"] - 1
        version = r["version"]
        st = {"state": "pending", "progress": 0, "message": "", "version": ota.get("version")}
        if (
            ota.get("version") == version
            and ota.get("state") in (0, 3)
            and (fresh or ota.get("target") in (None, version))
        ):
            st.update(state="success", progress=100, message=ota.get("message") or "")
        elif fresh and ota.get("target") == version and ota.get("state") == 1:
            st.update(state="progress", progress=ota.get("progress") or 0, message=ota.get("message") or "")
        elif fresh and ota.get("target") == version and ota.get("state") == 2:
            st.update(state="error", progress=ota.get("progress") or 0, message=ota.get("message") or "")
        elif d.id in r["errors"]:
            st.update(state="error", message=r["errors"][d.id])
        return st

    def list(self) -> list[dict]:
        return [self.view(r) for r in sorted(self.items.values(), key=lambda r: -r["started"])]

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create_app(
    fleet: Fleet, service, store: BundleStore, token: str, public_url: str | None = None, fw_key: str | None = None
) -> FastAPI:
    if not token:
        raise ValueError("the API needs a token")
    fw_key = fw_key or secrets.token_urlsafe(16)
    rollouts = Rollouts(fleet)

    def supplied(request: Request) -> str | None:
        h = request.headers.get("authorization", "")
        kind, _, value = h.partition(" ")
        if kind.lower() == "bearer":
            return value.strip()
        if kind.lower() == "basic":
            try:
                return base64.b64decode(value.strip()).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return None
        return request.cookies.get(COOKIE)

    def valid(t: str | None) -> bool:
        return t is not None and hmac.compare_digest(t.encode(), token.encode())

    def require_token(request: Request, _: Annotated[Any, Depends(BEARER)] = None) -> None:
        if not valid(supplied(request)):
            raise HTTPException(401, "a token is needed: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="ccm cloud",
        version="1",
        summary="Devices, shadows, RPC, config and OTA of the CCMs on this cloud.",
        description="Every /api route needs the token `ccm cloud` printed: `Authorization: Bearer TOKEN` "
        "(or HTTP Basic with the token as password, or the dashboard's login cookie).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.fleet, app.state.rollouts, app.state.fw_key = fleet, rollouts, fw_key
    auth = [Depends(require_token)]

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"detail": json.loads(json.dumps(errors, default=str))}, status_code=422)

    def device_or_404(device_id: str):
        try:
            return fleet.get(device_id)
        except NotFound:
            raise HTTPException(404, f"no device {device_id!r} (never seen on the presence topic, no shadow)") from None

    def call(device_id: str, method: str, params: Any, timeout: float):
        device_or_404(device_id)
        try:
            return {"result": fleet.call(device_id, method, params, timeout)}
        except RpcError as e:
            return _rpc_error(e)
        except Offline as e:
            raise HTTPException(503, str(e)) from None
        except TimeoutError as e:
            raise HTTPException(504, str(e)) from None

    # -- session ----------------------------------------------------------------------------------
    @app.post("/api/login", tags=["session"], summary="Check a token and set the dashboard's cookie")
    def login(body: Login, request: Request):
        if not valid(body.token):
            raise HTTPException(401, "wrong token")
        r = JSONResponse({"ok": True})
        r.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return r

    @app.post("/api/logout", tags=["session"], summary="Clear the dashboard's cookie")
    def logout():
        r = JSONResponse({"ok": True})
        r.delete_cookie(COOKIE)
        return r

    # -- devices ----------------------------------------------------------------------------------
    @app.get("/api/devices", tags=["devices"], dependencies=auth, response_model=list[DeviceSummary])
    def list_devices():
        """Every device seen on the presence topic or with a shadow: online state, last seen, versions."""
        return fleet.devices()

    @app.get("/api/devices/{device_id}", tags=["devices"], dependencies=auth, response_model=DeviceDetail)
    def get_device(device_id: str, refresh: bool = Query(False, description="ask Sys.GetInfo now")):
        d = device_or_404(device_id)
        if refresh and d.online:
            fleet.refresh_info(device_id)
        return {**d.summary(), "info": d.info}

    @app.get("/api/devices/{device_id}/history", tags=["devices"], dependencies=auth)
    def get_history(device_id: str) -> dict[str, list[tuple[float, float]]]:
        """Numeric series over time, [[unix time, value], …]: reported.* from the shadow, info.* from Sys.GetInfo."""
        device_or_404(device_id)
        return fleet.history(device_id)

    @app.get("/api/devices/{device_id}/shadow", tags=["shadow"], dependencies=auth)
    def get_shadow(device_id: str) -> dict:
        """The shadow as AWS's get answers it: state.desired, state.reported, state.delta, metadata, version."""
        device_or_404(device_id)
        ok, doc = service.request(device_id, "get")
        if not ok:
            raise HTTPException(doc.get("code", 404), doc.get("message"))
        return doc

    @app.patch("/api/devices/{device_id}/shadow", tags=["shadow"], dependencies=auth)
    def patch_shadow(device_id: str, body: ShadowPatch) -> dict:
        """Change state.desired (the device gets the delta); the accepted document comes back."""
        device_or_404(device_id)
        req: dict = {"state": {"desired": body.desired}}
        if body.version is not None:
            req["version"] = body.version
        ok, doc = service.request(device_id, "update", req)
        if not ok:
            raise HTTPException(doc.get("code", 400), doc.get("message"))
        return doc

    @app.post(
        "/api/devices/{device_id}/rpc/{method}",
        tags=["rpc"],
        dependencies=auth,
        response_model=RpcResult,
        responses={
            502: {"description": "the device answered with an error: {error: {code, message, data?}}"},
            503: {"description": "the device is offline"},
            504: {"description": "no answer in time"},
        },
    )
    def rpc(
        device_id: str,
        method: str,
        params: Annotated[Any, Body(description="the method's params, any JSON")] = None,
        timeout: float = Query(10.0, gt=0, le=900),
    ):
        """Call a method on the device over MQTT: the CCM's own (Sys.GetInfo, Config.Get, …) or its host's (e.g. Sum)."""
        return call(device_id, method, params, timeout)

    @app.get("/api/devices/{device_id}/config", tags=["config"], dependencies=auth, response_model=RpcResult)
    def get_config(device_id: str, key: str | None = Query(None, description="a sub-tree, e.g. mqtt")):
        """Config.Get: the device's configuration (secrets come back redacted)."""
        return call(device_id, "Config.Get", {"key": key} if key else None, 10.0)

    @app.patch("/api/devices/{device_id}/config", tags=["config"], dependencies=auth, response_model=RpcResult)
    def set_config(device_id: str, body: ConfigPatch):
        """Config.Set (+ Config.Save unless save=false): the device's conf_acl decides what may change."""
        params: dict = {"config": body.config}
        if body.save:
            params["save"] = True
        if body.reboot:
            params["reboot"] = True
        return call(device_id, "Config.Set", params, 10.0)

    # -- bundles and OTA ---------------------------------------------------------------------------
    @app.get("/api/bundles", tags=["ota"], dependencies=auth)
    def list_bundles() -> list[dict]:
        """Stored bundles: name, version, platform, parts, size."""
        return store.list()

    @app.post(
        "/api/bundles",
        tags=["ota"],
        dependencies=auth,
        status_code=201,
        responses={422: {"description": "not a bundle a CCM would take; detail says why"}},
    )
    async def upload_bundle(
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
            return await run_in_threadpool(store.save, file.filename or "", chunks())
        except BundleRefused as e:
            raise HTTPException(422, str(e)) from None

    @app.delete("/api/bundles/{name}", tags=["ota"], dependencies=auth, status_code=204)
    def delete_bundle(name: str):
        try:
            store.delete(name)
        except (FileNotFoundError, BundleRefused):
            raise HTTPException(404, f"no bundle {name!r}") from None

    @app.post("/api/ota", tags=["ota"], dependencies=auth, status_code=202)
    def start_ota(body: OtaStart, request: Request) -> dict:
        """Update devices to a stored bundle; follow it with GET /api/ota/{id} (or the dashboard)."""
        try:
            entry = store.entry(body.bundle)
        except (FileNotFoundError, BundleRefused):
            raise HTTPException(404, f"no bundle {body.bundle!r}") from None
        if not entry.get("version"):
            raise HTTPException(422, f"{body.bundle} has no version in its manifest: a device could not report it")
        unknown = [d for d in body.devices if not fleet.known(d)]
        if unknown:
            raise HTTPException(404, f"no device {', '.join(map(repr, unknown))}")
        base = (public_url or str(request.base_url)).rstrip("/")
        url = f"{base}/fw/{fw_key}/{entry['name']}"
        return rollouts.start(entry, url, body.devices, body.via, service)

    @app.get("/api/ota", tags=["ota"], dependencies=auth)
    def list_ota() -> list[dict]:
        """Rollouts, newest first, each device's state: pending, progress, success or error."""
        return rollouts.list()

    @app.get("/api/ota/{rollout_id}", tags=["ota"], dependencies=auth)
    def get_ota(rollout_id: str) -> dict:
        r = rollouts.items.get(rollout_id)
        if r is None:
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        return rollouts.view(r)

    @app.get("/fw/{key}/{name}", include_in_schema=False)
    def download(key: str, name: str):
        if not hmac.compare_digest(key.encode(), fw_key.encode()):
            raise HTTPException(404)
        try:
            return FileResponse(store.path(name), media_type="application/zip")
        except (FileNotFoundError, BundleRefused):
            raise HTTPException(404) from None

    # -- live events (Server-Sent Events) ----------------------------------------------------------
    @app.get("/api/events", tags=["devices"], dependencies=auth)
    async def events(request: Request, device: str | None = Query(None, description="also its shadow changes")):
        """A text/event-stream: `device` events (presence, versions, OTA) for all devices, `shadow` events
        (new version) for the one named."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=2000)

        def put(ev: dict) -> None:
            try:
                queue.put_nowait(ev)
            except asyncio.QueueFull:
                pass

        def on_event(ev: dict) -> None:
            if ev["type"] == "shadow" and ev["id"] != device:
                return
            loop.call_soon_threadsafe(put, ev)

        fleet.events.subscribe(on_event)

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
                fleet.events.unsubscribe(on_event)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- the dashboard and the API's docs ----------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index(token_: str | None = Query(None, alias="token")):
        if token_ is not None and valid(token_):  # the link `ccm cloud` printed: keep it in a cookie
            r = RedirectResponse("/", status_code=303)
            r.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return r
        return FileResponse(os.path.join(ASSETS, "index.html"), headers={"Cache-Control": "no-store"})

    @app.get("/api/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="ccm cloud API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    import swagger_ui_bundle

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=ASSETS), name="static")
    return app


class WebServer:
    """uvicorn serving `app` from a thread, on a socket bound here (so a busy port is our error to word)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="web server", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> WebServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the web server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)
        self.sock.close()


class Dashboard:
    """The fleet watcher, the bundle store, the API and the dashboard, on one port: what `ccm cloud`
    runs beside the broker and the shadow service."""

    def __init__(
        self,
        broker: str,
        service,
        bundles_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        public_url: str | None = None,
    ):
        self.token = token or secrets.token_urlsafe(16)
        self.fleet = Fleet(broker, service)
        self.store = BundleStore(bundles_dir)
        self.app = create_app(self.fleet, service, self.store, self.token, public_url)
        self.web = WebServer(self.app, host, port)

    @property
    def url(self) -> str:
        return self.web.url

    @property
    def login_url(self) -> str:
        """The URL to open: it carries the token once, the dashboard keeps it in a cookie."""
        return f"{self.web.url}/?token={self.token}"

    def start(self) -> Dashboard:
        self.fleet.start()
        try:
            self.web.start()
        except OSError:
            self.fleet.stop()
            raise
        return self

    def stop(self) -> None:
        self.web.stop()
        self.app.state.rollouts.stop()
        self.fleet.stop()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
