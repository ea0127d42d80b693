"""Embedders: a batch of aligned 112x112 BGR crops in, an (N, dim) float32 array of unit vectors out."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..registry import Registry

EMBEDDERS: Registry["Embedder"] = Registry("embedder")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class Embedder:
    name = "base"
    dim = 0
    input_size = 112

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


@EMBEDDERS.register("sface")
class SFaceEmbedder(Embedder):
    """SFace through OpenCV DNN (batched blob; same preprocessing as FaceRecognizerSF: RGB, no mean, scale 1)."""

    name = "sface"
    dim = 128

    def __init__(self, model_path: Path, *, batch: int = 32):
        self.batch = batch
        self._net = cv2.dnn.readNetFromONNX(str(model_path))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, len(crops), self.batch):
            blob = cv2.dnn.blobFromImages(crops[i:i + self.batch], 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)
            self._net.setInput(blob)
            out.append(self._net.forward().reshape(len(crops[i:i + self.batch]), -1))
        return l2_normalize(np.concatenate(out))
