"""Config: defaults in code, then YAML files, then FACETRAIL_* env; one validated tree, unknown keys are errors.

Env overrides: FACETRAIL_<SECTION>__<FIELD>=value (values parsed as YAML), plus the shortcuts
FACETRAIL_DATA_DIR, FACETRAIL_MODELS_DIR, FACETRAIL_REDIS_URL and FACETRAIL_CONFIG (files, ':'-separated).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import Field, ValidationError

from .sections import (AnalyzersConfig, ApiConfig, CameraConfig, DecodeConfig, EventsConfig, GalleryConfig,
                       ModelsConfig, MotionConfig, MqttSink, PathsConfig, RedisConfig, Section, SinksConfig,
                       ThresholdsConfig, TrackingConfig, UnknownsConfig, WebhookSink, WorkersConfig)

__all__ = ["Settings", "ConfigError", "load_settings", "CameraConfig", "MqttSink", "WebhookSink"]

ENV_PREFIX = "FACETRAIL_"
SHORTCUTS = {
    "FACETRAIL_DATA_DIR": ("paths", "data_dir"),
    "FACETRAIL_MODELS_DIR": ("models", "dir"),
    "FACETRAIL_REDIS_URL": ("redis", "url"),
}


class Settings(Section):
    paths: PathsConfig = Field(default_factory=PathsConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    analyzers: AnalyzersConfig = Field(default_factory=AnalyzersConfig)


class ConfigError(Exception):
    """Each line reads `source: field: reason`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _deep_merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _origin_of(loc: tuple, origins: dict[tuple, str]) -> str:
    """Which file or env var set the value at loc (longest matching prefix)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return "defaults"


def _record_origins(data: Any, source: str, origins: dict[tuple, str], prefix: tuple = ()) -> None:
    if isinstance(data, Mapping):
        for k, v in data.items():
            origins[prefix + (k,)] = source
            _record_origins(v, source, origins, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            origins[prefix + (i,)] = source
            _record_origins(v, source, origins, prefix + (i,))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: <file>: cannot read ({e.strerror or e})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        raise ConfigError([f"{path}: {where}: invalid YAML ({getattr(e, 'problem', e)})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: <root>: must be a mapping, got {type(data).__name__}"])
    return data


def _env_layer(env: Mapping[str, str]) -> tuple[dict, dict[tuple, str]]:
    layer: dict = {}
    origins: dict[tuple, str] = {}
    for key, raw in sorted(env.items()):
        path: tuple[str, ...]
        if key in SHORTCUTS:
            path = SHORTCUTS[key]
        elif key.startswith(ENV_PREFIX) and "__" in key:
            path = tuple(p.lower() for p in key[len(ENV_PREFIX):].split("__"))
        else:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if path[-1] in ("data_dir", "dir", "url") and value is not None:
            value = raw  # paths and urls stay strings
        node = layer
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
        origins[path] = f"env {key}"
    return layer, origins


def config_files_from_env(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    raw = env.get("FACETRAIL_CONFIG", "")
    return [Path(p) for p in raw.split(":") if p]


def load_settings(files: list[str | Path] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Layer defaults <- files (in order) <- env, validate once, and report every problem with its source."""
    env = os.environ if env is None else env
    paths = [Path(f) for f in (files if files is not None else config_files_from_env(env))]
    merged: dict = {}
    origins: dict[tuple, str] = {}
    problems: list[str] = []
    for p in paths:
        try:
            data = _read_yaml(p)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        _record_origins(data, str(p), origins)
        merged = _deep_merge(merged, data)
    env_data, env_origins = _env_layer(env)
    origins.update(env_origins)
    merged = _deep_merge(merged, env_data)
    if problems:
        raise ConfigError(problems)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            lines.append(f"{_origin_of(loc, origins)}: {_field_path(loc)}: {reason}")
        raise ConfigError(lines) from None
    names = [c.name for c in settings.cameras]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError([f"{_origin_of(('cameras',), origins)}: cameras: duplicate camera name {d!r}" for d in dupes])
    settings.paths.data_dir = settings.paths.data_dir.expanduser()
    settings.models.dir = settings.models.dir.expanduser()
    return settings
