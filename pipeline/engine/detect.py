"""Detectors: a batch of BGR images in, a list of Faces per image out, in full-resolution coordinates."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from ..registry import Registry
from .types import Face

DETECTORS: Registry["Detector"] = Registry("detector")


class Detector:
    name = "base"

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        raise NotImplementedError


def scale_for(shape: tuple[int, ...], max_side: int) -> float:
    """Factor that brings the long side down to max_side (never up)."""
    long_side = max(shape[0], shape[1])
    return min(1.0, max_side / float(long_side)) if long_side else 1.0


@DETECTORS.register("yunet")
class YuNetDetector(Detector):
    """OpenCV's YuNet. Runs on a copy scaled to <= max_side: at full resolution it misses large faces."""

    name = "yunet"

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 max_side: int = 640, min_face_px: int = 16, top_k: int = 5000):
        self.max_side = max_side
        self.min_face_px = min_face_px
        self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, nms_threshold, top_k)
        self._lock = threading.Lock()  # the cv2 object keeps its input size as state

    def detect_one(self, image: np.ndarray) -> list[Face]:
        s = scale_for(image.shape, self.max_side)
        small = image if s == 1.0 else cv2.resize(image, (max(1, round(image.shape[1] * s)),
                                                          max(1, round(image.shape[0] * s))),
                                                  interpolation=cv2.INTER_AREA)
        with self._lock:
            self._net.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._net.detect(small)
        faces: list[Face] = []
        if rows is None:
            return faces
        for r in rows:
            box = r[0:4].astype(np.float64) / s
            if min(box[2], box[3]) < self.min_face_px:
                continue
            faces.append(Face(box=box, landmarks=r[4:14].reshape(5, 2).astype(np.float64) / s, score=float(r[14])))
        faces.sort(key=lambda f: -f.box[2] * f.box[3])
        return faces

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect_one(im) for im in images]
