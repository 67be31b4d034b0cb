"""The REST API and dashboard of `ccm cloud`: the open, local counterpart of mDash (docs/architecture.md).

    app = create_app(fleet, service, store, token="…")
    server = WebServer(app, "127.0.0.1", 8080).start()   # uvicorn in a thread; server.url

FastAPI on uvicorn, one router a resource: devices.py (presence, versions, history, live events),
shadow.py, calls.py (RPC and config), ota.py (bundles, rollouts, the devices' downloads), pages.py (the
dashboard and the API's docs); who may call them is cloud/auth.py, rollouts are cloud/rollouts.py.
FastAPI validates requests and writes the OpenAPI description (/api/openapi.json, browsable at
/api/docs with Swagger UI served from the swagger-ui-bundle package, not a CDN).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from cloud import auth
from cloud.api import calls, devices, ota, pages, shadow
from cloud.bundle_server import BundleStore
from cloud.fleet import Fleet
from cloud.rollouts import Rollouts


def create_app(
    fleet: Fleet, service, store: BundleStore, token: str, public_url: str | None = None, fw_key: str | None = None
) -> FastAPI:
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
    state = app.state
    state.auth = auth.TokenAuth(token)
    state.fleet, state.service, state.store = fleet, service, store
    state.rollouts = Rollouts(fleet)
    state.public_url = public_url
    state.fw_key = fw_key or secrets.token_urlsafe(16)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"detail": json.loads(json.dumps(errors, default=str))}, status_code=422)

    for router in (
        auth.router,
        devices.router,
        shadow.router,
        calls.rpc_router,
        calls.config_router,
        ota.router,
        ota.downloads,
        pages.router,
    ):
        app.include_router(router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        """What a browser is told about every response: no script but the dashboard's own files (no
        inline script, so an injected one does not run), no framing, no sniffing, no referrer."""
        response = await call_next(request)
        h = response.headers
        h.setdefault("Content-Security-Policy", pages.csp(request.url.path))
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        return response

    import swagger_ui_bundle

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
    app.mount("/static", StaticFiles(directory=pages.ASSETS), name="static")
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
