"""The ONNX -> torch converter and the torch SFace path (the CUDA route), checked on CPU against OpenCV DNN."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pipeline.engine.align import align_face  # noqa: E402
from pipeline.engine.embed import EMBEDDERS, SFaceEmbedder, TorchSFaceEmbedder  # noqa: E402
from pipeline.engine.onnx_torch import ConversionError, convert  # noqa: E402
from pipeline.models import model_path  # noqa: E402


@pytest.fixture(scope="module")
def sface_path(models_dir):
    return model_path("sface", models_dir)


@pytest.fixture(scope="module")
def cv_embedder(sface_path):
    return SFaceEmbedder(sface_path, batch=32)


@pytest.fixture(scope="module")
def torch_embedder(sface_path):
    return TorchSFaceEmbedder(sface_path, batch=32, device="cpu", threads=1)  # CI boxes are small and busy


def _random_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    # smooth-ish images plus noise: closer to real inputs than white noise
    return [np.clip(base.astype(int) // 2 + rng.integers(0, 128, (112, 112, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


def test_torch_matches_opencv_batch_1_and_batch_7(cv_embedder, torch_embedder):
    crops = _random_crops(7)
    a, b = cv_embedder.embed(crops), torch_embedder.embed(crops)
    assert a.shape == b.shape == (7, 128)
    assert (a * b).sum(1).min() >= 0.9999
    one = torch_embedder.embed(crops[:1])
    assert float(one[0] @ a[0]) >= 0.9999


def test_torch_matches_opencv_on_real_faces(faces_dir, cv_embedder, torch_embedder, settings):
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import load_image
    engine = FaceEngine(settings)
    crops = []
    for name in ("two_people.jpg", "obama.jpg", "biden.jpg"):
        img = load_image(faces_dir / "face_recognition" / name)
        crops += [align_face(img, f.landmarks) for f in engine.detect([img])[0]]
    assert len(crops) == 4
    a, b = cv_embedder.embed(crops), torch_embedder.embed(crops)
    assert (a * b).sum(1).min() >= 0.9999


def test_dynamic_batch_gives_per_sample_results(sface_path, torch_embedder):
    module = convert(sface_path)
    x = torch.from_numpy(np.stack(_random_crops(3, seed=1)).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.inference_mode():
        batched = module(x)
        single = torch.cat([module(x[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 128)
    assert torch.allclose(batched, single, atol=1e-4)


def _tiny_model(extra_op: str | None = None):
    """Conv (asymmetric pads, groups) -> BatchNorm -> PRelu -> Flatten -> Gemm -> Sub -> Mul (+ an optional op)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w, "w"), (rng.standard_normal(4).astype(np.float32), "b"),
        (rng.random(4).astype(np.float32) + 0.5, "g"), (rng.standard_normal(4).astype(np.float32), "beta"),
        (rng.standard_normal(4).astype(np.float32), "mean"), (rng.random(4).astype(np.float32) + 0.5, "var"),
        (rng.random((4, 1, 1)).astype(np.float32), "slope"),
        (rng.standard_normal((5, 4 * 6 * 5)).astype(np.float32), "fw"),
        (rng.standard_normal(5).astype(np.float32), "fb"),
        (np.array([0.5], np.float32), "s1"), (np.array([2.0], np.float32), "s2")]]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 0, 0, 1], strides=[1, 1], group=2,
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("PRelu", ["bn", "slope"], ["pr"]),
        helper.make_node("Dropout", ["pr"], ["dr"]),
        helper.make_node("Flatten", ["dr"], ["fl"]),
        helper.make_node("Gemm", ["fl", "fw", "fb"], ["gm"], transB=1, alpha=0.7, beta=1.3),
        helper.make_node("Sub", ["gm", "s1"], ["sb"]),
        helper.make_node("Mul", ["sb", "s2"], ["y"]),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y"], ["z"]))
    out = "z" if extra_op else "y"
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7, 6])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_op_semantics_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = _tiny_model()
    model.ir_version = 7
    x = np.random.default_rng(4).standard_normal((3, 4, 7, 6)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.inference_mode():
        got = convert(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unsupported_op_is_refused_at_conversion():
    with pytest.raises(ConversionError, match="Sigmoid"):
        convert(_tiny_model("Sigmoid"))


def test_registry_device_selection(sface_path):
    assert type(EMBEDDERS.create("sface", sface_path, batch=4, device="cpu", cpu_backend="opencv")) is SFaceEmbedder
    emb = EMBEDDERS.create("sface-torch", sface_path, batch=4, device="cpu")
    assert isinstance(emb, TorchSFaceEmbedder) and emb.device == "cpu"
