"""Grabber against real sources: a file (every frame, then EOS) and GStreamer's RTSP server run by the system
python (killed and restarted: reconnect; SIGSTOPped: stalled within the watchdog time). The `rtsp` fixture and
RtspServer live in conftest.py (tests/test_rtsp_pipeline.py uses them too)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.backbone import connect
from pipeline.cameras import CameraRegistry
from pipeline.config import CameraConfig
from pipeline.messages import FrameMsg
from pipeline.streams import StreamNames
from workers.grabber import Grabber

from conftest import CLIP, Running, wait_for



def with_workers(settings, **kw):
    return settings.model_copy(update={"workers": settings.workers.model_copy(update=kw)})


class GrabberThread(Running):
    def __init__(self, settings, consumer: str = "grab-test"):
        self.grabber = Grabber(settings, consumer)
        super().__init__(self.grabber, "grabber")


@pytest.fixture
def short_clip(tmp_path, faces_dir) -> Path:
    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    out = tmp_path / "short.mp4"
    w = None
    for _ in range(40):
        ok, img = cap.read()
        assert ok
        if w is None:
            w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, (img.shape[1], img.shape[0]))
        w.write(img)
    w.release()
    return out


def test_file_camera_every_frame_then_eos(settings, short_clip):
    s = with_workers(settings, frames_maxlen=200)
    r = connect(s)
    reg = CameraRegistry(r, s)
    names = StreamNames(s.redis.key_prefix)
    with GrabberThread(s):
        reg.add(CameraConfig(name="clip", url=str(short_clip)))  # added at runtime: no restart
        wait_for(lambda: reg.status("clip").get("state") == "ended", 60, "file camera to end")
    msgs = [FrameMsg.decode(f[b"m"]) for _, f in r.xrange(names.frames("clip"))]
    assert [m.frame.seq for m in msgs] == list(range(41))
    assert all(not m.frame.eos and m.jpeg for m in msgs[:-1])
    assert msgs[-1].frame.eos and msgs[-1].jpeg == b"" and msgs[-1].frame.seq == 40
    assert msgs[1].frame.pts > msgs[0].frame.pts
    assert cv2.imdecode(np.frombuffer(msgs[0].jpeg, np.uint8), 1).shape == (360, 640, 3)


def test_rtsp_reconnects_after_server_restart(settings, rtsp):
    s = with_workers(settings, watchdog_s=2.0, open_timeout_s=3.0)
    r = connect(s)
    reg = CameraRegistry(r, s)
    names = StreamNames(s.redis.key_prefix)
    reg.add(CameraConfig(name="cam", url=rtsp.url, fps=5))
    with GrabberThread(s):
        wait_for(lambda: reg.status("cam").get("state") == "live", 20, "live")
        wait_for(lambda: r.xlen(names.frames("cam")) >= 3, 10, "frames")
        rtsp.kill()
        wait_for(lambda: reg.status("cam").get("state") in ("error", "stalled"), 10, "camera to notice")
        time.sleep(1.5)  # stays down for a while: the grabber is backing off
        before = r.xlen(names.frames("cam"))
        rtsp.start()
        st = wait_for(lambda: (lambda st: st if st.get("state") == "live" and st["live_at"] > rtsp.ready_at
                               else None)(reg.status("cam")), 15, "live again")
        assert st["live_at"] - rtsp.ready_at < 5.0, "reconnected within 5 s of the server's return"
        assert st["reconnects"] >= 1
        wait_for(lambda: r.xlen(names.frames("cam")) > before, 10, "new frames after reconnect")


def test_rtsp_sigstop_marks_camera_stalled(settings, rtsp):
    watchdog = 1.5
    s = with_workers(settings, watchdog_s=watchdog, open_timeout_s=2.0)
    r = connect(s)
    reg = CameraRegistry(r, s)
    reg.add(CameraConfig(name="frozen", url=rtsp.url, fps=5))
    with GrabberThread(s):
        wait_for(lambda: reg.status("frozen").get("state") == "live", 20, "live")
        time.sleep(0.5)
        os.kill(rtsp.proc.pid, signal.SIGSTOP)
        stopped_at = time.time()
        try:
            st = wait_for(lambda: (lambda st: st if st.get("state") == "stalled" else None)(reg.status("frozen")),
                          watchdog + 5, "stalled")
            assert st["stalled_at"] - stopped_at < watchdog + 1.0, "stalled within the watchdog time"
            assert st["stalls"] == 1
        finally:
            os.kill(rtsp.proc.pid, signal.SIGCONT)
        wait_for(lambda: reg.status("frozen").get("state") == "live", 20, "live again after SIGCONT")


def test_camera_remove_stops_its_grabber(settings, rtsp):
    r = connect(settings)
    reg = CameraRegistry(r, settings)
    names = StreamNames(settings.redis.key_prefix)
    with GrabberThread(settings) as g:
        reg.add(CameraConfig(name="temp", url=rtsp.url, fps=5))
        wait_for(lambda: reg.status("temp").get("state") == "live", 20, "live")
        reg.remove("temp")
        wait_for(lambda: "temp" not in g.grabber.runners, 15, "reader stopped")
        n = r.xlen(names.frames("temp"))
        time.sleep(0.6)
        assert r.xlen(names.frames("temp")) == n, "no frames after removal"
        assert not r.exists(f"{settings.redis.key_prefix}:lease:grabber:temp")


class MjpegServer:
    """HTTP multipart/x-mixed-replace JPEG stream (what IP cameras' /video.mjpg serve), 20 frames/s."""

    def __init__(self, jpegs: list[bytes], limit: int | None = None):
        import http.server
        import socketserver

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not srv.stopped and (limit is None or i < limit):
                        j = jpegs[i % len(jpegs)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j)
                                         + j + b"\r\n")
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        srv = self
        self.stopped = False
        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_mjpeg_camera_goes_live_and_is_sampled(settings, faces_dir):
    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    jpegs = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(10)]
    srv = MjpegServer(jpegs)
    r = connect(settings)
    reg = CameraRegistry(r, settings)
    names = StreamNames(settings.redis.key_prefix)
    try:
        with GrabberThread(settings):
            reg.add(CameraConfig(name="ipcam", url=srv.url, fps=4))
            wait_for(lambda: reg.status("ipcam").get("state") == "live", 20, "live")
            wait_for(lambda: r.xlen(names.frames("ipcam")) >= 4, 20, "frames")
    finally:
        srv.close()
    msgs = [FrameMsg.decode(f[b"m"]) for _, f in r.xrange(names.frames("ipcam"))]
    assert [m.frame.seq for m in msgs] == list(range(len(msgs)))
    assert all((m.frame.width, m.frame.height) == (640, 360) and not m.frame.eos for m in msgs)
    stamps = [m.frame.captured_at for m in msgs]
    # sampled to the camera's 4 fps out of a 20 fps source (wall-clock sampling; loose bound, not a timing test)
    assert min(b - a for a, b in zip(stamps, stamps[1:])) > 0.1


def test_one_grabber_per_camera_and_takeover(settings, faces_dir):
    """Two grabber processes' worth of grabbers: only the lease holder reads the camera; when it stops, the
    other takes over and the camera's seq numbering continues (no seq is reused)."""
    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    srv = MjpegServer([cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(5)])
    r = connect(settings)
    reg = CameraRegistry(r, settings)
    names = StreamNames(settings.redis.key_prefix)
    reg.add(CameraConfig(name="shared", url=srv.url, fps=5))
    a, b = GrabberThread(settings, "grab-a"), GrabberThread(settings, "grab-b")
    a.__enter__()
    try:
        wait_for(lambda: reg.status("shared").get("state") == "live", 20, "live")
        assert reg.status("shared")["owner"] == "grab-a"
        b.__enter__()  # a second grabber: the camera is taken, so it only keeps trying for the lease
        wait_for(lambda: r.xlen(names.frames("shared")) >= 3, 20, "frames from grab-a")
        assert a.grabber.runners and not b.grabber.runners
        a.__exit__(None, None, None)  # grab-a stops and releases its lease
        wait_for(lambda: reg.status("shared").get("owner") == "grab-b", 20, "takeover by grab-b")
        n = r.xlen(names.frames("shared"))
        wait_for(lambda: r.xlen(names.frames("shared")) >= n + 3, 20, "frames from grab-b")
    finally:
        for g in (a, b):
            if g.thread.is_alive():
                g.__exit__(None, None, None)
        srv.close()
    seqs = [FrameMsg.decode(f[b"m"]).frame.seq for _, f in r.xrange(names.frames("shared"))]
    assert seqs == list(range(len(seqs))), "one numbering across both owners, no seq reused"
    assert reg.status("shared")["fence"] == 2


def test_a_live_open_leaves_no_ffmpeg_options_behind(monkeypatch):
    """`fflags nobuffer` for live sources must not leak into a later plain file open of the same process (it made
    FFmpeg drop most frames of a file)."""
    import os

    from pipeline import sources

    monkeypatch.delenv(sources._ENV, raising=False)
    monkeypatch.setattr(sources, "_ORIGINAL", None)
    seen = sources._options.open(True, lambda: os.environ.get(sources._ENV))
    assert "nobuffer" in seen, "the live open itself gets the low-latency options"
    assert sources._ENV not in os.environ, "and they are gone afterwards"
