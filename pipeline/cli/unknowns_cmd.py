"""`facetrail unknowns` (clusters of unknown visitors, and naming, merging, ignoring, removing them) and
`facetrail feedback wrong EVENT_ID` (a match a person rejects).

    facetrail unknowns [--camera C] [--since T] [--all] [--limit N] [--json]
    facetrail unknowns name ID NAME | merge ID ID [ID ...] | ignore ID | remove ID      [--json]
    facetrail feedback wrong EVENT_ID [--json]

--json of the listing prints one cluster per line (a contract: id, tracks, cameras, first_seen, last_seen,
snapshot_id, suggestion, suggestion_score, ignored, faces)."""
from __future__ import annotations

import time

from .common import print_json, settings_from


def register(sub) -> None:
    p = sub.add_parser("unknowns", help="unknown visitors clustered across cameras and days: list, name, merge, "
                                        "ignore, remove")
    p.add_argument("--camera", help="only clusters seen on this camera")
    p.add_argument("--since", help="only clusters seen since T (unix seconds, ISO 8601, or an age like 7d)")
    p.add_argument("--all", action="store_true", help="include ignored clusters")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per cluster")
    p.set_defaults(func=cmd_list)
    s = p.add_subparsers(dest="unknowns_cmd", metavar="SUBCOMMAND")
    n = s.add_parser("name", help="enroll NAME from the cluster's best faces and file its past tracks under NAME")
    n.add_argument("id")
    n.add_argument("name")
    n.add_argument("--json", action="store_true")
    n.set_defaults(func=cmd_name)
    m = s.add_parser("merge", help="merge clusters into the first one")
    m.add_argument("ids", nargs="+", metavar="ID")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_merge)
    i = s.add_parser("ignore", help="never list, suggest or alert on this cluster again (it still absorbs visits)")
    i.add_argument("id")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_ignore)
    r = s.add_parser("remove", help="delete the cluster: its face crops, embeddings and track records")
    r.add_argument("id")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_remove)

    f = sub.add_parser("feedback", help="correct the pipeline: mark a match wrong")
    fs = f.add_subparsers(dest="feedback_cmd", metavar="SUBCOMMAND")
    fs.required = True
    w = fs.add_parser("wrong", help="this event's track is not the person it was matched to: it becomes unknown "
                                    "and its faces a negative example for that person")
    w.add_argument("event_id")
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_wrong)


def _open(args):
    from ..backbone import connect
    from ..unknowns.store import UnknownStore

    settings = settings_from(args)
    r = connect(settings)
    store = UnknownStore(r, settings)
    store.drain(wait_s=10.0)  # whatever a matcher has queued and not clustered yet
    return settings, r, store


def _errors(fn):
    def run(args) -> int:
        from ..unknowns.store import UnknownsError
        from . import UserError

        try:
            return fn(args)
        except UnknownsError as e:
            raise UserError(str(e)) from None
    return run


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@_errors
def cmd_list(args) -> int:
    from index.replica import GalleryReplica

    from ..timeparse import parse_time

    settings, r, store = _open(args)
    rows = store.clusters(camera=args.camera, since=parse_time(args.since), include_ignored=args.all,
                          limit=max(1, args.limit))
    if rows:
        replica = GalleryReplica(r, settings).start()
        try:
            store.suggest(rows, lambda v: replica.search(v, max(2, settings.gallery.top_k)))
        finally:
            replica.stop()
    if args.json:
        for row in rows:
            print_json(row)
        return 0
    if not rows:
        print("(no unknown visitors)")
        return 0
    print(f"{'ID':<14}  {'TRACKS':>6}  {'CAMERAS':<20}  {'FIRST SEEN':<19}  {'LAST SEEN':<19}  SUGGESTION")
    for c in rows:
        sug = f"{c['suggestion']} ({c['suggestion_score']:.2f})" if c["suggestion"] else "-"
        flag = " [ignored]" if c["ignored"] else ""
        print(f"{c['id']:<14}  {c['tracks']:>6}  {','.join(c['cameras'])[:20]:<20}  {_ts(c['first_seen'])}  "
              f"{_ts(c['last_seen'])}  {sug}{flag}")
    return 0


def _out(args, obj: dict, line: str) -> int:
    if args.json:
        print_json(obj)
    else:
        print(line)
    return 0


@_errors
def cmd_name(args) -> int:
    _, _, store = _open(args)
    res = store.name(args.id, args.name)
    return _out(args, res, f"{args.id}: named {res['name']} ({'new person' if res['created'] else 'added to'}, "
                           f"{res['templates_added']} templates, {res['tracks_named']} tracks filed under the name)")


@_errors
def cmd_merge(args) -> int:
    _, _, store = _open(args)
    res = store.merge(args.ids)
    return _out(args, res, f"merged into {res['id']}: {res['tracks']} tracks")


@_errors
def cmd_ignore(args) -> int:
    _, _, store = _open(args)
    return _out(args, store.ignore(args.id), f"{args.id}: ignored")


@_errors
def cmd_remove(args) -> int:
    _, _, store = _open(args)
    res = store.remove(args.id)
    return _out(args, res, f"{args.id}: removed ({res['faces']} face crops deleted)")


@_errors
def cmd_wrong(args) -> int:
    _, _, store = _open(args)
    res = store.wrong(args.event_id)
    return _out(args, res, f"track {res['track_id']} is not {res['identity']}: now unknown"
                           + (f" (cluster {res['cluster']})" if res["cluster"] else ""))
