"""Model registry: verified files only, and the error names the command that fixes it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.models import REGISTRY, ModelError, fetch, model_path, sha256_of, status

REPO = Path(__file__).resolve().parents[1]


def test_present_models_verify(models_dir):
    for name, spec in REGISTRY.items():
        assert sha256_of(model_path(name, models_dir)) == spec.sha256


def test_missing_model_names_fix(tmp_path):
    with pytest.raises(ModelError) as e:
        model_path("yunet", tmp_path)
    assert f"facetrail models fetch --dir {tmp_path}" in str(e.value)


def test_hash_mismatch_is_refused(tmp_path, models_dir):
    bad = tmp_path / REGISTRY["yunet"].filename
    data = bytearray((models_dir / REGISTRY["yunet"].filename).read_bytes())
    data[1000] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        model_path("yunet", tmp_path)
    assert "expected " + REGISTRY["yunet"].sha256 in str(e.value)
    assert "facetrail models fetch" in str(e.value) and "--force" in str(e.value)
    assert [r["verified"] for r in status(tmp_path) if r["name"] == "yunet"] == [False]


def test_engine_refuses_tampered_model(tmp_path, models_dir):
    from pipeline.config import load_settings
    from pipeline.engine.engine import FaceEngine

    for spec in REGISTRY.values():
        shutil.copy(models_dir / spec.filename, tmp_path / spec.filename)
    with open(tmp_path / REGISTRY["sface"].filename, "r+b") as f:
        f.seek(5000)
        f.write(b"\0\0\0\0")
    engine = FaceEngine(load_settings([], env={"FACETRAIL_MODELS_DIR": str(tmp_path)}))
    with pytest.raises(ModelError, match="sha256"):
        _ = engine.embedder


def test_fetch_from_local_source_refuses_wrong_file(tmp_path, models_dir):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(models_dir / REGISTRY["yunet"].filename, src / REGISTRY["yunet"].filename)
    dest = tmp_path / "dest"
    fetch(dest, ["yunet"], source=str(src), log=lambda *_: None)
    assert model_path("yunet", dest)
    (src / REGISTRY["sface"].filename).write_bytes(b"not a model")
    with pytest.raises(ModelError, match="refusing"):
        fetch(dest, ["sface"], source=str(src), log=lambda *_: None)
    assert not (dest / REGISTRY["sface"].filename).exists()


def test_models_list_cli(tmp_path, models_dir):
    ok = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "list", "--dir", str(models_dir)],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and ok.stdout.count("verified") == len(REGISTRY)
    missing = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "list", "--dir", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 1 and "missing" in missing.stdout
