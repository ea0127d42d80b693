"""`facetrail config check [FILE...]`: print the effective config, or each error as `file: field: reason`."""
from __future__ import annotations

import sys

import yaml

from ..config import load_settings


def register(sub) -> None:
    p = sub.add_parser("config", help="check and print configuration")
    s = p.add_subparsers(dest="config_cmd", metavar="SUBCOMMAND")
    s.required = True
    c = s.add_parser("check", help="validate config files (+ FACETRAIL_* env) and print the effective config")
    c.add_argument("files", nargs="*", metavar="FILE")
    c.set_defaults(func=check)
    register_redis(sub)


def check(args) -> int:
    files = args.files or args.config
    settings = load_settings(files) if files else load_settings()
    sys.stdout.write(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return 0


def register_redis(sub) -> None:
    p = sub.add_parser("redis", help="check the Redis backbone (embedded or redis.url)")
    s = p.add_subparsers(dest="redis_cmd", metavar="SUBCOMMAND")
    s.required = True
    ping = s.add_parser("ping", help="connect (starting the embedded server if none is configured) and report")
    ping.set_defaults(func=redis_ping)


def redis_ping(args) -> int:
    from ..backbone import connect, redis_url
    from .common import settings_from

    settings = settings_from(args)
    client = connect(settings)
    info = client.info("server")
    where = redis_url(settings).split("@")[-1]
    mode = "external" if settings.redis.url else "embedded"
    print(f"ok: {mode} redis {info.get('redis_version')} at {where}")
    return 0
