"""`facetrail events`: query the event store, or follow new events live.

    facetrail events [--camera C] [--identity NAME] [--unknown] [--since T] [--until T] [--min-score S]
                     [--type TYPE] [--liveness V] [--limit N] [--json] [--follow]

Times: unix seconds, ISO 8601 (2026-01-31T12:00:00Z; no zone = UTC) or an age like 30s, 10m, 2h, 7d.
Without --since the newest --limit events are shown; with it, the first --limit events from then on.
Either way they are printed oldest first. --json prints one event per line (a contract: the fields id, type,
camera, track_id, identity (null = unknown), identity_id, score, first_seen, last_seen, frames, snapshot_id,
seq, votes, created_at, v; v2 track.ended events add liveness and status). --follow then keeps printing new
matching events until Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys

from ..events.model import EVENT_TYPES, LIVENESS_FILTERS
from ..events.query import EventFilter
from ..events.render import format_line
from ..timeparse import parse_time
from .common import print_json, settings_from

def register(sub) -> None:
    p = sub.add_parser("events", help="list match events (filters, --json, --follow)",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=_Fmt)
    p.add_argument("--camera", metavar="C", help="only this camera")
    p.add_argument("--identity", metavar="NAME", help="only events naming this person (gallery name or id)")
    p.add_argument("--unknown", action="store_true", help="only tracks that ended without an identity")
    p.add_argument("--since", metavar="T", help="events seen at or after T")
    p.add_argument("--until", metavar="T", help="events seen at or before T")
    p.add_argument("--min-score", type=float, metavar="S", help="only events with score >= S")
    p.add_argument("--type", action="append", choices=list(EVENT_TYPES),
                   help="only these event types (repeatable)")
    p.add_argument("--liveness", choices=list(LIVENESS_FILTERS),
                   help="only track.ended events with this liveness verdict, or the tracks the liveness gate "
                        "refused to name (spoof_suspected)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N events (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--follow", "-f", action="store_true", help="then keep printing new events until Ctrl-C")
    p.set_defaults(func=cmd_events)


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def cmd_events(args) -> int:
    from ..backbone import connect
    from ..events.store import EventStore
    from ..streams import StreamNames

    since, until = _check(args)
    settings = settings_from(args)
    r = connect(settings)
    store = EventStore(r, settings)
    identity_id = None
    if args.identity:
        from index.store import GalleryStore

        identity_id = GalleryStore(r, settings).resolve(args.identity)
    stream = StreamNames.of(settings).events
    tail_from = _stream_end(r, stream) if args.follow else "$"  # taken first: nothing is missed in between
    want = EventFilter(camera=args.camera, identity=None if identity_id else args.identity, identity_id=identity_id,
                       unknown=args.unknown, since=since, until=until, min_score=args.min_score, types=args.type,
                       liveness=args.liveness)
    shown = _print_stored(store, want, args.limit, args.json)
    if not args.follow:
        if not shown and not args.json:
            print("no events match", file=sys.stderr)
        return 0
    return _follow(r, stream, tail_from, want, shown, args.json)


def _check(args) -> tuple[float | None, float | None]:
    """Refuse contradictory flags; returns (since, until) as unix seconds."""
    from . import UserError

    if args.limit < 1:
        raise UserError("--limit must be >= 1")
    if args.identity and args.unknown:
        raise UserError("--identity and --unknown exclude each other")
    try:
        return parse_time(args.since), parse_time(args.until)
    except ValueError as e:
        raise UserError(f"--since/--until: {e}") from None


def _stream_end(r, stream: str) -> str:
    """The id of the newest entry of the events stream ("0-0" when it is empty): --follow prints what comes after."""
    last = r.xrevrange(stream, count=1)
    return (last[0][0].decode() if isinstance(last[0][0], bytes) else last[0][0]) if last else "0-0"


def _print_stored(store, want: EventFilter, limit: int, as_json: bool) -> set[str]:
    """Print the stored events: with --since the first `limit` from then on, else the newest `limit`; oldest first
    either way. Returns the ids printed."""
    order = "asc" if want.since is not None else "desc"
    page = store.find(want, limit=limit, order=order)
    events = page.events if order == "asc" else list(reversed(page.events))
    shown = set()
    for ev in events:
        _emit(ev, as_json)
        shown.add(ev.id)
    return shown


def _follow(r, stream: str, tail_from: str, want: EventFilter, shown: set[str], as_json: bool) -> int:
    """Print the new events `want` matches as they are appended to the events stream after `tail_from` (each id
    once: `shown` holds those printed already), until Ctrl-C."""
    from ..events.model import Event

    try:
        while True:
            resp = r.xread({stream: tail_from}, count=200, block=1000)
            for _s, rows in resp or []:
                for mid, fields in rows:
                    tail_from = mid.decode() if isinstance(mid, bytes) else mid
                    try:
                        ev = Event.decode(fields[b"m"])
                    except ValueError as e:
                        print(f"warning: skipped an unreadable event ({e})", file=sys.stderr)
                        continue
                    if ev.id not in shown and want.matches(ev):
                        shown.add(ev.id)
                        _emit(ev, as_json)
    except KeyboardInterrupt:
        return 0


def _emit(ev, as_json: bool) -> None:
    if as_json:
        print_json(ev.public())
    else:
        sys.stdout.write(format_line(ev) + "\n")
        sys.stdout.flush()
