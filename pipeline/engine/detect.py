"""Detectors: a batch of BGR images in, a list of Faces per image out, in full-resolution coordinates.

Every detector runs on a copy scaled down to <= max_side (long side) and maps boxes and the 5 landmarks back to
full resolution. Faces come out largest first. Landmark order everywhere: right eye, left eye, nose tip, right
mouth corner, left mouth corner (the subject's right eye is on the image's left).
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from ..models import ModelError
from ..registry import Registry
from .cvutil import quiet_cv2
from .types import Face

DETECTORS: Registry["Detector"] = Registry("detector")

# detector name -> model registry name of its weights file
DETECTOR_MODELS: dict[str, str | None] = {"yunet": "yunet", "retinaface": "retinaface"}


class Detector:
    name = "base"
    max_side = 640
    min_face_px = 16

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect_one(im) for im in images]

    def detect_one(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def _finish(self, faces: list[Face]) -> list[Face]:
        faces = [f for f in faces if min(f.box[2], f.box[3]) >= self.min_face_px]
        faces.sort(key=lambda f: -f.box[2] * f.box[3])
        return faces


def scale_for(shape: tuple[int, ...], max_side: int) -> float:
    """Factor that brings the long side down to max_side (never up)."""
    long_side = max(shape[0], shape[1])
    return min(1.0, max_side / float(long_side)) if long_side else 1.0


def downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    s = scale_for(image.shape, max_side)
    if s == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # map back with the per-axis factors actually used (rounding makes them differ slightly from s)
    return small, small.shape[1] / image.shape[1]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("detector wants HxWx3 uint8 BGR images (use imageio.load_image/decode_image)")


@DETECTORS.register("yunet")
class YuNetDetector(Detector):
    """OpenCV's YuNet. Runs on a copy scaled to <= max_side: at full resolution it misses large faces."""

    name = "yunet"

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 max_side: int = 640, min_face_px: int = 16, top_k: int = 5000):
        self.max_side = max_side
        self.min_face_px = min_face_px
        self.score_threshold = score_threshold
        with quiet_cv2():  # OpenCV 5 warns that its new DNN engine ignores the (default) target
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, nms_threshold,
                                                  top_k)
        self._lock = threading.Lock()  # the cv2 object keeps its input size as state

    def detect_one(self, image: np.ndarray) -> list[Face]:
        _check_image(image)
        small, s = downscale(image, self.max_side)
        sy = small.shape[0] / image.shape[0]
        with self._lock:
            self._net.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._net.detect(small)
        faces: list[Face] = []
        if rows is None:
            return faces
        scale = np.array([s, sy], dtype=np.float64)
        for r in rows:
            box = r[0:4].astype(np.float64) / np.tile(scale, 2)
            lm = r[4:14].reshape(5, 2).astype(np.float64) / scale
            faces.append(Face(box=box, landmarks=lm, score=float(r[14])))
        return self._finish(faces)


# RetinaFace anchor layout and box/landmark variances (the standard MobileNet-0.25 RetinaFace head).
_RF_STRIDES = (8, 16, 32)
_RF_SIZES = ((16, 32), (64, 128), (256, 512))
_RF_VAR_CENTER, _RF_VAR_SIZE = 0.1, 0.2


def retinaface_anchors(width: int, height: int) -> np.ndarray:
    """(N, 4) anchors as normalised cx, cy, w, h, in the head's output order (stride, cell row-major, size)."""
    out = []
    for stride, sizes in zip(_RF_STRIDES, _RF_SIZES):
        nx, ny = -(-width // stride), -(-height // stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centers = np.column_stack([(xx.ravel() + 0.5) * stride / width, (yy.ravel() + 0.5) * stride / height])
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        out.append(np.hstack([np.repeat(centers, len(sizes), axis=0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(out)


@DETECTORS.register("retinaface")
class RetinaFaceDetector(Detector):
    """RetinaFace (MobileNet-0.25) run with onnxruntime; finds more small and profile faces than YuNet at ~1.6x
    the cost. Weights come from the model registry (`facetrail models fetch retinaface`)."""

    name = "retinaface"
    MEAN_BGR = np.array([104, 117, 127], dtype=np.float32)

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, nms_threshold: float = 0.4,
                 max_side: int = 640, min_face_px: int = 16, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError(f"detector 'retinaface' needs onnxruntime (pip install -e '.[retinaface]'): {e}") from None
        self.max_side = max_side
        self.min_face_px = min_face_px
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._anchors: dict[tuple[int, int], np.ndarray] = {}

    def _anchors_for(self, w: int, h: int) -> np.ndarray:
        if (w, h) not in self._anchors:
            self._anchors[(w, h)] = retinaface_anchors(w, h)
        return self._anchors[(w, h)]

    def detect_one(self, image: np.ndarray) -> list[Face]:
        _check_image(image)
        small, sx = downscale(image, self.max_side)
        sy = small.shape[0] / image.shape[0]
        h, w = small.shape[:2]
        x = (small.astype(np.float32) - self.MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, pts = self._sess.run(None, {"input": np.ascontiguousarray(x)})
        scores = conf[0][:, 1]
        keep = np.where(scores >= self.score_threshold)[0]
        faces: list[Face] = []
        if not keep.size:
            return faces
        a = self._anchors_for(w, h)[keep]
        centers = a[:, :2] + a[:, 2:] * loc[0][keep, :2] * _RF_VAR_CENTER
        sizes = a[:, 2:] * np.exp(loc[0][keep, 2:] * _RF_VAR_SIZE)
        boxes = np.hstack([centers - sizes / 2, sizes]) * [w, h, w, h]
        lms = (a[:, None, :2] + a[:, None, 2:] * pts[0][keep].reshape(-1, 5, 2) * _RF_VAR_CENTER) * [w, h]
        idx = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep].tolist(), self.score_threshold, self.nms_threshold)
        for i in np.asarray(idx).reshape(-1):
            box = boxes[i].astype(np.float64) / [sx, sy, sx, sy]
            lm = lms[i].astype(np.float64) / [sx, sy]
            faces.append(Face(box=box, landmarks=lm, score=float(scores[keep][i])))
        return self._finish(faces)
