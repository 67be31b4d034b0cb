"""The dashboard's page and the API's docs (Swagger UI from the swagger-ui-bundle package: no CDN)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, RedirectResponse

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dashboard")

router = APIRouter(include_in_schema=False)


@router.get("/")
def index(request: Request, token_: str | None = Query(None, alias="token")):
    auth = request.app.state.auth
    if token_ is not None and auth.valid(token_):  # the link `ccm cloud` printed: keep it in a cookie
        r = RedirectResponse("/", status_code=303)
        auth.set_cookie(r)
        return r
    return FileResponse(os.path.join(ASSETS, "index.html"), headers={"Cache-Control": "no-store"})


@router.get("/api/docs")
def docs():
    return get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="ccm cloud API",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
    )
