"""PyAV capture (pipeline/decode.py): what skip_frame leaves undecoded, that "auto" never loses a sampled frame,
and the grabber reading a real RTSP camera through it (decode.reader = pyav)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.backbone import connect
from pipeline.cameras import CameraRegistry
from pipeline.config import CameraConfig
from pipeline.messages import FrameMsg
from pipeline.streams import StreamNames

from conftest import wait_for
from test_grabber import GrabberThread, with_workers

av = pytest.importorskip("av")
from pipeline.decode import AvCapture  # noqa: E402


def h264(tmp_path: Path, name: str, *, gop: int, bframes: int, frames: int = 90) -> Path:
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("gst-launch-1.0 (GStreamer with x264enc) is needed to encode the H.264 test clips")
    out = tmp_path / f"{name}.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}", "pattern=ball", "!",
                    "video/x-raw,width=320,height=240,framerate=30/1", "!", "x264enc", "speed-preset=ultrafast",
                    f"key-int-max={gop}", f"bframes={bframes}", "b-pyramid=false", "!", "h264parse", "!", "mp4mux",
                    "!", "filesink", f"location={out}"], check=True, capture_output=True)
    return out


def read_all(path: Path, **kw) -> tuple[int, list[float], AvCapture]:
    cap = AvCapture(str(path), **kw)
    n, pts = 0, []
    while cap.grab():
        n += 1
        ok, img = cap.retrieve()
        assert ok and img.shape == (240, 320, 3)
        pts.append(cap.get(0) / 1000.0)
    cap.release()
    return n, pts, cap


def test_nonref_skips_b_frames_and_nonkey_keeps_keyframes(tmp_path):
    clip = h264(tmp_path, "b2", gop=30, bframes=2)
    every, _, _ = read_all(clip, skip="none")
    nonref, _, _ = read_all(clip, skip="nonref")
    nonkey, _, _ = read_all(clip, skip="nonkey")
    assert every == 90
    assert nonref < every * 0.6, "the non-reference B frames are left undecoded"
    assert nonkey == 3, "keyframes only: one every 30 frames"


def test_hwaccel_falls_back_to_software(tmp_path):
    """decode.hwaccel names a device this box may not have: FFmpeg falls back to software, frames still come."""
    clip = h264(tmp_path, "hw", gop=30, bframes=0, frames=30)
    n, _, _ = read_all(clip, skip="none", hwaccel="vaapi")
    assert n == 30


def test_auto_keyframes_only_when_they_cover_the_sampling(tmp_path):
    short_gop = h264(tmp_path, "gop6", gop=6, bframes=0)
    n, pts, cap = read_all(short_gop, skip="auto", sample_period_s=0.2)  # keyframes every 0.2 s: enough for 5 fps
    assert cap.mode == "NONKEY"
    assert n < 40
    assert max(b - a for a, b in zip(pts, pts[1:])) <= 0.2 + 1e-3, "no gap longer than the sampling period"
    n10, _, cap10 = read_all(short_gop, skip="auto", sample_period_s=0.1)  # 10 fps needs more than keyframes
    assert cap10.mode == "NONREF" and n10 == 90


def test_grabber_reads_rtsp_through_pyav(settings, rtsp):
    s = with_workers(settings, watchdog_s=2.0, open_timeout_s=3.0)
    s = s.model_copy(update={"decode": s.decode.model_copy(update={"reader": "pyav"})})
    r = connect(s)
    reg = CameraRegistry(r, s)
    names = StreamNames(s.redis.key_prefix)
    reg.add(CameraConfig(name="cam", url=rtsp.url, fps=5))
    with GrabberThread(s):
        wait_for(lambda: reg.status("cam").get("state") == "live", 20, "live")
        wait_for(lambda: r.xlen(names.frames("cam")) >= 6, 15, "frames")
    msgs = [FrameMsg.decode(f[b"m"]) for _, f in r.xrange(names.frames("cam"))]
    assert all(m.jpeg and (m.frame.width, m.frame.height) == (640, 360) for m in msgs)
    pts = [m.frame.pts for m in msgs]
    assert pts == sorted(pts) and pts[-1] > pts[0]


def test_rtsp_server_passthrough_serves_several_cameras(tmp_path):
    """bench/bench_cameras.py's cameras: one pre-encoded clip at /cam0 .. /cam{N-1}, H.264 as it is."""
    import subprocess as sp

    from conftest import RTSP_SERVER, SYS_PY, free_port, gst_available

    if not gst_available():
        pytest.skip("GStreamer RTSP server for the system python is missing")
    clip = h264(tmp_path, "served", gop=10, bframes=0, frames=150)
    port = free_port()
    srv = sp.Popen([SYS_PY, str(RTSP_SERVER), str(clip), str(port), "--mounts", "2", "--passthrough"],
                   stdout=sp.PIPE, stderr=sp.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "READY"
        for i in (0, 1):
            cap = AvCapture(f"rtsp://127.0.0.1:{port}/cam{i}", skip="none")
            n = 0
            while n < 5 and cap.grab():
                ok, img = cap.retrieve()
                assert ok and img.shape == (240, 320, 3)
                n += 1
            cap.release()
            assert n == 5, f"/cam{i} served frames"
    finally:
        srv.kill()
        srv.wait(10)


def moving_square(path: Path, *, frames: int = 90, gop: int = 30) -> Path:
    """H.264 (PyAV's libx264, IPPP, a keyframe every gop frames) of a square moving 3 px a frame: x = 10 + 3 i."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from clipgen import write_h264

    def squares():
        for i in range(frames):
            img = np.full((240, 320, 3), 60, np.uint8)
            img[100:140, 10 + 3 * i:30 + 3 * i] = 250
            yield img

    return write_h264(squares(), path, 30, gop)


def _x(img) -> int:
    return int((img[120, :, 1] > 150).argmax())


def test_idle_decodes_keyframes_only_and_waking_replays_the_stretch_before(tmp_path):
    clip = moving_square(tmp_path / "sq.mp4")
    cap = AvCapture(str(clip), skip="none", sample_period_s=0.2, idle_capable=True)
    assert cap.grab() and cap.get(0) == 0.0
    assert cap.set_idle(True) == []
    assert cap.grab() and abs(cap.get(0) / 1000 - 1.0) < 1e-3, "idle: the next frame handed out is the keyframe"
    assert cap.decoded == 2, "nothing between the keyframes was decoded"
    replay = cap.set_idle(False)  # motion in the keyframe at 1.0 s
    ts = [t for t, _ in replay]
    assert ts == sorted(ts) and 0.0 < ts[0] <= 0.2 and ts[-1] < 1.0 - 0.1 and len(ts) >= 4, ts
    for t, img in replay:  # decoded right, from the kept packets
        assert abs(_x(img) - (10 + 3 * round(t * 30))) <= 1, (t, _x(img))
    n = 0
    while cap.grab():  # awake again: every frame, decoded right after the keyframe
        ok, img = cap.retrieve()
        t = cap.get(0) / 1000
        assert abs(_x(img) - (10 + 3 * round(t * 30))) <= 1
        n += 1
    assert n == 59


def test_idle_is_given_up_where_keyframes_are_too_rare(tmp_path):
    clip = moving_square(tmp_path / "long.mp4", gop=90)
    cap = AvCapture(str(clip), skip="none", sample_period_s=0.2, idle_capable=True, max_idle_gap_s=1.0)
    assert cap.grab()
    cap.set_idle(True)
    assert cap.grab(), "no keyframe within 1 s: frames come again"
    assert not cap.idle and not cap.idle_capable
    assert cap.get(0) / 1000 <= 1.1
