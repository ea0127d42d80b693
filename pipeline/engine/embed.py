"""Embedders: a batch of aligned 112x112 BGR crops in, an (N, dim) float32 array of unit vectors out.

"sface" picks its backend from `device`: "cuda" runs the ONNX graph converted to torch (pipeline/engine/onnx_torch.py,
dynamic batch); "cpu" runs it through OpenVINO when the `openvino` extra is installed (about twice OpenCV's speed
on the 2-core VM: README "Face engine") or else OpenCV DNN (`models.cpu_backend` forces one); "auto" is cuda when
torch sees a GPU, else cpu. Every backend gives the same vectors (cosine >= 0.9999, tested on CPU). "sface-torch"
and "sface-openvino" force a backend - for tests and benchmarks.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from ..models import ModelError
from ..registry import Registry
from .cvutil import quiet_cv2
from .ovutil import cpu_config, u8_bgr_input

EMBEDDERS: Registry["Embedder"] = Registry("embedder")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class Embedder:
    name = "base"
    dim = 0
    input_size = 112
    device = "cpu"

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class FlipAveraged(Embedder):
    """Test-time flip averaging: each crop and its mirror image are embedded (one batch) and the two vectors
    averaged. A mirrored aligned crop is itself an aligned face; averaging cancels part of the noise a small,
    blurred face and a slightly off landmark put in one view. Twice the embedding cost. Deterministic, and the
    gallery goes through the same wrapper, so enrolled templates and live faces stay comparable."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.name, self.dim = f"{inner.name}+flip", inner.dim
        self.input_size, self.device = inner.input_size, inner.device

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        v = self.inner.embed(list(crops) + [np.ascontiguousarray(c[:, ::-1]) for c in crops])
        n = len(crops)
        return l2_normalize(v[:n] + v[n:])


def _check_crops(crops: list[np.ndarray], size: int) -> None:
    for c in crops:
        if c.shape != (size, size, 3) or c.dtype != np.uint8:
            raise ValueError(f"embedder wants {size}x{size}x3 uint8 aligned crops, got {c.shape} {c.dtype}")


class SFaceEmbedder(Embedder):
    """SFace through OpenCV DNN (batched blob; same preprocessing as FaceRecognizerSF: RGB, no mean, scale 1)."""

    name = "sface"
    dim = 128

    def __init__(self, model_path: Path, *, batch: int = 32):
        self.batch = batch
        with quiet_cv2():
            self._net = cv2.dnn.readNetFromONNX(str(model_path))
        self._lock = threading.Lock()  # a cv2.dnn.Net holds its input as state: one forward at a time

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        return self._embed_blobs(crops)

    def _embed_blobs(self, crops: list[np.ndarray]) -> np.ndarray:
        """Chunks of `batch` crops -> FaceRecognizerSF's blob (RGB, no mean, scale 1) -> self._forward -> unit
        vectors. Shared by the backends that run the ONNX file as it is."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        _check_crops(crops, self.input_size)
        out = []
        for i in range(0, len(crops), self.batch):
            chunk = list(crops[i:i + self.batch])
            blob = self._blob(chunk)
            with self._lock:
                out.append(np.array(self._forward(blob), np.float32).reshape(len(chunk), -1))
        return l2_normalize(np.concatenate(out))

    def _blob(self, chunk: list[np.ndarray]) -> np.ndarray:
        return cv2.dnn.blobFromImages(chunk, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        self._net.setInput(blob)
        return self._net.forward()


class OpenVinoSFaceEmbedder(SFaceEmbedder):
    """SFace's ONNX file through OpenVINO's CPU runtime, batch dimension made dynamic; SFaceEmbedder's batching.
    The crops go in as they are (uint8 BGR, NHWC): OpenVINO's own preprocessing does FaceRecognizerSF's blob
    (to float, BGR -> RGB, NCHW) inside the compiled graph, which saves the float copy numpy would make."""

    name = "sface-openvino"
    dim = 128

    def __init__(self, model_path: Path, *, batch: int = 32, threads: int = 0, precision: str = "auto"):
        try:
            import openvino as ov
        except ImportError:
            raise ModelError("the OpenVINO backend needs the `openvino` extra: pip install -e '.[openvino]'") from None
        core = ov.Core()
        model = core.read_model(str(model_path))
        model.reshape({model.inputs[0]: [-1, 3, self.input_size, self.input_size]})
        model = u8_bgr_input(model, rgb=True)
        self.batch = batch
        self._compiled = core.compile_model(model, "CPU", cpu_config(threads, precision))
        self._lock = threading.Lock()  # one infer request behind the compiled model's __call__

    def _blob(self, chunk: list[np.ndarray]) -> np.ndarray:
        return np.stack(chunk)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        return self._compiled(blob)[0]


def openvino_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("openvino") is not None


def cpu_embedder(model_path: Path, *, batch: int, backend: str, threads: int, precision: str = "auto") -> Embedder:
    """The CPU SFace backend: `backend` auto (OpenVINO when installed, else OpenCV), openvino or opencv."""
    if backend == "openvino" or (backend == "auto" and openvino_available()):
        return OpenVinoSFaceEmbedder(model_path, batch=batch, threads=threads, precision=precision)
    if backend not in ("auto", "opencv"):
        raise ModelError(f"unknown models.cpu_backend {backend!r}; use auto, openvino or opencv")
    return SFaceEmbedder(model_path, batch=batch)


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA GPU. Checks for an NVIDIA device first so that CPU-only
    machines never pay for importing torch."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return False
    if not Path("/proc/driver/nvidia").exists() and not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    import torch
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if torch sees a GPU else 'cpu'; 'cuda' without one is a ModelError naming the problem."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise ModelError("models.device is 'cuda' but torch sees no CUDA GPU (or the `torch` extra is not "
                         "installed); set models.device to 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown models.device {device!r}; use auto, cpu or cuda")
    return device


class TorchSFaceEmbedder(Embedder):
    """SFace's ONNX graph converted to torch (dynamic batch): the CUDA path, also runnable on CPU."""

    name = "sface-torch"
    dim = 128

    def __init__(self, model_path: Path, *, batch: int = 32, device: str = "cpu", threads: int | None = None):
        """threads: torch CPU threads (process-wide, torch.set_num_threads); on a busy CPU 1 avoids OpenMP
        threads waiting on each other, which can make a batch-1 call 10x slower."""
        from .onnx_torch import ConversionError, convert
        try:
            import torch
        except ImportError:
            raise ModelError("the torch embedding path needs the `torch` extra: pip install -e '.[torch]'") from None
        try:
            module = convert(model_path)
        except ConversionError as e:
            raise ModelError(f"cannot convert {model_path} to torch: {e}") from None
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.batch = batch
        self.device = device
        # channels_last: the fast layout for these convolutions on CPU (oneDNN) and on recent GPUs (cuDNN)
        self._module = module.to(device).to(memory_format=torch.channels_last)
        if device.startswith("cuda"):
            # TF32 (on by default for cuDNN convolutions on Ampere and newer) rounds inputs to 10-bit mantissas;
            # the CPU and GPU paths must give the same vectors (cosine >= 0.9999), so keep full fp32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        _check_crops(crops, self.input_size)
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch):
                chunk = np.stack(crops[i:i + self.batch])[..., ::-1]  # BGR -> RGB, like swapRB=True
                # NHWC uint8 -> NCHW float in channels_last memory: a view, no copy before the dtype change
                x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device).permute(0, 3, 1, 2).float()
                out.append(self._module(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


@EMBEDDERS.register("sface")
def make_sface(model_path: Path, *, batch: int = 32, device: str = "cpu", cpu_backend: str = "auto",
               threads: int = 0, precision: str = "auto") -> Embedder:
    dev = resolve_device(device)
    if dev == "cuda":
        return TorchSFaceEmbedder(model_path, batch=batch, device="cuda")
    return cpu_embedder(model_path, batch=batch, backend=cpu_backend, threads=threads, precision=precision)


@EMBEDDERS.register("sface-openvino")
def make_sface_openvino(model_path: Path, *, batch: int = 32, threads: int = 0, precision: str = "auto",
                        **_) -> Embedder:
    return OpenVinoSFaceEmbedder(model_path, batch=batch, threads=threads, precision=precision)


@EMBEDDERS.register("sface-torch")
def make_sface_torch(model_path: Path, *, batch: int = 32, device: str = "auto", **_) -> Embedder:
    dev = "cuda" if device in ("auto", "cuda") and cuda_available() else "cpu"
    if device == "cuda" and dev != "cuda":
        resolve_device("cuda")  # raises the clear error
    return TorchSFaceEmbedder(model_path, batch=batch, device=dev)
