"""API-key check for every route except /healthz. api.require_keys: always | never | auto (keys required unless
the server binds to a loopback address only)."""
from __future__ import annotations

import ipaddress

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key from `facetrail apikey create`")
_bearer = HTTPBearer(auto_error=False, description="the same API key as `Authorization: Bearer <key>`")


def is_loopback(host: str) -> bool:
    h = (host or "").strip().strip("[]").lower()
    if h in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def keys_required(mode: str, host: str) -> bool:
    return mode == "always" or (mode == "auto" and not is_loopback(host))


def require_api_key(request: Request, x_api_key: str | None = Depends(_header),
                    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)):
    st = request.app.state.ft
    raw = x_api_key or (bearer.credentials if bearer else None)
    if not st.keys_required and not raw:
        return None  # loopback-only API: no key needed, but a key that IS sent must be a valid one (below)
    challenge = {"WWW-Authenticate": 'Bearer realm="facetrail"'}
    if not raw:
        raise ApiError(401, "missing_api_key",
                       "an API key is required: send `X-API-Key: <key>` or `Authorization: Bearer <key>` "
                       "(create one with `facetrail apikey create NAME`)", headers=challenge)
    rec = st.keys.verify(raw)
    if rec is None:
        raise ApiError(401, "invalid_api_key", "the API key is wrong or revoked", headers=challenge)
    request.state.api_key = rec
    return rec
