"""/v1/events: query (the CLI's filters, cursor paging), get one, its snapshot JPEG, and a live tail (SSE)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from ...events.model import Event, EventType
from ...events.query import EventFilter
from ...streams import StreamNames
from ..deps import state
from ..errors import ApiError
from ..params import CAMERA, TIME_HELP, parse_time

log = logging.getLogger("facetrail.api")

router = APIRouter(prefix="/events", tags=["events"])

EVENT_ID = r"^[0-9a-f]{1,64}$"
Liveness = Literal["live", "spoof", "undetermined", "spoof_suspected"]
LIVENESS_HELP = ("track.ended events with this liveness verdict, or spoof_suspected: the tracks the per-camera "
                 "liveness gate refused to name")


class EventPage(BaseModel):
    events: list[Event]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null at the end")


def resolve_identity(st, identity: str | None) -> str | None:
    """As `facetrail events --identity`: a gallery name or id resolves to the person's id (so events from before
    a rename are found); anything else is matched as a name."""
    if not identity:
        return None
    from index.store import GalleryStore

    return GalleryStore(st.redis, st.settings).resolve(identity)


def _store(request: Request):
    from ...events.store import EventStore

    st = state(request)
    return EventStore(st.redis, st.settings)


@router.get("", response_model=EventPage, summary="query events (newest first by default), paged by cursor")
async def query_events(
        request: Request,
        camera: str | None = Query(None, pattern=CAMERA),
        identity: str | None = Query(None, min_length=1, max_length=200,
                                     description="gallery name (any case) or identity id"),
        identity_id: str | None = Query(None, min_length=1, max_length=64),
        unknown: bool = Query(False, description="only tracks that ended without a match"),
        type: list[EventType] | None = Query(  # noqa: A002
            None, description="repeatable"),
        since: str | None = Query(None, max_length=64, description=TIME_HELP),
        until: str | None = Query(None, max_length=64, description=TIME_HELP),
        min_score: float | None = Query(None, ge=-1.0, le=1.0),
        liveness: Liveness | None = Query(None, description=LIVENESS_HELP),
        limit: int = Query(50, ge=1, le=1000),
        cursor: str | None = Query(None, max_length=512),
        order: Literal["asc", "desc"] = Query("desc")):
    t0, t1 = parse_time(since, "since"), parse_time(until, "until")
    if identity and unknown:
        raise ApiError(422, "invalid_request", "identity and unknown exclude each other")
    store = _store(request)

    def work():
        iid = identity_id or resolve_identity(state(request), identity)
        try:
            return store.query(camera=camera, identity=None if iid else identity, identity_id=iid,
                               unknown=unknown,
                               since=t0, until=t1, min_score=min_score, types=list(type) if type else None,
                               limit=limit, cursor=cursor, order=order, liveness=liveness)
        except ValueError as e:
            raise ApiError(422, "invalid_request", str(e)) from None

    page = await run_in_threadpool(work)
    return EventPage(events=page.events, next_cursor=page.cursor)


@router.get("/stream", summary="live tail as server-sent events (text/event-stream)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`id: <stream id>`, `event: <type>`, `data: <event JSON>` per event"}})
async def stream_events(
        request: Request,
        camera: str | None = Query(None, pattern=CAMERA),
        identity: str | None = Query(None, min_length=1, max_length=200,
                                     description="gallery name (any case) or identity id"),
        unknown: bool = Query(False, description="only tracks that ended without a match"),
        type: list[EventType] | None = Query(None),  # noqa: A002
        min_score: float | None = Query(None, ge=-1.0, le=1.0),
        liveness: Liveness | None = Query(None, description=LIVENESS_HELP),
        after: str | None = Query(None, pattern=r"^(\$|0|\d{1,20}-\d{1,20})$",
                                  description="stream id to resume after ($ = only new events, 0 = from the start)"),
        limit: int | None = Query(None, ge=1, le=100_000, description="close after this many events"),
        idle_timeout: float | None = Query(None, gt=0, le=86400, description="close after this many seconds "
                                                                               "without an event"),
        last_event_id: str | None = Header(None, pattern=r"^\d{1,20}-\d{1,20}$",
                                           description="resume point an EventSource sends on reconnect")):
    st = state(request)
    stream = StreamNames.of(st.settings).events
    start = after or last_event_id or "$"
    if start == "$":  # resolve now, so nothing committed between this request and the first read is lost
        last = await run_in_threadpool(st.redis.xrevrange, stream, "+", "-", 1)
        start = last[0][0].decode() if last else "0-0"
    iid = await run_in_threadpool(resolve_identity, st, identity)
    want = EventFilter(camera=camera, identity=None if iid else identity, identity_id=iid, unknown=unknown,
                       types=set(type or ()), min_score=min_score, liveness=liveness)
    return StreamingResponse(_sse(request, st.redis, stream, start, want, limit, idle_timeout),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(request: Request, r, stream: str, cursor: str, want: EventFilter, limit: int | None,
               idle_timeout: float | None) -> AsyncIterator[str]:
    """The body of /events/stream: the events `want` matches from the events stream after `cursor`, and a
    keepalive comment after 15 s without one. Ends when the client goes, after `limit` events, after
    `idle_timeout` seconds without one, or with an `error` event when Redis cannot be read."""
    sent, idle_since, ka = 0, time.monotonic(), time.monotonic()
    yield ": facetrail events\n\n"
    while True:
        if await request.is_disconnected():
            return
        try:
            resp = await run_in_threadpool(r.xread, {stream: cursor}, 100, _block_ms(idle_timeout, idle_since))
        except Exception as e:  # noqa: BLE001 - tell the client and close, do not crash the worker
            log.warning("events stream: read failed: %s", e)
            yield f"event: error\ndata: {json.dumps({'error': 'events stream unavailable'})}\n\n"
            return
        now = time.monotonic()
        for cursor, ev in _entries(resp):
            if ev is None or not want.matches(ev):
                continue
            yield f"id: {cursor}\nevent: {ev.type}\ndata: {ev.encode()}\n\n"
            sent += 1
            idle_since = ka = now
            if limit and sent >= limit:
                return
        if idle_timeout and now - idle_since >= idle_timeout:
            return
        if now - ka >= 15:
            ka = now
            yield ": keepalive\n\n"
        await asyncio.sleep(0)


def _block_ms(idle_timeout: float | None, idle_since: float) -> int:
    """How long one read may wait for new entries: a second, or less when the idle timeout comes sooner."""
    if not idle_timeout:
        return 1000
    return int(max(10, min(1000, (idle_timeout - (time.monotonic() - idle_since)) * 1000)))


def _entries(resp) -> Iterator[tuple[str, Event | None]]:
    """(stream id, event) for each entry of an XREAD reply; None for an unreadable entry (logged and skipped,
    but the cursor still moves past it)."""
    for _name, entries in resp or []:
        for msg_id, fields in entries:
            cursor = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
            raw = fields.get(b"m", fields.get("m"))
            ev: Event | None = None
            try:
                ev = Event.decode(raw)
            except Exception:  # noqa: BLE001 - an unreadable entry is skipped, not fatal
                log.warning("events stream: unreadable entry %s skipped", cursor)
            yield cursor, ev


@router.get("/{event_id}", response_model=Event, responses={404: {"description": "no such event"}})
async def get_event(request: Request, event_id: str = Path(pattern=EVENT_ID)):
    store = _store(request)
    ev = await run_in_threadpool(store.get, event_id)
    if ev is None:
        raise ApiError(404, "not_found", f"no event {event_id!r} (unknown, expired or purged)")
    return ev


@router.get("/{event_id}/snapshot", response_class=Response, summary="the event's snapshot JPEG",
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no event or no snapshot"}})
async def get_snapshot(request: Request, event_id: str = Path(pattern=EVENT_ID)):
    store = _store(request)

    def work():
        ev = store.get(event_id)
        if ev is None:
            raise ApiError(404, "not_found", f"no event {event_id!r} (unknown, expired or purged)")
        if not ev.snapshot_id:
            raise ApiError(404, "not_found", f"event {event_id!r} has no snapshot")
        jpeg = store.snapshot(ev.snapshot_id)
        if jpeg is None:
            raise ApiError(404, "not_found", f"the snapshot of event {event_id!r} has expired")
        return jpeg

    jpeg = await run_in_threadpool(work)
    return Response(content=jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


class WrongOut(BaseModel):
    event_id: str
    track_id: str
    identity: str | None = Field(description="the rejected name")
    cluster: str | None = Field(description="the unknown cluster the track joined")


@router.post("/{event_id}/wrong", response_model=WrongOut,
             summary="wrong person: the event's track is not who it was matched to",
             responses={404: {"description": "no such event"}, 409: {"description": "the event names nobody"}})
async def wrong_person(request: Request, event_id: str = Path(pattern=EVENT_ID)):
    from ...unknowns.store import NotFound, UnknownsError
    from .unknowns import unknown_store

    store = unknown_store(request)

    def work():
        try:
            return store.wrong(event_id)
        except NotFound as e:
            raise ApiError(404, "not_found", str(e)) from None
        except UnknownsError as e:
            raise ApiError(409, "conflict", str(e)) from None

    return await run_in_threadpool(work)
