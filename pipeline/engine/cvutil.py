"""Small OpenCV helpers shared by the engine modules."""
from __future__ import annotations

from contextlib import contextmanager

import cv2


@contextmanager
def quiet_cv2(silent: bool = False):
    """Silence OpenCV's own log lines for the duration (warnings; with silent=True its [ERROR] lines too, for
    calls whose failure we report ourselves). The level is process-wide; it is restored afterwards."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT if silent else log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)
