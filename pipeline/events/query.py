"""The read side of the event store: get an event or a snapshot, and query the time indexes with the filters of
`facetrail events` / GET /v1/events and cursor paging. EventStore (pipeline/events/store.py) adds the writes.
EventFilter is also the predicate of the live tails (`facetrail events --follow`, /v1/events/stream)."""
from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass, replace

import redis

from ..backbone import key
from ..config import Settings
from ..streams import StreamNames
from .model import Event, liveness_matches


@dataclass
class Page:
    events: list[Event]
    cursor: str | None  # pass back to get the next page; None when there is no more


@dataclass
class EventFilter:
    """Every filter of an event query, as one predicate. `identity` is a name, matched in any case (a caller that
    resolved it to `identity_id` passes None); since/until bound last_seen."""
    camera: str | None = None
    identity: str | None = None
    identity_id: str | None = None
    unknown: bool = False
    types: Collection[str] | None = None
    min_score: float | None = None
    liveness: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, ev: Event) -> bool:
        if self.camera and ev.camera != self.camera:
            return False
        if self.identity_id and ev.identity_id != self.identity_id:
            return False
        if self.identity and (ev.identity or "").lower() != self.identity.lower():
            return False
        if self.unknown and (ev.identity_id or ev.type != "track.ended"):
            return False
        if self.types and ev.type not in self.types:
            return False
        if self.min_score is not None and (ev.score is None or ev.score < self.min_score):
            return False
        if self.since is not None and ev.last_seen < self.since:
            return False
        if self.until is not None and ev.last_seen > self.until:
            return False
        return liveness_matches(ev, self.liveness)


def _enc_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, member]).encode()).decode().rstrip("=")


def _dec_cursor(cursor: str) -> tuple[float, str]:
    try:
        pad = "=" * (-len(cursor) % 4)
        score, member = json.loads(base64.urlsafe_b64decode(cursor + pad))
        return float(score), str(member)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError(f"invalid paging cursor {cursor!r}") from None


def _on_earlier_page(member: str, score: float, after: tuple[float, str] | None, order: str) -> bool:
    """An index entry at or before the cursor (in paging order): it was on an earlier page."""
    if after is None or score != after[0]:
        return False
    return member <= after[1] if order == "asc" else member >= after[1]


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


class EventReader:
    """Keys and reads of the event store (the layout: pipeline/events/store.py's docstring)."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.names = StreamNames.of(settings)

    # ---- keys -----------------------------------------------------------------------------------------
    def k(self, *parts) -> str:
        return key(self.settings, *parts)

    def event_key(self, event_id: str) -> str:
        return self.k("event", event_id)

    def snapshot_key(self, snapshot_id: str) -> str:
        return self.k("snap", snapshot_id)

    # ---- reading --------------------------------------------------------------------------------------
    def get(self, event_id: str) -> Event | None:
        raw = self.r.hget(self.event_key(event_id), "j")
        return Event.decode(raw) if raw else None

    def snapshot(self, snapshot_id: str) -> bytes | None:
        return self.r.get(self.snapshot_key(snapshot_id))

    def query(self, *, camera: str | None = None, identity: str | None = None, identity_id: str | None = None,
              unknown: bool = False, since: float | None = None, until: float | None = None,
              min_score: float | None = None, types: list[str] | None = None, limit: int = 100,
              cursor: str | None = None, order: str = "asc", liveness: str | None = None) -> Page:
        """Events matching every filter, by time (`order` asc or desc), `limit` per page."""
        want = EventFilter(camera=camera, identity=identity, identity_id=identity_id, unknown=unknown, types=types,
                           min_score=min_score, liveness=liveness, since=since, until=until)
        return self.find(want, limit=limit, cursor=cursor, order=order)

    def find(self, want: EventFilter, *, limit: int = 100, cursor: str | None = None, order: str = "asc") -> Page:
        """query() with the filters as one EventFilter."""
        if order not in ("asc", "desc"):
            raise ValueError("order must be asc or desc")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if want.identity and want.unknown:
            return Page([], None)
        idx = self._index_for(want)
        lo = "-inf" if want.since is None else repr(float(want.since))
        hi = "+inf" if want.until is None else repr(float(want.until) + 3e-6)  # index_score nudges by <= 2 us
        after: tuple[float, str] | None = None
        if cursor:
            after = _dec_cursor(cursor)
            if order == "asc":
                lo = repr(after[0])
            else:
                hi = repr(after[0])
        # `since` is the index range's lower bound alone; `until` is checked on each event too (hi is nudged)
        return self._scan(idx, lo, hi, after, order, limit, replace(want, since=None))

    def _index_for(self, want: EventFilter) -> str:
        """The narrowest index that holds every event the filter can match."""
        if want.identity_id:
            return self.k("evidx", "identity", want.identity_id)
        if want.identity:
            return self.k("evidx", "name", want.identity.lower())
        if want.unknown:
            return self.k("evidx", "unknown")
        if want.camera:
            return self.k("evidx", "camera", want.camera)
        return self.k("evidx", "all")

    def _scan(self, idx: str, lo: str, hi: str, after: tuple[float, str] | None, order: str, limit: int,
              want: EventFilter) -> Page:
        """Walk the index from the cursor in chunks, keeping the events `want` matches, until `limit` are found;
        index entries whose event has expired are dropped on the way."""
        out: list[Event] = []
        chunk = max(2 * limit, 200)
        offset = 0
        while True:
            if order == "asc":
                rows = self.r.zrangebyscore(idx, lo, hi, start=offset, num=chunk, withscores=True)
            else:
                rows = self.r.zrevrangebyscore(idx, hi, lo, start=offset, num=chunk, withscores=True)
            offset += len(rows)
            ids = [(m, s) for m, s in ((_str(m), s) for m, s in rows) if not _on_earlier_page(m, s, after, order)]
            stale = []
            for (m, s), raw in zip(ids, self._event_json([m for m, _ in ids])):
                if raw is None:
                    stale.append(m)
                    continue
                ev = Event.decode(raw)
                if want.matches(ev):
                    out.append(ev)
                    if len(out) >= limit:
                        return Page(out, _enc_cursor(s, m))
            if stale:
                self.r.zrem(idx, *stale)
            if len(rows) < chunk:
                return Page(out, None)

    def _event_json(self, ids: list[str]) -> list:
        """The stored JSON of each event (None where it expired), in one round trip."""
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for m in ids:
            pipe.hget(self.event_key(m), "j")
        return pipe.execute()
