"""dlib's ResNet face descriptor (128-D, 99.38 % LFW) as ported to TF.js by face-api.js, run in torch on CPU.

Evaluation only (bench/eval_faceapi.py): measured weaker than SFace against strangers on small, blurred faces
(README "Hard footage"), so it is not a pipeline embedder.

The weights are the `face_recognition_model` shard + manifest that the npm package `@vladmandic/face-api` 1.7.15
(MIT; the face-api.js 0.22.2 package on npm ships no weights) carries in `model/`; they are Davis King's dlib
`dlib_face_recognition_resnet_model_v1` (CC0 / public domain) converted and uint8-quantised (per tensor:
value = q * scale + min; the conv64 filters are stored as float32). The network is face-api.js's
`FaceRecognitionNet.forwardInput`, layer by layer:

    RGB 150x150, (x - [122.782, 117.001, 104.298]) / 256
    conv 7x7/2 valid 32 -> maxpool 3/2 valid -> 3 residual(32)
    residualDown(64) + 3 residual(64) -> residualDown(128) + 2 residual(128)
    residualDown(256) + 2 residual(256) -> residualDown(256) -> global mean -> fc 256x128

conv = conv + bias, then a per-channel affine "scale" layer (dlib's affine = folded batch norm), ReLU except the
second conv of a block. residualDown: conv 3x3/2 valid, conv 3x3/1 same; the shortcut is avgpool 2/2 valid,
zero-padded in channels, and where the two disagree in size the conv branch is zero-padded at the bottom/right.

Input: dlib's face chip, 150x150 with padding 0.25 (`dlib_chip` builds it from YuNet's 5 landmarks). dlib
compares descriptors by Euclidean distance (< 0.6 = same); on unit vectors that is a cosine bar, so the
embedder returns L2-normalised vectors like SFace.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np

MEAN_RGB = (122.782, 117.001, 104.298)
CHIP = 150
PADDING = 0.25

# dlib's mean face shape (dlib/image_transforms/interpolation.h, landmarks 17..67 of the 68-point iBUG scheme),
# in [0, 1] face coordinates before padding.
_MEAN_X = [0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
           0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
           0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
           0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
           0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
           0.42689]
_MEAN_Y = [0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
           0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
           0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
           0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
           0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
           0.831803, 0.824182]


def _mean_point(i68: int) -> np.ndarray:
    return np.array([_MEAN_X[i68 - 17], _MEAN_Y[i68 - 17]])


def yunet_template(size: int = CHIP, padding: float = PADDING) -> np.ndarray:
    """YuNet's 5 points (right eye, left eye in the image's left-to-right order, nose tip, mouth corners) in
    dlib's chip: eye centres = mean of the 6 iBUG eye points, nose tip = 30, mouth corners = 48 / 54."""
    pts = np.array([np.mean([_mean_point(i) for i in range(36, 42)], axis=0),
                    np.mean([_mean_point(i) for i in range(42, 48)], axis=0),
                    _mean_point(30), _mean_point(48), _mean_point(54)])
    return (pts + padding) / (2 * padding + 1) * size


TEMPLATE_150 = yunet_template()


def dlib_chip(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP) -> np.ndarray:
    """dlib's 150x150 face chip (padding 0.25) from YuNet's 5 landmarks by a least-squares similarity."""
    from pipeline.engine.align import similarity_transform
    m = similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), yunet_template(size))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def load_weights(manifest: Path, shard_dir: Path | None = None) -> dict[str, np.ndarray]:
    """TF.js weights manifest + shard(s) -> name: float32 array (uint8-quantised tensors dequantised)."""
    manifest = Path(manifest)
    shard_dir = Path(shard_dir) if shard_dir else manifest.parent
    out: dict[str, np.ndarray] = {}
    for group in json.loads(manifest.read_text()):
        buf = b"".join((shard_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                if q["dtype"] != "uint8":
                    raise ValueError(f"{w['name']}: unsupported quantisation {q['dtype']}")
                a = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * np.float32(q["scale"]) + \
                    np.float32(q["min"])
                off += n
            else:
                if w["dtype"] != "float32":
                    raise ValueError(f"{w['name']}: unsupported dtype {w['dtype']}")
                a = np.frombuffer(buf, "<f4", n, off).copy()
                off += 4 * n
            out[w["name"]] = a.reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"{manifest}: manifest covers {off} bytes of {len(buf)}")
    return out


_BLOCKS = (["conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3",
            "conv128_down", "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2", "conv256_down_out"])


class FaceRecognitionNet:
    """The forward pass in torch (functional; weights as tensors, NCHW)."""

    def __init__(self, weights: dict[str, np.ndarray], device: str = "cpu"):
        import torch
        self.torch = torch
        self.device = device
        self.p: dict[str, tuple] = {}

        def conv(prefix: str):
            f = torch.from_numpy(np.ascontiguousarray(weights[f"{prefix}/conv/filters"].transpose(3, 2, 0, 1)))
            b = torch.from_numpy(weights[f"{prefix}/conv/bias"])
            sw = torch.from_numpy(weights[f"{prefix}/scale/weights"])
            sb = torch.from_numpy(weights[f"{prefix}/scale/biases"])
            # (conv + b) * sw + sb == conv with filters * sw, bias b * sw + sb: fold it
            return ((f * sw[:, None, None, None]).to(device).contiguous(), (b * sw + sb).to(device))

        self.p["conv32_down"] = conv("conv32_down")
        for blk in _BLOCKS:
            self.p[f"{blk}/conv1"] = conv(f"{blk}/conv1")
            self.p[f"{blk}/conv2"] = conv(f"{blk}/conv2")
        self.fc = torch.from_numpy(weights["fc"]).to(device)
        self.mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def _residual(self, x, blk: str, down: bool):
        F = self.torch.nn.functional
        w1, b1 = self.p[f"{blk}/conv1"]
        w2, b2 = self.p[f"{blk}/conv2"]
        out = F.relu(F.conv2d(x, w1, b1, stride=2 if down else 1, padding=0 if down else 1))
        out = F.conv2d(out, w2, b2, stride=1, padding=1)
        if down:
            pooled = F.avg_pool2d(x, 2, 2)
            if pooled.shape[2] != out.shape[2] or pooled.shape[3] != out.shape[3]:
                out = F.pad(out, (0, pooled.shape[3] - out.shape[3], 0, pooled.shape[2] - out.shape[2]))
            if pooled.shape[1] != out.shape[1]:
                pooled = F.pad(pooled, (0, 0, 0, 0, 0, out.shape[1] - pooled.shape[1]))
            x = pooled
        return F.relu(out + x)

    def __call__(self, rgb_nchw):
        """rgb_nchw: float tensor (N, 3, 150, 150), 0..255 RGB -> (N, 128) descriptors (not normalised)."""
        F = self.torch.nn.functional
        x = (rgb_nchw - self.mean) / 256.0
        w, b = self.p["conv32_down"]
        x = F.relu(F.conv2d(x, w, b, stride=2))
        x = F.max_pool2d(x, 3, 2)
        for blk in _BLOCKS:
            x = self._residual(x, blk, down=blk.endswith(("_down", "_down_out")))
        return x.mean(dim=(2, 3)) @ self.fc


class FaceApiEmbedder:
    """Embedder interface: 150x150 BGR dlib chips in, (N, 128) unit vectors out."""

    name = "faceapi"
    dim = 128
    input_size = CHIP
    device = "cpu"

    def __init__(self, manifest: Path, *, batch: int = 16, threads: int | None = None):
        import torch
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.batch = batch
        self.net = FaceRecognitionNet(load_weights(manifest))
        self._lock = threading.Lock()

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        v = self.embed_raw(crops)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def embed_raw(self, crops: list[np.ndarray]) -> np.ndarray:
        """dlib's descriptors as they are (compared by Euclidean distance, 0.6 = dlib's same-person bar)."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        for c in crops:
            if c.shape != (CHIP, CHIP, 3) or c.dtype != np.uint8:
                raise ValueError(f"faceapi embedder wants {CHIP}x{CHIP}x3 uint8 dlib chips, got {c.shape} {c.dtype}")
        torch = self._torch
        out = []
        with torch.inference_mode(), self._lock:
            for i in range(0, len(crops), self.batch):
                chunk = np.ascontiguousarray(np.stack(crops[i:i + self.batch])[..., ::-1])  # BGR -> RGB
                x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float()
                out.append(self.net(x).numpy())
        return np.concatenate(out).astype(np.float32)
