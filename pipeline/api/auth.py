"""API-key check for every route except /healthz. api.require_keys: always | never | auto (keys required unless
the server binds to a loopback address only).

The web UI's session cookie (pipeline/ui/session.py) is accepted in place of a key; a mutation made with the
cookie must carry the session's CSRF token. A browser request from another site that would change something is
refused whether or not keys are required (a page elsewhere must not drive a loopback server)."""
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
    from ..ui import session as ui_session

    st = request.app.state.ft
    unsafe = request.method not in ui_session.SAFE_METHODS
    if unsafe and ui_session.cross_origin(request):
        raise ApiError(403, "cross_origin", "a browser request from another site may not change anything here")
    raw = x_api_key or (bearer.credentials if bearer else None)
    if not st.keys_required and not raw:
        return None  # loopback-only API: no key needed, but a key that IS sent must be a valid one (below)
    challenge = {"WWW-Authenticate": 'Bearer realm="facetrail"'}
    if not raw and ui_session.COOKIE in request.cookies:
        sess = ui_session.lookup(st, request.cookies.get(ui_session.COOKIE))
        if sess is None:
            raise ApiError(401, "invalid_session", "the UI session expired or its key was revoked; log in again",
                           headers=challenge)
        if unsafe and not ui_session.csrf_ok(sess, request.headers.get(ui_session.CSRF_HEADER)):
            raise ApiError(403, "csrf", f"a change made with the UI session needs its {ui_session.CSRF_HEADER} "
                                        "header")
        request.state.ui_session = sess
        return sess
    if not raw:
        raise ApiError(401, "missing_api_key",
                       "an API key is required: send `X-API-Key: <key>` or `Authorization: Bearer <key>` "
                       "(create one with `facetrail apikey create NAME`)", headers=challenge)
    rec = st.keys.verify(raw)
    if rec is None:
        raise ApiError(401, "invalid_api_key", "the API key is wrong or revoked", headers=challenge)
    request.state.api_key = rec
    return rec
