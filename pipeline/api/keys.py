"""API keys: only a sha256 of each key is kept (in Redis); the key itself is shown once, at creation.

A key reads `ftk_<id>_<secret>`. The id (8 hex chars) finds the record in one HGET; the sha256 of the whole
key is compared in constant time. Revoking keeps the record (marked revoked) so `list` shows the history and a
revoked key is refused immediately by every API process.
"""
from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass

import redis

from ..backbone import key as rkey
from ..config import Settings

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEY_RE = re.compile(r"^ftk_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")


class ApiKeyError(ValueError):
    """A user-fixable problem with a key name (bad, duplicate, unknown)."""


@dataclass
class ApiKey:
    id: str
    name: str
    created: float
    revoked: float | None = None
    last_used: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def public(self) -> dict:
        return {**asdict(self), "active": self.active}


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeys:
    """Create, verify, revoke and list API keys stored in one Redis hash: id -> JSON record (no plaintext)."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.hkey = rkey(settings, "apikeys")
        self.used_key = rkey(settings, "apikeys", "last_used")  # id -> unix time (kept apart: never races revoke)
        self._touched: dict[str, float] = {}

    def _load(self, kid: str) -> dict | None:
        raw = self.r.hget(self.hkey, kid)
        return json.loads(raw) if raw else None

    def list(self) -> list[ApiKey]:
        used = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in self.r.hgetall(self.used_key).items()}
        out = []
        for raw in self.r.hvals(self.hkey):
            rec = json.loads(raw)
            k = ApiKey(**{f: rec.get(f) for f in ("id", "name", "created", "revoked")})
            k.last_used = used.get(k.id)
            out.append(k)
        return sorted(out, key=lambda k: (k.created, k.id))

    def create(self, name: str) -> tuple[ApiKey, str]:
        """Returns the record and the plaintext key (shown to the user once, never stored)."""
        if not NAME_RE.match(name or ""):
            raise ApiKeyError(f"bad key name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
        if any(k.name == name and k.active for k in self.list()):
            raise ApiKeyError(f"an active key named {name!r} exists; revoke it first or pick another name")
        while True:
            kid = secrets.token_hex(4)
            raw = f"ftk_{kid}_{secrets.token_urlsafe(32)}"
            rec = ApiKey(id=kid, name=name, created=round(time.time(), 3))
            doc = {**asdict(rec), "sha256": _hash(raw)}
            if self.r.hsetnx(self.hkey, kid, json.dumps(doc)):
                return rec, raw

    def revoke(self, name_or_id: str) -> builtins.list[ApiKey]:
        """Revoke the active key(s) with this name, or the key with this id. Raises ApiKeyError if none match."""
        hits = [k for k in self.list() if k.active and (k.name == name_or_id or k.id == name_or_id)]
        if not hits:
            raise ApiKeyError(f"no active API key named {name_or_id!r}")
        now = round(time.time(), 3)
        for k in hits:
            doc = self._load(k.id) or {}
            doc["revoked"] = now
            self.r.hset(self.hkey, k.id, json.dumps(doc))
            k.revoked = now
        return hits

    def is_active(self, kid: str) -> bool:
        """Whether the key with this id exists and is not revoked (a UI session re-checks it on every request)."""
        doc = self._load(kid) if kid else None
        return doc is not None and bool(doc) and doc.get("revoked") is None

    def verify(self, raw: str | None) -> ApiKey | None:
        """The active key record for this plaintext key, else None (malformed, unknown, wrong or revoked)."""
        if not raw:
            return None
        m = _KEY_RE.match(raw.strip())
        if not m:
            return None
        doc = self._load(m.group(1))
        if not doc or not hmac.compare_digest(doc.get("sha256", ""), _hash(raw.strip())):
            return None
        if doc.get("revoked") is not None:
            return None
        now = time.time()
        if now - self._touched.get(doc["id"], 0.0) >= 60:  # at most one write a minute per key and process
            self._touched[doc["id"]] = now
            self.r.hset(self.used_key, doc["id"], round(now, 3))
        return ApiKey(id=doc["id"], name=doc["name"], created=doc["created"], revoked=doc.get("revoked"))
