"""Hard footage (issue 15): the small-face pass, flip-averaged and low-resolution templates, and a tiny hard clip
run through the stages in-process (bench/eval_hard.py's harness). README "Hard footage" has the measurements."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.engine.degrade import degraded_crops
from pipeline.engine.embed import FlipAveraged
from pipeline.engine.engine import FaceEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from clipgen import Bar, Visit, _detector, head_crop  # noqa: E402


@pytest.fixture(scope="module")
def hard_settings(models_dir):
    return load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir)})


def _scene(faces_dir: Path, models_dir: Path, size: tuple[int, int], face_px: int) -> tuple[np.ndarray, list]:
    """A plain frame of `size` with Obama's head crop pasted so that his face is face_px tall; its box."""
    crop, face_h = head_crop(str(faces_dir / "face_recognition" / "obama.jpg"), _detector(models_dir))
    s = face_px / face_h
    head = cv2.resize(crop, (int(crop.shape[1] * s), int(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
    w, h = size
    frame = np.full((h, w, 3), 120, np.uint8)
    y0, x0 = h // 2 - head.shape[0] // 2, w // 3
    frame[y0:y0 + head.shape[0], x0:x0 + head.shape[1]] = head
    cx, cy = x0 + head.shape[1] / 2, y0 + head.shape[0] / 2
    return frame, [cx - face_px * 0.4, cy - face_px / 2, face_px * 0.8, face_px]


def _near(box, gt) -> bool:
    dx, dy = box[0] + box[2] / 2 - gt[0] - gt[2] / 2, box[1] + box[3] / 2 - gt[1] - gt[3] / 2
    return abs(dx) < gt[3] / 2 and abs(dy) < gt[3] / 2


def _engine(settings, **models) -> FaceEngine:
    return FaceEngine(settings.model_copy(update={"models": settings.models.model_copy(update=models)}))


def test_small_face_pass_finds_a_face_the_640_px_pass_misses(hard_settings, faces_dir, models_dir):
    # 1080p frame, a 22 px face: the <= 640 px pass sees it at ~7 px and finds nothing
    frame, gt = _scene(faces_dir, models_dir, (1920, 1080), 22)
    coarse = _engine(hard_settings, small_face_pass="off").detect([frame])[0]
    assert not any(_near(f.box, gt) for f in coarse)
    full = _engine(hard_settings, small_face_pass="full")
    found = full.detect([frame])[0]
    assert any(_near(f.box, gt) for f in found), found
    assert full.detector.small_calls == 1
    # regions only refines faces the coarse pass found: nothing to refine here
    assert not any(_near(f.box, gt) for f in _engine(hard_settings, small_face_pass="regions").detect([frame])[0])


def test_regions_pass_replaces_a_small_face_with_its_full_resolution_detection(hard_settings, faces_dir, models_dir):
    frame, gt = _scene(faces_dir, models_dir, (1280, 720), 44)
    coarse = _engine(hard_settings, small_face_pass="off").detect([frame])[0]
    fine = _engine(hard_settings, small_face_pass="regions").detect([frame])[0]
    assert len(coarse) == len(fine) == 1 and _near(coarse[0].box, gt) and _near(fine[0].box, gt)
    assert fine[0].extras.get("fine") and not coarse[0].extras.get("fine")
    assert not np.allclose(fine[0].landmarks, coarse[0].landmarks)  # from the full-resolution pass
    # a large face is the coarse pass's: no second pass at all
    big, _ = _scene(faces_dir, models_dir, (1280, 720), 160)
    eng = _engine(hard_settings, small_face_pass="regions")
    assert len(eng.detect([big])[0]) == 1 and eng.detector.small_calls == 0


def test_flip_averaged_embedding_is_deterministic_mirror_invariant_and_keeps_identity(hard_settings, faces_dir):
    eng = FaceEngine(hard_settings)
    img = cv2.imread(str(faces_dir / "face_recognition" / "obama.jpg"))
    crop = eng.align(img, eng.detect([img])[0][:1])[0]
    flip = FlipAveraged(eng.embedder)
    a, b = flip.embed([crop]), flip.embed([crop])
    assert np.array_equal(a, b) and abs(float(np.linalg.norm(a[0])) - 1) < 1e-5
    mirrored = flip.embed([np.ascontiguousarray(crop[:, ::-1])])
    assert float(a[0] @ mirrored[0]) > 0.9999  # the same two views, summed in the other order
    plain = eng.embedder.embed([crop])[0]
    assert 0.9 < float(a[0] @ plain) < 0.99999  # the same person, not the same vector
    assert flip.embed([]).shape == (0, flip.dim)


def test_lowres_templates_are_enrolled_and_meet_small_faces_closer(hard_settings, faces_dir):
    from index.enroll import templates_from_image

    img = cv2.imread(str(faces_dir / "face_recognition" / "obama.jpg"))
    eng = FaceEngine(hard_settings)
    plain = templates_from_image(eng, img, hard_settings)
    gal = hard_settings.model_copy(update={"gallery": hard_settings.gallery.model_copy(
        update={"lowres_templates": [40, 56]})})
    both = templates_from_image(eng, img, gal)
    assert len(plain) == 1 and len(both) == 3
    assert np.allclose(both[0].embedding, plain[0].embedding, atol=1e-6)
    crop = eng.align(img, eng.detect([img])[0][:1])[0]
    assert len(degraded_crops(crop, (40, 56))) == 2 and degraded_crops(crop, (40,))[0].shape == crop.shape
    # a different photo of him, 36 px tall and blurred, as a far camera sees it
    other = cv2.imread(str(faces_dir / "face_recognition" / "knn_examples" / "test" / "obama1.jpg"))
    f = eng.detect([other])[0][0]
    s = 36.0 / f.box[3]
    small = cv2.GaussianBlur(cv2.resize(other, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), (0, 0), 1.2)
    probe_face = eng.detect([cv2.resize(small, None, fx=3, fy=3)])[0][0]
    probe = eng.embedder.embed(eng.align(cv2.resize(small, None, fx=3, fy=3), [probe_face]))[0]
    sharp = float(probe @ both[0].embedding)
    low = max(float(probe @ t.embedding) for t in both[1:])
    assert low > sharp + 0.05, (sharp, low)


def test_tiny_hard_clip_names_the_small_enrolled_face_once_and_leaves_the_stranger_unknown(hard_settings, faces_dir,
                                                                                           tmp_path):
    import eval_hard

    fr = faces_dir / "face_recognition"
    s = hard_settings.model_copy(update={"gallery": hard_settings.gallery.model_copy(
        update={"lowres_templates": [40, 56]})})
    eng = FaceEngine(s)
    gallery = eval_hard.enroll(eng, (40, 56), {"obama": "face_recognition/obama.jpg",
                                               "p1": "deepface/img1.jpg"})
    visits = [Visit(person="obama", photo=str(fr / "knn_examples" / "test" / "obama1.jpg"), start_s=0.3, dur_s=5.5,
                    face_px=42, x0=0.1, x1=0.9, y=0.5, blur=1.0, gain=0.8),
              Visit(person="rose", photo=str(fr / "knn_examples" / "train" / "rose_leslie" / "img1.jpg"),
                    start_s=0.5, dur_s=5.0, face_px=48, x0=0.9, x1=0.1, y=0.72, blur=0.8, gain=1.1)]
    r = eval_hard.evaluate("tiny", s, eng, gallery, tmp_path, scene=(visits, [Bar(x=0.55, width=0.06)], 5), fps=6.0)
    rows = {v["person"]: v for v in r["per_visit"]}
    why = [(v["person"], v["verdict"], v["tracks"], v["names"], v["means"]) for v in r["per_visit"]]
    assert rows["obama"]["verdict"] == "named" and rows["obama"]["tracks"] == 1, why
    assert rows["rose"]["verdict"] == "unknown" and not rows["rose"]["names"], why
    assert r["detection_recall"]["all"] > 0.9
