"""Hooks other modules register without the gallery importing them.

`on_remove`: callables `(redis_client, settings, identity_id, name) -> None`, run by GalleryStore.remove after
the person's identity, templates, vectors and thumbnails are gone (the events module registers its purge of
that person's events here). A failing hook is logged, the others still run, and then HookError is raised, so
`gallery remove`
reports it; the gallery removal itself has already happened and is not undone.

Modules named in AUTOLOAD are imported (when installed) before hooks run, so a CLI process that never imported
the events module still gets its hook: such a module registers itself at import time, e.g.
`index.hooks.on_remove.append(purge_identity_events)`.
"""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # types only: this module imports nothing of the project at run time
    import redis

    from pipeline.config import Settings

log = logging.getLogger("facetrail.gallery")

# (redis client, settings, identity id, name); a return value is ignored
OnRemove = Callable[["redis.Redis", "Settings", str, str], object]
on_remove: list[OnRemove] = []
AUTOLOAD: list[str] = ["pipeline.events"]
_loaded = False


def autoload() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in AUTOLOAD:
        importlib.import_module(mod)


class HookError(RuntimeError):
    """An on_remove hook failed; the person is already gone from the gallery."""


def run_on_remove(r, settings, identity_id: str, name: str) -> None:
    autoload()
    errors = []
    for hook in list(on_remove):
        try:
            hook(r, settings, identity_id, name)
        except Exception as e:  # noqa: BLE001 - every hook gets its turn
            log.exception("gallery on_remove hook %r failed identity=%s", hook, identity_id)
            errors.append(e)
    if errors:
        raise HookError(f"{name} was removed from the gallery, but {len(errors)} removal hook(s) failed: "
                        f"{errors[0]!r}") from errors[0]
