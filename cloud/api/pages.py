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


def _docs_html():
    return get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="ccm cloud API",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
    )


@router.get("/api/docs")
def docs():
    return _docs_html()


CSP = (
    "default-src 'self'; script-src 'self'{extra}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_docs_hashes: list[str] = []


def csp(path: str) -> str:
    """The Content-Security-Policy of a response: scripts from this origin's files only (styles may be
    inline: the progress bars' widths). Swagger UI's page has one inline script of its own: that one, by
    its SHA-256, and no other."""
    if path != "/api/docs":
        return CSP.format(extra="")
    if not _docs_hashes:
        import base64
        import hashlib
        import re

        body = bytes(_docs_html().body).decode()
        for script in re.findall(r"<script>(.*?)</script>", body, re.S):
            _docs_hashes.append("'sha256-%s'" % base64.b64encode(hashlib.sha256(script.encode()).digest()).decode())
    return CSP.format(extra=" " + " ".join(_docs_hashes)).replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'"
    )
