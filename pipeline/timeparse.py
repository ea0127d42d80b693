"""The one time syntax of the CLI and the API (`--since/--until`, `?since=&until=`): unix seconds, ISO 8601
(no zone = UTC) or an age like 30s, 10m, 2h, 7d, 1w."""
from __future__ import annotations

import datetime as dt
import re
import time

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None, now: float | None = None) -> float | None:
    """unix seconds | ISO 8601 | an age ('10m' = ten minutes before now). ValueError with a clear message."""
    if value is None or value == "":
        return None
    v = value.strip()
    try:
        f = float(v)
        if f == f and f not in (float("inf"), float("-inf")):
            return f
    except ValueError:
        pass
    m = _REL.match(v)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time (unix seconds, ISO 8601, or an age like 10m, 2h, 7d)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()
