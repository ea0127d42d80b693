"""Helpers every command module shares: settings from --config/env, JSON lines output."""
from __future__ import annotations

import json
import sys
from typing import Any

from ..config import Settings, load_settings


def settings_from(args) -> Settings:
    return load_settings(args.config) if getattr(args, "config", None) else load_settings()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": "), default=str) + "\n")
    sys.stdout.flush()
