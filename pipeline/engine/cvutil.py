"""Small OpenCV helpers shared by the engine modules."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import cv2

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextmanager
def quiet_cv2(silent: bool = False):
    """Silence OpenCV's own log lines for the duration (warnings; with silent=True its [ERROR] lines too, for
    calls whose failure we report ourselves). OpenCV's level is process-wide: the first thread in saves it and
    the last one out restores it, so overlapping calls from several threads never leave it changed."""
    global _depth, _saved
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = log.getLogLevel()
        _depth += 1
        log.setLogLevel(log.LOG_LEVEL_SILENT if silent else min(log.getLogLevel(), log.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                log.setLogLevel(_saved)
