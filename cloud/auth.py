"""Who may use `ccm cloud`'s API: whoever shows the token it printed — `Authorization: Bearer TOKEN`, HTTP
Basic with TOKEN as the password, or the cookie the dashboard's login sets. `require_token` is the one
dependency every /api router declares; the session routes set and clear the cookie.

The cookie is HttpOnly and SameSite=Strict. A request that changes something and is authenticated by the
cookie alone must also carry `X-CSRF-Token`: the value of the `ccm_csrf` cookie (readable by the
dashboard's own script, derived from the token; double-submit), which a page of another site cannot read —
so it cannot make the browser act for the user. Bearer and Basic callers (the CLI, curl) need none."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel

COOKIE = "ccm_token"
CSRF_COOKIE = "ccm_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE = ("GET", "HEAD", "OPTIONS")
BEARER = HTTPBearer(auto_error=False, description="the token `ccm cloud` printed (or --token)")


class TokenAuth:
    def __init__(self, token: str):
        if not token:
            raise ValueError("the API needs a token")
        self.token = token

    def supplied(self, request: Request) -> str | None:
        """The token a request carries, in whichever of the three ways."""
        return self.carried(request)[0]

    def carried(self, request: Request) -> tuple[str | None, str]:
        """(token, how): how is "header" or "cookie"."""
        h = request.headers.get("authorization", "")
        kind, _, value = h.partition(" ")
        if kind.lower() == "bearer":
            return value.strip(), "header"
        if kind.lower() == "basic":
            try:
                return base64.b64decode(value.strip()).decode().partition(":")[2], "header"
            except (binascii.Error, UnicodeDecodeError):
                return None, "header"
        return request.cookies.get(COOKIE), "cookie"

    def csrf(self) -> str:
        """The CSRF token of this cloud's sessions: derived from the API token, useless without the cookie."""
        return hmac.new(self.token.encode(), b"ccm-csrf", "sha256").hexdigest()

    def valid(self, t: str | None) -> bool:
        return t is not None and hmac.compare_digest(t.encode(), self.token.encode())

    def set_cookie(self, response, secure: bool = False) -> None:
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", secure=secure)
        response.set_cookie(CSRF_COOKIE, self.csrf(), httponly=False, samesite="strict", secure=secure)


def require_token(request: Request, _: Annotated[Any, Depends(BEARER)] = None) -> None:
    auth: TokenAuth = request.app.state.auth
    token, how = auth.carried(request)
    if not auth.valid(token):
        raise HTTPException(401, "a token is needed: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})
    if how == "cookie" and request.method not in SAFE:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), auth.csrf().encode()):
            raise HTTPException(403, "a change made with the dashboard's cookie needs its X-CSRF-Token header")


class Login(BaseModel):
    token: str


router = APIRouter(tags=["session"])


@router.post("/api/login", summary="Check a token and set the dashboard's cookie")
def login(body: Login, request: Request):
    auth: TokenAuth = request.app.state.auth
    if not auth.valid(body.token):
        raise HTTPException(401, "wrong token")
    r = JSONResponse({"ok": True})
    auth.set_cookie(r, secure=request.url.scheme == "https")
    return r


@router.post("/api/logout", summary="Clear the dashboard's cookie")
def logout():
    r = JSONResponse({"ok": True})
    r.delete_cookie(COOKIE)
    r.delete_cookie(CSRF_COOKIE)
    return r
