"""Query-parameter rules more than one router shares: the camera-name pattern and the time syntax."""
from __future__ import annotations

from ..timeparse import parse_time as _parse
from .errors import ApiError

CAMERA = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TIME_HELP = "unix seconds, ISO 8601 (2026-01-31T12:00:00Z) or an age like 15m, 2h, 7d"


def parse_time(value: str | None, field: str) -> float | None:
    """The CLI's time syntax (pipeline.timeparse.parse_time); a bad value is a 422."""
    try:
        return _parse(value)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"{field}: {e}") from None
