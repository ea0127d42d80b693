"""The OpenVINO CPU backend of SFace (the default on CPU when the `openvino` extra is installed): the same vectors
as OpenCV DNN (cosine >= 0.9999) on real aligned faces, at batch 1 and across batch chunks; how `sface` picks it."""
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
    ov = OpenVinoSFaceEmbedder(sface_path, batch=3, threads=1)  # batches of 3, 3, 1: the dynamic batch dimension
    got = ov.embed(real_crops)
    assert got.shape == (7, 128) and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (cv * got).sum(1).min() >= 0.9999
    one = ov.embed(real_crops[:1])
    assert float(one[0] @ cv[0]) >= 0.9999
    assert ov.embed([]).shape == (0, 128)
    with pytest.raises(ValueError, match="112x112x3"):
        ov.embed([real_crops[0][:50]])


def test_sface_picks_openvino_on_cpu_unless_told(sface_path):
    assert isinstance(EMBEDDERS.create("sface", sface_path, device="cpu"), OpenVinoSFaceEmbedder)
    assert isinstance(EMBEDDERS.create("sface", sface_path, device="cpu", cpu_backend="opencv"), SFaceEmbedder)
    assert isinstance(EMBEDDERS.create("sface-openvino", sface_path), OpenVinoSFaceEmbedder)
    with pytest.raises(ModelError, match="cpu_backend"):
        EMBEDDERS.create("sface", sface_path, device="cpu", cpu_backend="tpu")
