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

    from workers.detector import DetectStage

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
