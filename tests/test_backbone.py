"""The Redis backbone: embedded server lifecycle (persistent, never orphaned) and external servers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from pipeline.backbone import BackboneError, EmbeddedRedis, connect
from pipeline.config import load_settings

REPO = Path(__file__).resolve().parents[1]

OWNER = textwrap.dedent("""
    import sys, time
    from pipeline.backbone import connect, install_signal_handlers, _owned
    from pipeline.config import load_settings
    install_signal_handlers()
    r = connect(load_settings([], env={"FACETRAIL_DATA_DIR": sys.argv[1]}))
    r.set("written-by", sys.argv[2])
    print(_owned[0].proc.pid, flush=True)
    time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def start_owner(data_dir: Path, tag: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(data_dir), tag], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"owner did not start its server: {line!r}"
    return proc, int(line)


def embedded_settings(data_dir: Path):
    return load_settings([], env={"FACETRAIL_DATA_DIR": str(data_dir)})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_owner_signal_leaves_no_orphan_and_keeps_data(tmp_path, sig):
    proc, server_pid = start_owner(tmp_path, sig.name)
    assert alive(server_pid)
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert wait_dead(server_pid), f"redis-server {server_pid} outlived its owner after {sig.name}"
    # the next command sees what the previous one wrote (AOF under the data dir)
    r = connect(embedded_settings(tmp_path))
    assert r.get("written-by") == sig.name.encode()
    EmbeddedRedis(tmp_path).socket  # noqa: B018 - same path is derived again
    from pipeline.backbone import _stop_owned

    _stop_owned()


def test_second_process_connects_to_running_server(tmp_path):
    proc, server_pid = start_owner(tmp_path, "first")
    try:
        r = connect(embedded_settings(tmp_path))
        assert r.get("written-by") == b"first"
        from pipeline.backbone import _owned

        assert not _owned, "a second process must reuse the running server, not start its own"
    finally:
        proc.terminate()
        proc.wait(20)
    assert wait_dead(server_pid)


def test_two_data_dirs_never_share_state(tmp_path):
    a = connect(embedded_settings(tmp_path / "a"))
    b = connect(embedded_settings(tmp_path / "b"))
    a.set("only-in-a", 1)
    assert b.get("only-in-a") is None
    from pipeline.backbone import _stop_owned

    _stop_owned()


def test_long_data_dir_path_still_gets_a_socket(tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    r = connect(embedded_settings(deep))
    assert r.ping()
    from pipeline.backbone import _stop_owned

    _stop_owned()


def test_external_server_is_used_when_configured(tmp_path, redis_url):
    s = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path), "FACETRAIL_REDIS_URL": redis_url})
    r = connect(s)
    r.set("ext", "yes")
    assert redis.Redis.from_url(redis_url).get("ext") == b"yes"
    assert not (tmp_path / "redis").exists(), "no embedded server may start when redis.url is set"


def test_unreachable_server_is_one_clear_line(tmp_path):
    from conftest import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(BackboneError) as e:
        connect(load_settings([], env={"FACETRAIL_REDIS_URL": url}))
    assert "cannot reach Redis at 127.0.0.1" in str(e.value) and "secret" not in str(e.value)
    env = dict(os.environ, FACETRAIL_REDIS_URL=url, FACETRAIL_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "redis", "ping"], capture_output=True, text=True,
                         cwd=REPO, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Redis at 127.0.0.1"), out.stderr


def test_cli_ping_embedded_then_stops(tmp_path):
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp_path))
    env.pop("FACETRAIL_REDIS_URL", None)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "redis", "ping"], capture_output=True, text=True,
                         cwd=REPO, env=env)
    assert out.returncode == 0 and out.stdout.startswith("ok: embedded redis"), out.stderr
    assert not EmbeddedRedis(tmp_path).socket.exists(), "the command's embedded server must stop when it exits"
