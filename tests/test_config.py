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


def test_settings_round_trip_is_valid():
    dumped = Settings().model_dump(mode="json")
    assert Settings.model_validate(dumped) == Settings.model_validate(dumped)
