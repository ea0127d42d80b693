"""Shared fixtures: real Redis servers (private, on random ports), real models, the shared photo set."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from pipeline.backbone import redis_server_binary
from pipeline.config import Settings, load_settings
from pipeline.models import REGISTRY, fetch, model_path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    cand = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data"))
    return cand if (cand / "faces").is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set FACETRAIL_SHARED_DATA to run photo-based tests)")
    return d


@pytest.fixture(scope="session")
def faces_dir(shared_data) -> Path:
    return shared_data / "faces"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    d = Path(os.environ.get("FACETRAIL_MODELS_DIR", Path.home() / ".cache" / "facetrail" / "models"))
    try:
        for name in REGISTRY:
            model_path(name, d)
    except Exception:
        fetch(d)  # `make test` fetches first; this keeps a bare `pytest` working too
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProc:
    """A private redis-server for tests: never touches anyone else's data."""

    def __init__(self, tmp: Path, appendonly: bool = False):
        self.dir = tmp
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProc":
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("test redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory):
    rp = RedisProc(tmp_path_factory.mktemp("redis")).start()
    yield rp
    rp.stop()


@pytest.fixture
def redis_url(redis_proc) -> str:
    """A clean database on the session's private server for each test."""
    redis.Redis.from_url(redis_proc.url).flushdb()
    return redis_proc.url


@pytest.fixture
def settings(tmp_path, redis_url, models_dir) -> Settings:
    return load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "data"),
                                  "FACETRAIL_MODELS_DIR": str(models_dir),
                                  "FACETRAIL_REDIS_URL": redis_url})


@pytest.fixture
def cli_env(tmp_path, redis_url, models_dir) -> dict:
    """Environment for running `facetrail` as a subprocess against the private server."""
    env = dict(os.environ)
    env.update(FACETRAIL_DATA_DIR=str(tmp_path / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
               FACETRAIL_REDIS_URL=redis_url)
    env.pop("FACETRAIL_CONFIG", None)
    return env
