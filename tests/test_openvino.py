"""The OpenVINO CPU backends of SFace and YuNet (the default on CPU when the `openvino` extra is installed): at
f32 the same vectors as OpenCV DNN (cosine >= 0.9999) on real aligned faces, at batch 1 and across batch chunks,
and FaceDetectorYN's rows; at the runtime's own precision (bf16 on CPUs with AVX-512 BF16) within cosine 0.999
and 1 px; how `sface` and `yunet` pick them."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from pipeline.engine.align import align_face  # noqa: E402
from pipeline.engine.embed import EMBEDDERS, OpenVinoSFaceEmbedder, SFaceEmbedder  # noqa: E402
from pipeline.models import ModelError, model_path  # noqa: E402


@pytest.fixture(scope="module")
def sface_path(models_dir):
    return model_path("sface", models_dir)


@pytest.fixture(scope="module")
def real_crops(faces_dir, models_dir, tmp_path_factory):
    from pipeline.config import load_settings
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import load_image
    engine = FaceEngine(load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir),
                                               "FACETRAIL_DATA_DIR": str(tmp_path_factory.mktemp("d"))}))
    crops = []
    for name in ("two_people.jpg", "obama.jpg", "biden.jpg", "knn_examples/test/obama_and_biden.jpg"):
        img = load_image(faces_dir / "face_recognition" / name)
        crops += [align_face(img, f.landmarks) for f in engine.detect([img])[0]]
    assert len(crops) == 7
    return crops


def test_openvino_matches_opencv_on_real_faces(sface_path, real_crops):
    cv = SFaceEmbedder(sface_path, batch=32).embed(real_crops)
    ov = OpenVinoSFaceEmbedder(sface_path, batch=3, threads=1, precision="f32")  # batches of 3, 3, 1: dynamic batch
    got = ov.embed(real_crops)
    assert got.shape == (7, 128) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (cv * got).sum(1).min() >= 0.9999
    one = ov.embed(real_crops[:1])
    assert float(one[0] @ cv[0]) >= 0.9999
    assert ov.embed([]).shape == (0, 128)
    with pytest.raises(ValueError, match="112x112x3"):
        ov.embed([real_crops[0][:50]])


def test_openvino_at_the_cpus_own_precision_stays_close(sface_path, real_crops):
    cv = SFaceEmbedder(sface_path, batch=32).embed(real_crops)
    got = OpenVinoSFaceEmbedder(sface_path, batch=4, threads=1, precision="auto").embed(real_crops)
    assert (cv * got).sum(1).min() >= 0.999
    with pytest.raises(ModelError, match="cpu_precision"):
        OpenVinoSFaceEmbedder(sface_path, precision="int4")


def test_sface_picks_openvino_on_cpu_unless_told(sface_path):
    assert isinstance(EMBEDDERS.create("sface", sface_path, device="cpu"), OpenVinoSFaceEmbedder)
    assert type(EMBEDDERS.create("sface", sface_path, device="cpu", cpu_backend="opencv")) is SFaceEmbedder
    assert isinstance(EMBEDDERS.create("sface-openvino", sface_path), OpenVinoSFaceEmbedder)
    with pytest.raises(ModelError, match="cpu_backend"):
        EMBEDDERS.create("sface", sface_path, device="cpu", cpu_backend="tpu")


def test_yunet_on_openvino_gives_facedetectoryn_rows(models_dir, faces_dir):
    """Our decoding of YuNet's raw outputs (OpenVINO) against OpenCV's FaceDetectorYN, on photos of several sizes
    (padding to multiples of 32) and clip frames: the same faces, boxes and landmarks within 0.01 px."""
    import cv2

    from pipeline.engine.detect import DETECTORS, YuNetDetector, YuNetOpenVinoDetector, downscale
    from pipeline.engine.imageio import load_image

    path = model_path("yunet", models_dir)
    kw = dict(score_threshold=0.75, nms_threshold=0.3, max_side=640, min_face_px=16)
    ref, ov = YuNetDetector(path, **kw), YuNetOpenVinoDetector(path, threads=1, precision="f32", **kw)
    own = YuNetOpenVinoDetector(path, threads=1, precision="auto", **kw)
    fr = faces_dir / "face_recognition"
    imgs = [load_image(fr / n) for n in ("two_people.jpg", "obama.jpg", "obama-240p.jpg", "biden.jpg")]
    cap = cv2.VideoCapture(str(fr / "short_hamilton_clip.mp4"))
    imgs += [cap.read()[1] for _ in range(5)]
    total = 0
    for img in imgs:
        small, _ = downscale(img, 640)
        a, b = ref._rows(small), ov._rows(small)
        a = np.zeros((0, 15)) if a is None else a[np.argsort(-a[:, 14])]
        b = np.zeros((0, 15)) if b is None else b[np.argsort(-b[:, 14])]
        assert a.shape == b.shape, (img.shape, a[:, 14], b[:, 14])
        assert np.abs(a - b).max(initial=0) < 0.01
        c = own._rows(small)
        c = np.zeros((0, 15)) if c is None else c[np.argsort(-c[:, 14])]
        assert c.shape == a.shape and np.abs(a[:, :14] - c[:, :14]).max(initial=0) < 1.0
        assert np.abs(a[:, 14] - c[:, 14]).max(initial=0) < 0.01
        total += len(a)
    assert total >= 10
    assert len(ov.detect_one(imgs[0])) == 2  # two_people.jpg, mapped back to full resolution
    assert isinstance(DETECTORS.create("yunet", path, **kw), YuNetOpenVinoDetector)
    assert isinstance(DETECTORS.create("yunet", path, cpu_backend="opencv", **kw), YuNetDetector)
    assert len(ov._compiled) <= YuNetOpenVinoDetector.MAX_SHAPES
