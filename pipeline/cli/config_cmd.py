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


def check(args) -> int:
    files = args.files or args.config
    settings = load_settings(files) if files else load_settings()
    sys.stdout.write(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    return 0
