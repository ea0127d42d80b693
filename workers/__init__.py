"""Worker roles. Each role is a module workers/<role>.py exposing
`run(settings, *, consumer: str, stop: threading.Event) -> None`; `facetrail worker ROLE` runs one, `facetrail up`
runs them all under workers.supervisor."""
from __future__ import annotations

import importlib
from types import ModuleType

ROLES = ("grabber", "detector", "embedder", "matcher", "api")


def load_role(role: str) -> ModuleType:
    """The role's module."""
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r} (one of: {', '.join(ROLES)})")
    return importlib.import_module(f"workers.{role}")
