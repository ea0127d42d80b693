"""`facetrail process VIDEO` end to end as a subprocess: with no workers running it starts an embedded pipeline,
pushes every frame, and returns only after every frame (and the EOS) reached embeddings:{camera}."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
import redis

from pipeline.messages import EmbeddingsMsg

from conftest import CLIP

CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


@pytest.fixture
def clip30(tmp_path, faces_dir):
    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    out = tmp_path / "hamilton_30.mp4"
    w = None
    for _ in range(30):
        ok, img = cap.read()
        assert ok
        if w is None:
            w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, (img.shape[1], img.shape[0]))
        w.write(img)
    w.release()
    return out


def run_cli(args, env, timeout=240):
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=timeout)


def test_process_returns_after_every_frame_is_embedded(clip30, cli_env, redis_url):
    p = run_cli(["process", str(clip30), "--camera", "stage", "--json", "--no-matcher"], cli_env)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 30 and summary["missing"] == 0 and summary["duplicates"] == 0
    assert summary["embedded_pipeline"] == ["detector", "embedder"]
    assert summary["faces"] > 0
    r = redis.Redis.from_url(redis_url)
    msgs = [EmbeddingsMsg.decode(f[b"m"]) for _, f in r.xrange("ft:embeddings:stage")]
    seqs = sorted(m.frame.seq for m in msgs if not m.frame.eos)
    assert seqs == list(range(30)), "already there when the command returned: every frame, once"
    assert [m.frame.seq for m in msgs if m.frame.eos] == [30]
    assert not r.hexists("ft:cameras", "stage"), "the run's camera is unregistered afterwards"
    assert not r.keys("ft:hb:*"), "the embedded workers were stopped"

    # a second run on the same camera continues the seq numbering: nothing is mistaken for already done;
    # a configured camera of that name is borrowed for the run and put back afterwards
    configured = '{"name":"stage","url":"rtsp://10.0.0.9/s","fps":2.0,"enabled":false,"external":false}'
    r.hset("ft:cameras", "stage", configured)
    p = run_cli(["process", str(clip30), "--camera", "stage", "--json", "--no-matcher", "--fps", "10"], cli_env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(r.hget("ft:cameras", "stage")) == json.loads(configured)
    again = json.loads(p.stdout.strip().splitlines()[-1])
    assert again["first_seq"] == 31 and again["missing"] == 0
    assert 9 <= again["frames"] <= 11, "--fps 10 samples a 1 s clip to about 10 frames"


def test_process_bad_input_is_one_line_error(tmp_path, cli_env):
    p = run_cli(["process", str(tmp_path / "nope.mp4")], cli_env, timeout=60)
    assert p.returncode == 2 and "no such file" in p.stderr
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    p = run_cli(["process", str(bad), "--no-matcher"], cli_env, timeout=120)
    assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr


def _wait(cond, timeout, what, proc=None):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"supervisor exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_supervises_roles_and_follows_runtime_cameras(tmp_path, clip30, cli_env, redis_url):
    import os
    import signal

    import yaml

    cfg = tmp_path / "cams.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [{"name": "yamlcam", "url": str(clip30)}]}))
    r = redis.Redis.from_url(redis_url)

    def eos_reached(cam):
        return any(EmbeddingsMsg.decode(f[b"m"]).frame.eos for _, f in r.xrange(f"ft:embeddings:{cam}"))

    up = subprocess.Popen(CLI + ["-c", str(cfg), "up", "--role", "grabber", "--role", "detector", "--role",
                                 "embedder"], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    try:
        _wait(lambda: eos_reached("yamlcam"), 180, "the YAML camera's frames at embeddings", up)
        # a camera added at runtime is picked up without restarting anything
        p = run_cli(["camera", "add", "late", str(clip30)], cli_env, timeout=60)
        assert p.returncode == 0, p.stderr
        _wait(lambda: eos_reached("late"), 180, "the runtime camera's frames at embeddings", up)
        p = run_cli(["camera", "list", "--json"], cli_env, timeout=60)
        rows = {json.loads(line)["name"]: json.loads(line) for line in p.stdout.splitlines()}
        assert rows["yamlcam"]["state"] == rows["late"]["state"] == "ended"
        # a crashed worker is restarted by the supervisor
        hb = json.loads(r.get(next(iter(r.scan_iter("ft:hb:detector:*")))))
        os.kill(hb["pid"], signal.SIGKILL)
        _wait(lambda: any(json.loads(r.get(k) or "{}").get("pid") not in (None, hb["pid"])
                          for k in r.scan_iter("ft:hb:detector:*")), 60, "a restarted detector", up)
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    left = [json.loads(v) for v in (r.get(k) for k in r.scan_iter("ft:hb:*")) if v]
    assert all(h["pid"] == hb["pid"] for h in left), "every live worker stopped and cleared its heartbeat"


def test_process_a_stream_url_until_it_ends(faces_dir, cli_env, redis_url):
    """`facetrail process URL`: a live source is read until it ends (here an MJPEG stream of 24 frames at
    20 frames/s), sampled to --fps, then EOS; the command returns once all of it is embedded."""
    from test_grabber import MjpegServer

    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    srv = MjpegServer([cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(6)], limit=24)
    try:
        p = run_cli(["process", srv.url, "--json", "--no-matcher"], cli_env)
        assert p.returncode == 2 and "--camera NAME is required" in p.stderr
        p = run_cli(["process", srv.url, "--camera", "ipcam", "--fps", "10", "--json", "--no-matcher"], cli_env)
    finally:
        srv.close()
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert s["missing"] == 0 and s["duplicates"] == 0
    assert 2 <= s["frames"] < 24, "sampled to --fps 10 out of a 20 frames/s stream"
    assert s["frames_read"] >= 20
