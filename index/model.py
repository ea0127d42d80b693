"""The gallery's records and rules, without Redis: identities, templates, names (index/store.py keeps them)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

DIM = 128


class GalleryError(ValueError):
    """A gallery operation the user asked for cannot be done (unknown name, name taken, ...)."""


@dataclass
class NewTemplate:
    embedding: np.ndarray
    sha256: str = ""
    quality: float = 0.0
    thumbnail: bytes = b""
    source: str = ""  # dedupe key within the identity; default sha256:face:flip from the enroller


@dataclass
class Identity:
    id: str
    name: str
    metadata: dict = field(default_factory=dict)
    created: str = ""
    templates: int = 0


@dataclass
class Template:
    id: int
    identity: str
    embedding: np.ndarray
    sha256: str
    quality: float
    thumbnail: bytes
    created: str


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


def valid_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise GalleryError("a name cannot be empty")
    if len(name) > 200 or any(c in name for c in "\n\r\t\0"):
        raise GalleryError(f"invalid name {name[:40]!r}: at most 200 characters, no control characters")
    return name

