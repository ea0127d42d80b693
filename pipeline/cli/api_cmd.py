"""`facetrail api [--host H] [--port P]` serves the REST API; `facetrail apikey create|revoke|list` manages keys."""
from __future__ import annotations

import sys
import time

from . import UserError
from .common import print_json, settings_from


def register(sub) -> None:
    p = sub.add_parser("api", help="serve the REST API (OpenAPI docs at /docs)")
    p.add_argument("--host", help="bind address (default: api.host, 127.0.0.1); keys are required off loopback "
                                  "unless api.require_keys=never")
    p.add_argument("--port", type=int, help="port (default: api.port, 8000)")
    p.set_defaults(func=serve)

    k = sub.add_parser("apikey", help="create, revoke and list API keys (stored hashed in Redis)")
    s = k.add_subparsers(dest="apikey_cmd", metavar="SUBCOMMAND")
    s.required = True
    c = s.add_parser("create", help="create a key and print it once (it cannot be shown again)")
    c.add_argument("name", help="a label for the key, e.g. grafana or alice@laptop")
    c.add_argument("--json", action="store_true", help="print {id, name, created, key} as JSON")
    c.set_defaults(func=key_create)
    r = s.add_parser("revoke", help="revoke the active key with this name (or id); takes effect at once")
    r.add_argument("name", help="key name or id")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=key_revoke)
    ls = s.add_parser("list", help="list keys (never the keys themselves)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    ls.set_defaults(func=key_list)


def serve(args) -> int:
    settings = settings_from(args)
    if args.host:
        settings.api.host = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port {args.port}: must be 0..65535")
        settings.api.port = args.port
    from workers.api import serve_forever

    return serve_forever(settings)


def _keys(args):
    from ..api.keys import ApiKeys
    from ..backbone import connect

    settings = settings_from(args)
    return ApiKeys(connect(settings), settings)


def key_create(args) -> int:
    from ..api.keys import ApiKeyError

    try:
        rec, raw = _keys(args).create(args.name)
    except ApiKeyError as e:
        raise UserError(str(e)) from None
    if args.json:
        print_json({"id": rec.id, "name": rec.name, "created": rec.created, "key": raw})
    else:
        print(raw)
        print(f"created API key {rec.name!r} (id {rec.id}); it is shown only now - store it safely",
              file=sys.stderr)
    return 0


def key_revoke(args) -> int:
    from ..api.keys import ApiKeyError

    try:
        hits = _keys(args).revoke(args.name)
    except ApiKeyError as e:
        raise UserError(str(e)) from None
    for k in hits:
        if args.json:
            print_json(k.public())
        else:
            print(f"revoked {k.name} (id {k.id})")
    return 0


def key_list(args) -> int:
    rows = [k for k in _keys(args).list() if args.all or args.json or k.active]
    for k in rows:
        if args.json:
            print_json(k.public())
        else:
            state = "active" if k.active else "revoked"
            used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.last_used)) + "Z" if k.last_used else "never"
            print(f"{k.id}  {k.name:<24} {state:<8} last used {used}")
    if not rows and not args.json:
        print("no API keys (create one with `facetrail apikey create NAME`)", file=sys.stderr)
    return 0
