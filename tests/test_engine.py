"""The face engine on real photos with the real models: detection, quality, alignment, embedding."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.engine.align import TEMPLATE_112, align_face
from pipeline.engine.detect import DETECTORS
from pipeline.engine.embed import EMBEDDERS, SFaceEmbedder, cuda_available, resolve_device
from pipeline.engine.engine import FaceEngine
from pipeline.engine.imageio import load_image
from pipeline.engine.quality import frontal_score
from pipeline.engine.types import Face
from pipeline.models import ModelError, model_path

# Shared photos with more than one face; every other photo has exactly one.
KNOWN_COUNTS = {"two_people.jpg": 2, "obama_and_biden.jpg": 3, "kit_with_rose.jpg": 2}


@pytest.fixture(scope="module")
def engine(models_dir, tmp_path_factory):
    return FaceEngine(load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir),
                                             "FACETRAIL_DATA_DIR": str(tmp_path_factory.mktemp("d"))}))


@pytest.fixture(scope="module")
def retina_engine(models_dir, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return FaceEngine(load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir),
                                             "FACETRAIL_DATA_DIR": str(tmp_path_factory.mktemp("d")),
                                             "FACETRAIL_MODELS__DETECTOR": "retinaface"}))


def _photos(faces_dir):
    return sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_every_shared_photo_has_its_faces(engine, faces_dir):
    photos = _photos(faces_dir)
    assert len(photos) >= 50
    wrong = {}
    for p in photos:
        img = load_image(p)
        faces = engine.detect([img])[0]
        if len(faces) != KNOWN_COUNTS.get(p.name, 1):
            wrong[p.name] = len(faces)
        for f in faces:
            assert 0.0 <= f.quality <= 1.0
            assert f.score >= engine.settings.models.det_score_threshold
            x, y, w, h = f.box
            assert np.all(f.landmarks[:, 0] > x - 0.1 * w) and np.all(f.landmarks[:, 0] < x + 1.1 * w)
            assert f.landmarks[0, 0] < f.landmarks[1, 0]  # right eye (image left) first
    assert wrong == {}


def test_two_people_and_batch_of_images(engine, faces_dir):
    a = load_image(faces_dir / "face_recognition" / "two_people.jpg")
    b = load_image(faces_dir / "face_recognition" / "obama.jpg")
    per_image = engine.analyze([a, b, np.zeros((50, 80, 3), np.uint8)])
    assert [len(x) for x in per_image] == [2, 1, 0]
    areas = [f.box[2] * f.box[3] for f in per_image[0]]
    assert areas == sorted(areas, reverse=True)
    for f in per_image[0] + per_image[1]:
        assert f.embedding.shape == (128,) and abs(float(np.linalg.norm(f.embedding)) - 1) < 1e-4
    assert engine.analyze([]) == []


def test_boxes_map_back_to_full_resolution(engine, faces_dir):
    img = load_image(faces_dir / "face_recognition" / "obama.jpg")  # 910x1137: detected on a 512x640 copy
    big = cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    f1, f2 = engine.detect([img])[0][0], engine.detect([big])[0][0]
    np.testing.assert_allclose(f2.box / 2, f1.box, rtol=0.03, atol=3)
    np.testing.assert_allclose(f2.landmarks / 2, f1.landmarks, atol=4)


def test_detector_rejects_non_images(engine):
    with pytest.raises(ValueError, match="uint8"):
        engine.detect([np.zeros((20, 20), np.float32)])


def test_retinaface_agrees_with_yunet(engine, retina_engine, faces_dir):
    for name, n in (("two_people.jpg", 2), ("obama.jpg", 1), ("obama-240p.jpg", 1)):
        img = load_image(faces_dir / "face_recognition" / name)
        y, r = engine.detect([img])[0], retina_engine.detect([img])[0]
        assert len(r) == n
        for fy in y:
            best = max(r, key=lambda fr: _iou(fy.box, fr.box))
            assert _iou(fy.box, best.box) > 0.5
            assert np.abs(best.landmarks - fy.landmarks).max() < 0.15 * fy.box[2]  # same order, same points
            assert best.quality > 0.5


def test_quality_falls_for_blur_small_and_turned_faces(engine, faces_dir):
    img = load_image(faces_dir / "face_recognition" / "obama.jpg")
    sharp = engine.detect([img])[0][0]
    blurred = engine.detect([cv2.GaussianBlur(img, (0, 0), 8)])[0]
    small = engine.detect([cv2.resize(img, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)])[0]
    assert sharp.quality > 0.9
    sharpness = sharp.extras["quality_parts"]["sharpness"]
    assert blurred and blurred[0].extras["quality_parts"]["sharpness"] < 0.5 * sharpness
    assert small and small[0].quality < sharp.quality - 0.3
    t = TEMPLATE_112.copy()
    assert frontal_score(t) == 1.0
    turned = t.copy()
    turned[2, 0] = t[1, 0]  # nose under the left eye: a face turned well to one side
    assert frontal_score(turned) < 0.3
    tilted = t @ np.array([[0.8, -0.6], [0.6, 0.8]])  # in-plane rotation changes nothing
    assert abs(frontal_score(tilted) - 1.0) < 1e-9


def test_enrollment_photos_pass_the_quality_gate(engine, faces_dir):
    gate = engine.settings.thresholds.min_enroll_quality
    fr = faces_dir / "face_recognition"
    photos = sorted((fr / "knn_examples" / "train").glob("*/*")) + [fr / "lin-manuel-miranda.png",
                                                                    fr / "alex-lacamoire.png"]
    low = {}
    for p in photos:
        faces = engine.detect([load_image(p)])[0]
        if not faces or faces[0].quality < gate:
            low[p.name] = faces[0].quality if faces else None
    assert low == {}


def test_alignment_matches_opencv_aligncrop(engine, faces_dir, models_dir):
    img = load_image(faces_dir / "face_recognition" / "two_people.jpg")
    rec = cv2.FaceRecognizerSF.create(str(model_path("sface", models_dir)), "")
    for f in engine.detect([img])[0]:
        row = np.concatenate([f.box, f.landmarks.reshape(-1), [f.score]]).astype(np.float32)[None]
        ref = rec.alignCrop(img, row)
        ours = align_face(img, f.landmarks)
        assert ours.shape == ref.shape == (112, 112, 3)
        assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 1.0


def test_batched_embedding_equals_facerecognizersf(engine, faces_dir, models_dir):
    rec = cv2.FaceRecognizerSF.create(str(model_path("sface", models_dir)), "")
    crops = []
    for name in ("two_people.jpg", "obama.jpg", "biden.jpg"):
        img = load_image(faces_dir / "face_recognition" / name)
        crops += engine.align(img, engine.detect([img])[0])
    emb = SFaceEmbedder(model_path("sface", models_dir), batch=3)  # 4 crops: a full batch and a partial one
    ours = emb.embed(crops)
    ref = np.concatenate([rec.feature(c) for c in crops])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert (ours * ref).sum(1).min() > 0.9999
    assert emb.embed([]).shape == (0, 128)
    with pytest.raises(ValueError, match="112x112"):
        emb.embed([np.zeros((100, 100, 3), np.uint8)])


def test_same_and_different_people(engine, faces_dir):
    fr = faces_dir / "face_recognition"
    o1, o2, b = (engine.main_face(load_image(fr / n)) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert engine.same(engine.similarity(o1, o2))
    assert not engine.same(engine.similarity(o1, b))
    assert engine.main_face(np.full((120, 160, 3), 128, np.uint8)) is None


def test_registries_and_device_resolution(models_dir):
    assert {"yunet", "retinaface"} <= set(DETECTORS.names())
    assert {"sface", "sface-torch"} <= set(EMBEDDERS.names())
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if cuda_available() else "cpu")
    if not cuda_available():
        with pytest.raises(ModelError, match="no CUDA"):
            resolve_device("cuda")
        with pytest.raises(ModelError, match="no CUDA"):
            EMBEDDERS.create("sface", model_path("sface", models_dir), device="cuda")


def test_face_type_is_unchanged():
    f = Face(box=np.array([1.0, 2.0, 3.0, 4.0]), landmarks=np.zeros((5, 2)), score=0.9)
    assert f.quality == 0.0 and f.embedding is None and f.box_list() == [1.0, 2.0, 3.0, 4.0]


def test_concurrent_callers_get_the_same_results(engine, faces_dir):
    """The API and workers share one engine across threads: cv2 objects keep per-call state behind locks."""
    from concurrent.futures import ThreadPoolExecutor
    fr = faces_dir / "face_recognition"
    imgs = [load_image(fr / n) for n in ("two_people.jpg", "obama.jpg", "biden.jpg", "obama_small.jpg")]
    want = [[f.embedding for f in faces] for faces in engine.analyze(imgs)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: engine.analyze([imgs[i % 4]])[0], range(12)))
    for i, faces in enumerate(got):
        assert len(faces) == len(want[i % 4])
        for f, w in zip(faces, want[i % 4]):
            assert float(f.embedding @ w) > 0.9999
