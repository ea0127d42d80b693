"""The human one-line form of an event (`facetrail events` without --json, `facetrail demo`)."""
from __future__ import annotations

import datetime as dt


def _iso(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_line(ev) -> str:
    """The human line (stable column order): time, type, camera, identity, score, frames, span, track, id."""
    who = ev.identity if ev.identity is not None else "(unknown)"
    score = "-" if ev.score is None else f"{ev.score:.3f}"
    span = max(0.0, ev.last_seen - ev.first_seen)
    return (f"{_iso(ev.last_seen)}  {ev.type:<16}  {ev.camera}  {who}  score={score}  frames={ev.frames}  "
            f"span={span:.1f}s  track={ev.track_id}  id={ev.id}")
