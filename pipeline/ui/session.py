"""Browser sessions for keyed deployments. The login form takes an API key; the browser then holds only a random
session token in an HttpOnly, SameSite=Strict cookie (never the key). Redis keeps sha256(token) -> {key id, CSRF
token}, so a revoked key ends its sessions at once and a leaked Redis dump holds no usable cookie.

Mutations authenticated by the cookie must also carry the session's CSRF token (X-CSRF-Token header, or a
`csrf` form field for the plain forms): SameSite=Strict already keeps the cookie off cross-site requests, and the
token covers browsers or proxies that do not honour it."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from ..backbone import key as rkey

COOKIE = "ft_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    key_id: str
    csrf: str


def _rk(st, token: str) -> str:
    return rkey(st.settings, "uisess", hashlib.sha256(token.encode()).hexdigest())


def create(st, key_id: str) -> str:
    """A new session for this API key id; returns the cookie value."""
    token = secrets.token_urlsafe(32)
    doc = {"key_id": key_id, "csrf": secrets.token_urlsafe(24), "created": round(time.time(), 3)}
    st.redis.set(_rk(st, token), json.dumps(doc), ex=SESSION_TTL_S)
    return token


def lookup(st, token: str | None) -> Session | None:
    """The live session of this cookie, or None (unknown, expired, or its API key revoked since)."""
    if not token or len(token) > 128:
        return None
    raw = st.redis.get(_rk(st, token))
    if not raw:
        return None
    doc = json.loads(raw)
    if not st.keys.is_active(doc.get("key_id", "")):
        st.redis.delete(_rk(st, token))
        return None
    return Session(key_id=doc["key_id"], csrf=doc["csrf"])


def end(st, token: str | None) -> None:
    if token and len(token) <= 128:
        st.redis.delete(_rk(st, token))


def csrf_ok(sess: Session, presented: str | None) -> bool:
    return bool(presented) and presented is not None and hmac.compare_digest(sess.csrf.encode(), presented.encode())


def cross_origin(request: Request) -> bool:
    """True when a browser says this request comes from another origin. Sec-Fetch-Site (sent by current
    browsers) decides when present: only same-origin and none (typed URL, bookmark) pass; same-site is refused
    too, since another port on the same host is "same-site". Without it, an Origin whose host:port is neither
    the Host header nor X-Forwarded-Host (a reverse proxy) is cross-origin. Clients that send neither (curl,
    SDKs) pass."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if not origin:
        return False
    if origin == "null":
        return True
    hosts = {request.headers.get("host", "").lower()}
    fwd = request.headers.get("x-forwarded-host", "")
    if fwd:
        hosts.add(fwd.split(",")[0].strip().lower())
    return urlsplit(origin).netloc.lower() not in hosts


def set_cookie(response, request: Request, token: str) -> None:
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
    response.set_cookie(COOKIE, token, max_age=SESSION_TTL_S, path="/", httponly=True, samesite="strict",
                        secure=secure)
