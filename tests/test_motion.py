"""Motion gating: the detector skips frames where nothing moves, and misses no face for it."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import load_settings
from pipeline.messages import FrameMsg, FrameRef
from pipeline.motion import MotionGate

REPO = Path(__file__).resolve().parents[1]


def frame(box=None, noise=0, seed=0):
    img = np.full((360, 640, 3), 90, np.uint8)
    cv2.rectangle(img, (40, 40), (200, 150), (30, 160, 60), -1)
    if box is not None:
        x, y = box
        cv2.rectangle(img, (x, y), (x + 60, y + 60), (220, 220, 220), -1)
    if noise:
        rng = np.random.default_rng(seed)
        img = np.clip(img.astype(np.int16) + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    return img


def test_gate_skips_still_frames_and_wakes_on_motion_faces_refresh_and_restart():
    g = MotionGate(refresh_s=5.0, hot_s=2.0)
    assert g.moving("c", 0.0, frame()), "a camera's first frame is always detected"
    still = [g.moving("c", 0.1 * i, frame(noise=4, seed=i)) for i in range(1, 30)]
    assert not any(still), "sensor noise on a still scene is not motion"
    assert g.moving("c", 3.0, frame(box=(300, 150))), "something entering is motion"
    g.faces_seen("c", 3.0)
    hot = [g.moving("c", 3.0 + 0.1 * i, frame(box=(300, 150))) for i in range(1, 16)]
    assert all(hot), "a camera with a face in the last 2 s stays hot, even when nothing moves"
    assert not g.moving("c", 5.5, frame(box=(300, 150))), "2.5 s later, a still scene is cold again"
    assert not g.moving("c", 9.0, frame(box=(300, 150))) and g.moving("c", 9.6, frame(box=(300, 150))), \
        "at least every refresh_s after the last detection (4.5 s)"
    assert g.moving("c", 0.5, frame(box=(300, 150))), "stream time going back: the source restarted"
    assert g.moving("other", 0.0, frame()), "cameras are separate"


def test_detect_stage_with_motion_gating_misses_no_face(tmp_path, faces_dir, models_dir):
    sys.path.insert(0, str(REPO / "bench"))
    from clipgen import Visit, render

    from pipeline.stages import DetectStage

    visits = [Visit(person="a", photo=str(faces_dir / "deepface" / "img1.jpg"), start_s=3.0, dur_s=2.0),
              Visit(person="b", photo=str(faces_dir / "deepface" / "img13.jpg"), start_s=9.0, dur_s=2.0)]
    path = tmp_path / "scene.mp4"
    render(visits, path, models_dir=models_dir, fps=10.0, duration_s=14.0, seed=5)
    env = {"FACETRAIL_MODELS_DIR": str(models_dir)}
    seen = {}
    for on in (False, True):
        s = load_settings([], env={**env, "FACETRAIL_MOTION__ENABLED": str(on).lower()})
        stage = DetectStage(s)
        cap = cv2.VideoCapture(str(path))
        faces, seq = set(), 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            ref = FrameRef(camera="door", seq=seq, captured_at=seq / 10, pts=seq / 10, width=640, height=360)
            if stage.process([(FrameMsg(frame=ref, jpeg=b""), img)])[0].faces:
                faces.add(seq)
            seq += 1
        seen[on] = (faces, stage.motion_skipped, seq)
    (off, skipped_off, n), (on, skipped_on, _) = seen[False], seen[True]
    assert len(off) >= 30 and skipped_off == 0
    assert on == off, f"face frames missed with motion gating: {sorted(off - on)}"
    assert skipped_on >= 0.4 * (n - len(off)), f"only {skipped_on} of {n - len(off)} empty frames skipped"


def test_frame_msg_v2_still_and_gated_and_v1_unchanged():
    import json

    import pytest

    from pipeline.messages import MessageVersionError

    ref = FrameRef(camera="c", seq=3, captured_at=1.0, pts=0.5, width=640, height=360)
    v1 = FrameMsg(frame=ref, jpeg=b"xy").encode()
    assert set(json.loads(v1)) == {"v", "frame", "jpeg"}, "an ungated grabber writes v1 exactly as before"
    assert FrameMsg.decode(v1).still is False
    still = FrameMsg.decode(FrameMsg(v=2, frame=ref, jpeg=b"", still=True).encode())
    assert still.still and still.v == 2 and not still.jpeg
    with pytest.raises(ValueError):
        FrameMsg(v=2, frame=ref, jpeg=b"xy", still=True)  # a still frame has no pixels
    with pytest.raises(ValueError):
        FrameMsg(frame=ref, jpeg=b"", still=True)  # v1 has no still field
    with pytest.raises(MessageVersionError):
        FrameMsg.decode(json.dumps({"v": 3, "frame": ref.model_dump(), "jpeg": ""}))


def _h264(src: Path, out: Path, gop: int) -> Path:
    """The composed clip as an IP camera sends it: H.264, IPPP, a keyframe every gop frames (PyAV's libx264)."""
    sys.path.insert(0, str(REPO / "bench"))
    from clipgen import to_h264

    return to_h264(src, out, gop=gop)


def _face_times(path: Path, settings, gated: bool):
    """Run the clip as a live camera's grabber would (every frame sampled) and the detector after it: with
    gated, the grabber's GrabberGate (idle keyframes-only decoding, replay on motion, hot while a face was seen
    within tracking.max_age_s); without, every frame is detected. -> (stream times with a face, skipped, decoded,
    frames)."""
    from pipeline.decode import AvCapture
    from pipeline.motion import GrabberGate
    from pipeline.stages import DetectStage

    stage = DetectStage(settings.model_copy(update={"motion": settings.motion.model_copy(update={"enabled": False})}))
    cap = AvCapture(str(path), skip="none", idle_capable=gated)
    clock = {"t": 0.0, "face": -1e9}
    gate = GrabberGate(settings, "door", lambda: clock["face"] + settings.tracking.max_age_s,
                       clock=lambda: clock["t"])
    faces, seq, n = set(), 0, 0
    published: list[float] = []

    def detect(t, img):
        nonlocal seq
        ref = FrameRef(camera="door", seq=seq, captured_at=t, pts=t, width=img.shape[1], height=img.shape[0])
        seq += 1
        if stage.process([(FrameMsg(v=2, frame=ref, jpeg=b"", gated=True), img)])[0].faces:
            faces.add(round(t, 3))
            clock["face"] = t  # the detector marks the camera hot (in Redis, live)

    last_t = -1.0
    while cap.grab():
        ok, img = cap.retrieve()
        n += 1
        t = cap.get(0) / 1000.0
        assert t > last_t, "frames come in stream order"
        last_t = t
        clock["t"] = t
        if not gated:
            detect(t, img)
            continue
        go, replay = gate.step(cap, t, img)
        for old_t, old_img in replay:
            assert last_t < old_t < t or old_t < t, "replayed frames are new and older than the keyframe"
            detect(old_t, old_img)
            n += 1
        seen = [x for x, _ in replay] + [t]
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert not published or published[-1] < seen[0], "no frame published twice, none out of order"
        published.extend(seen)
        if go:
            detect(t, img)
    cap.release()
    return faces, gate.skipped, cap.decoded, seq


def test_grabber_gate_with_idle_keyframe_decoding_misses_no_face_on_clip_and_hard_scenes(tmp_path, faces_dir,
                                                                                         models_dir):
    """The grabber-side gate (motion.at = grabber, idle_keyframes): no face frame lost against no gating, on a
    composed clip and on a hard scene (small, blurred, dim faces behind a pillar); still frames skipped and
    counted; idle decoding left most frames undecoded, yet every frame with a face was decoded."""
    import pytest

    pytest.importorskip("av")
    sys.path.insert(0, str(REPO / "bench"))
    from clipgen import Bar, Visit, render

    fr = faces_dir / "face_recognition"
    scenes = {
        "clip": ([Visit(person="a", photo=str(faces_dir / "deepface" / "img1.jpg"), start_s=3.3, dur_s=2.0),
                  Visit(person="b", photo=str(faces_dir / "deepface" / "img13.jpg"), start_s=9.5, dur_s=2.0)], []),
        "hard": ([Visit(person="obama", photo=str(fr / "knn_examples" / "test" / "obama1.jpg"), start_s=2.4,
                        dur_s=3.0, face_px=42, x0=0.1, x1=0.9, y=0.5, blur=1.0, gain=0.8),
                  Visit(person="rose", photo=str(fr / "knn_examples" / "train" / "rose_leslie" / "img1.jpg"),
                        start_s=8.6, dur_s=2.5, face_px=48, x0=0.9, x1=0.1, y=0.72, blur=0.8, gain=1.1)],
                 [Bar(x=0.55, width=0.06)]),
    }
    s = load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir)})
    for name, (visits, bars) in scenes.items():
        raw = tmp_path / f"{name}.mp4"
        render(visits, raw, models_dir=models_dir, fps=10.0, duration_s=24.0, seed=5, bars=bars)
        clip = _h264(raw, tmp_path / f"{name}_h264.mp4", gop=10)
        off, _, decoded_off, n = _face_times(clip, s, gated=False)
        on, skipped, decoded_on, detected = _face_times(clip, s, gated=True)
        assert len(off) >= 20, f"{name}: the ungated run finds the faces ({len(off)} frames)"
        assert on == off, f"{name}: face frames missed with the grabber gate: {sorted(off - on)}"
        assert n == decoded_off == 240
        assert skipped >= 5, f"{name}: still frames seen by the gate are counted ({skipped})"
        empty = n - len(off)
        # what still reaches the detector: the replayed stretch before each wake-up, the hot span and the hold
        assert detected - len(off) <= 0.6 * empty, f"{name}: {detected - len(off)} of {empty} empty frames detected"
        assert decoded_on < 0.7 * n, f"{name}: idle decoding decoded {decoded_on} of {n} frames"


def test_live_grabber_gates_before_the_jpeg_and_the_detector_marks_the_camera_hot(settings, tmp_path, faces_dir,
                                                                                  models_dir):
    """A real RTSP camera (a static scene a person walks through) through the grabber with motion.at = grabber and
    the PyAV reader, and a detector worker: still frames travel without pixels (FrameMsg v2) and are counted in
    the grabber's metrics (motion_skipped), idle stretches decode keyframes only, the person's frames are
    detected, and the detector marks the camera hot for the grabber."""
    import pytest

    pytest.importorskip("av")
    from conftest import RtspServer, Running, free_port, gst_available, wait_for

    from pipeline.backbone import connect, transient_client
    from pipeline.cameras import CameraRegistry
    from pipeline.config import CameraConfig
    from pipeline.messages import FacesMsg
    from pipeline.metrics import metrics_key
    from pipeline.motion import hot_key
    from pipeline.streams import StreamNames
    from test_grabber import GrabberThread
    from workers.detector import DetectorWorker

    if not gst_available():
        pytest.skip("GStreamer RTSP server for the system python is missing (.ci/system-deps.sh)")
    sys.path.insert(0, str(REPO / "bench"))
    from clipgen import Visit, render

    raw = tmp_path / "door.mp4"
    render([Visit(person="a", photo=str(faces_dir / "deepface" / "img1.jpg"), start_s=4.0, dur_s=3.0)], raw,
           models_dir=models_dir, fps=30.0, duration_s=10.0, seed=3)
    clip = _h264(raw, tmp_path / "door_h264.mp4", gop=30)
    srv = RtspServer(clip, free_port()).start()
    s = settings.model_copy(update={"decode": settings.decode.model_copy(update={"reader": "pyav"}),
                                    "motion": settings.motion.model_copy(update={"at": "grabber"})})
    r = connect(s)
    rt = transient_client(s, r)
    reg = CameraRegistry(r, s)
    names = StreamNames(s.redis.key_prefix)
    reg.add(CameraConfig(name="door", url=srv.url, fps=5))
    seen: dict[str, int] = {"still": 0, "faces": 0, "frames": 0}
    hot = []
    last = "0-0"

    def progress() -> bool:
        nonlocal last
        for msg_id, f in rt.xrange(names.faces, min=f"({last}" if last != "0-0" else "-"):
            last = msg_id.decode()
            m = FacesMsg.decode(f[b"m"])
            if m.frame.camera == "door":
                seen["frames"] += 1
                seen["faces"] += bool(m.faces)
        if r.exists(hot_key(s, "door")):
            hot.append(True)
        g = {k.decode(): v for k, v in r.hgetall(metrics_key(s, "grabber", "grab-test:door")).items()}
        seen["still"] = int(g.get("motion_skipped", 0))
        return seen["faces"] >= 3 and seen["still"] >= 10 and bool(hot)

    try:
        with GrabberThread(s), Running(DetectorWorker(s, "det-test"), "detector"):
            wait_for(progress, 45, f"still frames counted, faces found, camera marked hot ({seen}, hot={hot})")
    finally:
        srv.kill()
    assert seen["frames"] > seen["faces"], "still frames go on to the matcher with no faces"
