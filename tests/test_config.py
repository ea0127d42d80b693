"""Config layering and errors: every problem names its source, field and reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_defaults_file_equals_builtin_defaults():
    files = load_settings([REPO / "configs" / "default.yaml"], env={})
    builtin = load_settings([], env={})
    assert files.model_dump(exclude={"paths", "models"}) == builtin.model_dump(exclude={"paths", "models"})
    assert files.models.model_dump(exclude={"dir"}) == builtin.models.model_dump(exclude={"dir"})


def test_example_cameras_file_is_valid():
    s = load_settings([REPO / "configs" / "cameras.example.yaml"], env={})
    assert [c.name for c in s.cameras] == ["front-door", "lobby", "desk-webcam"]
    assert s.cameras[0].fps == 5 and s.cameras[1].fps is None


def test_layering_files_then_env(tmp_path):
    a = write(tmp_path, "a.yaml", {"workers": {"batch_max": 8, "jpeg_quality": 70}})
    b = write(tmp_path, "b.yaml", {"workers": {"batch_max": 12}})
    s = load_settings([a, b], env={"FACETRAIL_WORKERS__JPEG_QUALITY": "90", "FACETRAIL_DATA_DIR": str(tmp_path)})
    assert s.workers.batch_max == 12
    assert s.workers.jpeg_quality == 90
    assert s.paths.data_dir == tmp_path


def test_config_env_var_lists_files(tmp_path):
    a = write(tmp_path, "a.yaml", {"thresholds": {"match": 0.5}})
    s = load_settings(env={"FACETRAIL_CONFIG": str(a)})
    assert s.thresholds.match == 0.5


def test_unknown_key_names_file_and_field(tmp_path):
    p = write(tmp_path, "bad.yaml", {"workers": {"batch_mx": 3}})
    with pytest.raises(ConfigError) as e:
        load_settings([p], env={})
    assert e.value.problems == [f"{p}: workers.batch_mx: unknown key"]


def test_every_problem_reported_with_its_source(tmp_path):
    p = write(tmp_path, "bad.yaml", {"redis": {"url": "http://nope"}, "models": {"detect_max_side": 10}})
    with pytest.raises(ConfigError) as e:
        load_settings([p], env={"FACETRAIL_API__PORT": "99999"})
    text = "\n".join(e.value.problems)
    assert f"{p}: redis.url: " in text and "redis://" in text
    assert f"{p}: models.detect_max_side: " in text
    assert "env FACETRAIL_API__PORT: api.port: " in text
    assert len(e.value.problems) == 3


def test_bad_yaml_and_missing_file(tmp_path):
    p = write(tmp_path, "broken.yaml", "workers: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_settings([p, tmp_path / "nope.yaml"], env={})
    assert e.value.problems[0].startswith(f"{p}: line ")
    assert e.value.problems[1].startswith(f"{tmp_path / 'nope.yaml'}: <file>: cannot read")


def test_duplicate_camera_names(tmp_path):
    p = write(tmp_path, "cams.yaml", {"cameras": [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}]})
    with pytest.raises(ConfigError) as e:
        load_settings([p], env={})
    assert "duplicate camera name 'a'" in e.value.problems[0]


def test_camera_list_item_error_points_at_index(tmp_path):
    p = write(tmp_path, "cams.yaml", {"cameras": [{"name": "ok", "url": "x"}, {"name": "bad name!", "url": "y"}]})
    with pytest.raises(ConfigError) as e:
        load_settings([p], env={})
    assert e.value.problems[0].startswith(f"{p}: cameras.1.name: ")


def test_cli_config_check(tmp_path):
    good = write(tmp_path, "good.yaml", {"workers": {"batch_max": 4}})
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "check", str(good)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["workers"]["batch_max"] == 4
    bad = write(tmp_path, "bad.yaml", {"nope": 1})
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "check", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip() == f"config error: {bad}: nope: unknown key"
    assert "Traceback" not in out.stderr


def _differences(builtin, found, path=""):
    """Every key whose value differs, or that only one side has (dotted paths)."""
    if isinstance(builtin, dict) and isinstance(found, dict):
        for k in sorted(set(builtin) | set(found)):
            where = f"{path}{k}"
            if k not in found:
                yield f"{where}: missing from the file (built-in {builtin[k]!r})"
            elif k not in builtin:
                yield f"{where}: not a setting (file has {found[k]!r})"
            else:
                yield from _differences(builtin[k], found[k], where + ".")
    elif builtin != found:
        yield f"{path[:-1]}: file {found!r} != built-in {builtin!r}"


def test_default_yaml_equals_builtin_defaults_key_by_key():
    """configs/default.yaml says every key in it equals the built-in default: it holds every setting, no other
    key, and each value is the default (home-relative paths are written with ~)."""
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["paths"]["data_dir"] = str(Path(raw["paths"]["data_dir"]).expanduser())
    raw["models"]["dir"] = str(Path(raw["models"]["dir"]).expanduser())
    assert list(_differences(Settings().model_dump(mode="json"), raw)) == []


def _round_trip(s: Settings, tmp_path: Path, name: str) -> Settings:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False))
    return load_settings([f], env={})


def test_settings_round_trip_is_valid(tmp_path):
    """Settings dumped to YAML load back through the real loader (extra="forbid", validation) unchanged: the
    defaults, and a tree with non-default values in several sections and a camera."""
    defaults = load_settings([], env={})
    back = _round_trip(defaults, tmp_path, "defaults.yaml")
    assert back == defaults
    assert back.model_dump(mode="json") == Settings().model_dump(mode="json")
    changed = load_settings([write(tmp_path, "changed.yaml", {
        "paths": {"data_dir": str(tmp_path / "d")}, "redis": {"url": "redis://example:6380/2", "key_prefix": "x"},
        "workers": {"batch_max": 5, "watchdog_s": 7.5}, "thresholds": {"match": 0.61},
        "cameras": [{"name": "door", "url": "rtsp://cam/1", "fps": 4}]})], env={})
    assert changed != defaults
    again = _round_trip(changed, tmp_path, "changed-dump.yaml")
    assert again == changed
    assert (again.workers.batch_max, again.thresholds.match, again.redis.url) == (5, 0.61, "redis://example:6380/2")
    assert [(c.name, c.url, c.fps) for c in again.cameras] == [("door", "rtsp://cam/1", 4)]
