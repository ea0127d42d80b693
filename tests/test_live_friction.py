"""The small frictions of a first live setup, each fixed: YAML camera edits are applied or loudly refused (never
silently ignored), `camera add` says when it drops an fps, `up` says what it runs and where without -v,
/metrics forgets dead workers and removed cameras, /docs works offline."""
from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time

import yaml

from pipeline.backbone import connect
from pipeline.cameras import CameraRegistry
from pipeline.config import CameraConfig
from pipeline.metrics import Heartbeat, StageMetrics, read_metrics

CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def test_yaml_camera_edit_applies_unless_changed_at_runtime(settings, caplog):
    r = connect(settings)
    reg = CameraRegistry(r, settings)
    assert reg.seed([CameraConfig(name="door", url="rtsp://cam/1", fps=5)]) == 1
    # the file changed (fps 5 -> 10) and nobody edited the camera at runtime: the file wins
    with caplog.at_level(logging.WARNING, logger="facetrail.cameras"):
        assert reg.seed([CameraConfig(name="door", url="rtsp://cam/1", fps=10)]) == 1
    assert reg.get("door").fps == 10
    assert "config file changed (fps 5.0 -> 10.0): applied" in caplog.text
    # the camera is edited at runtime: the runtime setting stays, and the ignored file setting is said out loud
    reg.add(CameraConfig(name="door", url="rtsp://cam/1", fps=2))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facetrail.cameras"):
        assert reg.seed([CameraConfig(name="door", url="rtsp://cam/1", fps=10)]) == 0
    assert reg.get("door").fps == 2
    assert "settings (fps 2.0 -> 10.0) are ignored" in caplog.text and "camera remove door" in caplog.text
    # an unchanged file is quiet
    reg.remove("door")
    reg.seed([CameraConfig(name="door", url="rtsp://cam/1", fps=10)])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facetrail.cameras"):
        assert reg.seed([CameraConfig(name="door", url="rtsp://cam/1", fps=10)]) == 0
    assert not caplog.text


def test_camera_add_says_when_it_drops_the_fps(cli_env):
    def cli(*args):
        return subprocess.run(CLI + list(args), env=cli_env, capture_output=True, text=True, timeout=60)

    assert cli("camera", "add", "door", "rtsp://cam/1", "--fps", "5").returncode == 0
    p = cli("camera", "add", "door", "rtsp://cam/2")
    assert p.returncode == 0 and "had fps 5; it now analyses every frame" in p.stderr


def test_up_says_what_it_runs_and_where_without_v(tmp_path, cli_env):
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [{"name": "door", "url": "rtsp://127.0.0.1:9/cam", "fps": 5}]}))
    up = subprocess.Popen(CLI + ["-c", str(cfg), "up", "--role", "grabber"], env=cli_env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("  logs:") for line in lines):
            line = up.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip())
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    text = "\n".join(lines)
    assert text.startswith("facetrail up: 1 grabber"), text
    assert re.search(r"redis \(durable\): .*127\.0\.0\.1", text)
    assert "cameras: door (fps 5.0)" in text
    assert "events: Redis stream ft:events" in text and "MQTT off: sinks.mqtt.enabled" in text
    assert "logs: run `facetrail -v up`" in text


def test_metrics_forget_dead_workers_and_removed_cameras(settings):
    r = connect(settings)
    CameraRegistry(r, settings).add(CameraConfig(name="door", url="rtsp://cam/1"))
    for stage, consumer in [("detector", "det-live"), ("detector", "det-dead"), ("grabber", "g-1:door"),
                            ("grabber", "g-1:removed")]:
        m = StageMetrics(r, settings, stage, consumer)
        m.batch(3)
        m.maybe_flush(force=True)
    Heartbeat(r, settings, "detector", "det-live").beat(force=True)
    Heartbeat(r, settings, "grabber", "g-1").beat(force=True)
    stages = read_metrics(r, settings)["stages"]
    assert set(stages["detector"]["consumers"]) == {"det-live"}
    assert set(stages["grabber"]["consumers"]) == {"g-1:door"}
    assert stages["detector"]["total"]["frames"] == 3


def test_docs_page_loads_nothing_from_outside(settings):
    from test_api import _client

    with _client(settings) as c:
        page = c.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/openapi.json" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "no asset from another host"
    assert "cdn" not in page.text.lower()
