"""Who may use `ccm cloud`'s API: whoever shows the token it printed — `Authorization: Bearer TOKEN`, HTTP
Basic with TOKEN as the password, or the cookie the dashboard's login sets. `require_token` is the one
dependency every /api router declares; the session routes set and clear the cookie."""

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
BEARER = HTTPBearer(auto_error=False, description="the token `ccm cloud` printed (or --token)")


class TokenAuth:
    def __init__(self, token: str):
        if not token:
            raise ValueError("the API needs a token")
        self.token = token

    def supplied(self, request: Request) -> str | None:
        """The token a request carries, in whichever of the three ways."""
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

    def valid(self, t: str | None) -> bool:
        return t is not None and hmac.compare_digest(t.encode(), self.token.encode())

    def set_cookie(self, response, secure: bool = False) -> None:
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", secure=secure)


def require_token(request: Request, _: Annotated[Any, Depends(BEARER)] = None) -> None:
    auth: TokenAuth = request.app.state.auth
    if not auth.valid(auth.supplied(request)):
        raise HTTPException(401, "a token is needed: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})


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
    return r
