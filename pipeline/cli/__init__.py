"""`facetrail` command line. Each command group lives in its own module with a `register(subparsers)` function;
outputs marked --json are contracts that outside scripts rely on: keep them stable."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..backbone import BackboneError, install_signal_handlers
from ..config import ConfigError
from ..errors import UserError
from ..models import ModelError

# Command modules, in the order `facetrail --help` lists them.
COMMAND_MODULES = ["config_cmd", "models_cmd", "face_cmd", "gallery_cmd", "pipeline_cmd", "events_cmd", "unknowns_cmd",
                   "api_cmd", "demo_cmd"]

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facetrail", description="Face-recognition video analytics on Redis Streams.")
    p.add_argument("-c", "--config", action="append", metavar="FILE",
                   help="YAML config file (repeatable; later files override earlier ones; default: $FACETRAIL_CONFIG)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        for line in e.problems:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except (BackboneError, ModelError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


