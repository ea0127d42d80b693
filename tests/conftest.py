"""Shared fixtures: real Redis servers (private, on random ports), real models, the shared photo set, a real
GStreamer RTSP server (tests/rtsp_server.py run by the system python)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
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


# ---- RTSP ----------------------------------------------------------------------------------------------
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
# the system python with GStreamer's bindings (python3-gi, gir1.2-gst-rtsp-server-1.0); overridable for tests
# of this fixture itself
SYS_PY = os.environ.get("FACETRAIL_TEST_SYS_PYTHON", "/usr/bin/python3")
CLIP = "face_recognition/short_hamilton_clip.mp4"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def gst_available() -> bool:
    if not os.access(SYS_PY, os.X_OK):
        return False
    probe = ('import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer; '
             'gi.require_version("Gst", "1.0"); from gi.repository import Gst; Gst.init(None); '
             'assert Gst.ElementFactory.find("x264enc") and Gst.ElementFactory.find("intervideosrc")')
    return subprocess.run([SYS_PY, "-c", probe], capture_output=True).returncode == 0


class RtspServer:
    """rtsp://127.0.0.1:PORT/cam serving VIDEO in a loop, in real time. kill() and start() again on the same port
    is a server restart; SIGSTOP on .proc freezes it."""

    def __init__(self, video: Path, port: int):
        self.video, self.port = video, port
        self.proc: subprocess.Popen | None = None
        self.ready_at = 0.0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([SYS_PY, str(RTSP_SERVER), str(self.video), str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"rtsp server did not start: {line} {self.proc.stderr.read()[-2000:]}")
        self.ready_at = time.time()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def rtsp(faces_dir):
    """A running RTSP server for the Hamilton clip. Without GStreamer the test is skipped, except in CI (CI set):
    there a missing system dependency must fail the run, not silently drop the RTSP tests."""
    if not gst_available():
        why = (f"GStreamer RTSP server for {SYS_PY} is missing (python3-gi, gir1.2-gst-rtsp-server-1.0, "
               "gstreamer1.0-plugins-{good,bad,ugly}, gstreamer1.0-libav; run .ci/system-deps.sh)")
        if in_ci():
            pytest.fail(f"CI: {why}")
        pytest.skip(why)
    srv = RtspServer(faces_dir / CLIP, free_port()).start()
    yield srv
    srv.kill()


class Running:
    """obj.run(stop) in a daemon thread; stopped (and joined) on exit."""

    def __init__(self, obj, name: str):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=obj.run, args=(self.stop,), name=name, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"


def wait_for(cond, timeout, what):
    """Poll cond() until it returns something truthy (returned) or timeout seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---- Redis Cluster -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real local Redis Cluster (3 primaries, 3 replicas) for the session; tests/redis_cluster.py."""
    import shutil

    from redis_cluster import LocalCluster

    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        why = "redis-server/redis-cli are missing (run .ci/system-deps.sh)"
        if in_ci():
            pytest.fail(f"CI: {why}")
        pytest.skip(why)
    cl = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cl
    cl.stop()


_cluster_prefixes = iter(range(1, 1_000_000))


@pytest.fixture
def cluster_settings(tmp_path, redis_cluster, models_dir) -> Settings:
    """Settings on the session's cluster, with a key prefix of their own (nothing to flush between tests)."""
    return load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "data"),
                                  "FACETRAIL_MODELS_DIR": str(models_dir),
                                  "FACETRAIL_REDIS_URL": redis_cluster.url,
                                  "FACETRAIL_REDIS__KEY_PREFIX": f"c{next(_cluster_prefixes)}"})
