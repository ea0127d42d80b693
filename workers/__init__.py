"""Worker roles. Each role is a module workers/<role>.py exposing
`run(settings, *, consumer: str, stop: threading.Event) -> None`; `facetrail worker ROLE` runs one, `facetrail up`
runs them all under workers.supervisor."""
from __future__ import annotations

import importlib
from types import ModuleType

ROLES = ("grabber", "detector", "embedder", "matcher", "api")


def load_role(role: str) -> ModuleType | None:
    """The role's module, or None when it is not built (yet)."""
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r} (one of: {', '.join(ROLES)})")
    try:
        return importlib.import_module(f"workers.{role}")
    except ModuleNotFoundError as e:
        if e.name == f"workers.{role}":
            return None
        raise


def role_available(role: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"workers.{role}") is not None
