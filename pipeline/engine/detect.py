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
from .ovutil import cpu_config, u8_bgr_input
from .types import Face

DETECTORS: Registry["Detector"] = Registry("detector")

# detector name -> model registry name of its weights file
DETECTOR_MODELS: dict[str, str | None] = {"yunet": "yunet", "retinaface": "retinaface"}


class Detector:
    """Subclasses implement `_scaled(image, max_side)`: raw faces of one pass on a copy scaled to <= max_side,
    in full-resolution coordinates. `detect_one` runs the coarse pass and, where it finds nothing or only
    small faces, the small-face pass (see `small_pass`)."""

    name = "base"
    max_side = 640
    min_face_px = 16
    # small-face pass (issue 15): "full" = the whole frame again at full resolution; "regions" = only crops around
    # the coarse pass's small faces, at full resolution (sharper landmarks, no new faces); "off"
    small_pass = "off"
    small_face_px = 64
    small_calls = 0  # frames that got the small-face pass (cost accounting)

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect_one(im) for im in images]

    def _scaled(self, image: np.ndarray, max_side: int) -> list[Face]:
        raise NotImplementedError

    def detect_one(self, image: np.ndarray) -> list[Face]:
        _check_image(image)
        faces = self._scaled(image, self.max_side)
        long_side = max(image.shape[:2])
        if (self.small_pass != "off" and long_side > self.max_side
                and all(min(f.box[2], f.box[3]) < self.small_face_px for f in faces)):
            self.small_calls += 1
            fine = self._scaled(image, long_side) if self.small_pass == "full" else self._regions(image, faces)
            faces = merge_small(faces, fine, self.small_face_px)
        return self._finish(faces)

    def _regions(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Full-resolution passes on squares (4 face sides, >= 160 px, a multiple of 32, moved inside the frame
        rather than cut) around the coarse pass's small faces: few distinct input sizes, so the OpenVINO backend
        compiles a handful of shapes once instead of one per face."""
        out: list[Face] = []
        h, w = image.shape[:2]
        for f in faces:
            x, y, bw, bh = (float(v) for v in f.box)
            side = min(-(-max(160, int(4.0 * max(bw, bh))) // 32) * 32, w, h)
            x0 = int(min(max(0.0, x + bw / 2 - side / 2), w - side))
            y0 = int(min(max(0.0, y + bh / 2 - side / 2), h - side))
            x1, y1 = x0 + side, y0 + side
            if x1 - x0 < 32 or y1 - y0 < 32:
                continue
            for g in self._scaled(np.ascontiguousarray(image[y0:y1, x0:x1]), max(x1 - x0, y1 - y0)):
                g.box = np.asarray(g.box, np.float64) + [x0, y0, 0, 0]
                g.landmarks = np.asarray(g.landmarks, np.float64) + [x0, y0]
                out.append(g)
        return out

    def _finish(self, faces: list[Face]) -> list[Face]:
        faces = [f for f in faces if min(f.box[2], f.box[3]) >= self.min_face_px]
        faces.sort(key=lambda f: -f.box[2] * f.box[3])
        return faces


def _iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax2, bx2) - max(a[0], b[0])), max(0.0, min(ay2, by2) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union > 0 else 0.0


def merge_small(coarse: list[Face], fine: list[Face], small_px: float) -> list[Face]:
    """Coarse faces plus the small-face pass: a fine face replaces the coarse face it overlaps (its landmarks
    come from twice or more the pixels), a small fine face nobody found is added; large fine faces are left
    out (the coarse pass is the one that sees large faces right)."""
    out = list(coarse)
    for g in sorted(fine, key=lambda f: -f.score):
        ov = [(_iou(g.box, f.box), i) for i, f in enumerate(out)]
        best = max(ov, default=(0.0, -1))
        if best[0] >= 0.3:
            if min(out[best[1]].box[2], out[best[1]].box[3]) < small_px and not out[best[1]].extras.get("fine"):
                g.extras["fine"] = True
                out[best[1]] = g
        elif min(g.box[2], g.box[3]) < small_px:
            g.extras["fine"] = True
            out.append(g)
    return out


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


class YuNetDetector(Detector):
    """OpenCV's YuNet. Runs on a copy scaled to <= max_side: at full resolution it misses large faces."""

    name = "yunet"

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 max_side: int = 640, min_face_px: int = 16, top_k: int = 5000, small_pass: str = "off",
                 small_face_px: int = 64):
        self.small_pass, self.small_face_px = small_pass, small_face_px
        self.max_side = max_side
        self.min_face_px = min_face_px
        self.score_threshold = score_threshold
        with quiet_cv2():  # OpenCV 5 warns that its new DNN engine ignores the (default) target
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, nms_threshold,
                                                  top_k)
        self._lock = threading.Lock()  # the cv2 object keeps its input size as state

    def _rows(self, small: np.ndarray) -> np.ndarray | None:
        """FaceDetectorYN's output on the scaled image: (N, 15) rows of box (4), landmarks (10), score."""
        with self._lock:
            self._net.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._net.detect(small)
        return rows

    def _scaled(self, image: np.ndarray, max_side: int) -> list[Face]:
        small, s = downscale(image, max_side)
        sy = small.shape[0] / image.shape[0]
        rows = self._rows(small)
        faces: list[Face] = []
        if rows is None or not len(rows):
            return faces
        scale = np.array([s, sy], dtype=np.float64)
        for r in rows:
            box = r[0:4].astype(np.float64) / np.tile(scale, 2)
            lm = r[4:14].reshape(5, 2).astype(np.float64) / scale
            faces.append(Face(box=box, landmarks=lm, score=float(r[14])))
        return faces


class YuNetOpenVinoDetector(YuNetDetector):
    """The same YuNet ONNX file run by OpenVINO's CPU runtime (~1.6x OpenCV DNN's speed on the 2-core VM), with
    FaceDetectorYN's decoding done here: the image padded to multiples of 32, per stride 8/16/32 and cell a score
    sqrt(cls * obj), a box (cx, cy) = (cell + d) * stride, (w, h) = exp(d) * stride, landmarks (cell + d) * stride,
    then NMS. Gives FaceDetectorYN's rows (tests/test_engine.py). One compiled model per padded input size (a
    camera's frames all have one), a few kept."""

    name = "yunet-openvino"
    MAX_SHAPES = 8

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 max_side: int = 640, min_face_px: int = 16, top_k: int = 5000, threads: int = 0,
                 precision: str = "auto", small_pass: str = "off", small_face_px: int = 64):
        try:
            import openvino as ov
        except ImportError:
            raise ModelError("the OpenVINO backend needs the `openvino` extra: pip install -e '.[openvino]'") from None
        self.max_side, self.min_face_px = max_side, min_face_px
        self.small_pass, self.small_face_px = small_pass, small_face_px
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self._core = ov.Core()
        self._model_path = str(model_path)
        self._config = cpu_config(threads, precision)
        self._compiled: dict[tuple[int, int], object] = {}
        self._lock = threading.Lock()

    def _model_for(self, h: int, w: int):
        comp = self._compiled.pop((h, w), None)
        if comp is None:
            model = self._core.read_model(self._model_path)
            model.reshape({model.inputs[0]: [1, 3, h, w]})
            model = u8_bgr_input(model, rgb=False)
            comp = (self._core.compile_model(model, "CPU", self._config), [o.get_any_name() for o in model.outputs])
            while len(self._compiled) >= self.MAX_SHAPES:
                self._compiled.pop(next(iter(self._compiled)))
        self._compiled[(h, w)] = comp  # most recently used last
        return comp

    def _rows(self, small: np.ndarray) -> np.ndarray | None:
        h, w = small.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        # uint8 HWC in, padded with black: the compiled graph converts to float NCHW (numpy's copy cost more
        # than YuNet itself)
        blob = cv2.copyMakeBorder(small, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)[None]
        with self._lock:
            comp, names = self._model_for(ph, pw)
            res = comp(blob)
            out = {name: np.asarray(res[i]) for i, name in enumerate(names)}
        boxes, kps, scores = [], [], []
        for stride in (8, 16, 32):
            cols = pw // stride
            score = np.sqrt(np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1) *
                            np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            if not len(keep):
                continue
            row, col = np.divmod(keep, cols)
            d = out[f"bbox_{stride}"].reshape(-1, 4)[keep].astype(np.float64)
            k = out[f"kps_{stride}"].reshape(-1, 10)[keep].astype(np.float64)
            cx, cy = (col + d[:, 0]) * stride, (row + d[:, 1]) * stride
            bw, bh = np.exp(d[:, 2]) * stride, np.exp(d[:, 3]) * stride
            boxes.append(np.column_stack([cx - bw / 2, cy - bh / 2, bw, bh]))
            k[:, 0::2] = (k[:, 0::2] + col[:, None]) * stride
            k[:, 1::2] = (k[:, 1::2] + row[:, None]) * stride
            kps.append(k)
            scores.append(score[keep])
        if not boxes:
            return None
        boxes, kps, scores = np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)
        idx = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold,
                                          self.nms_threshold, top_k=self.top_k), dtype=np.int64).reshape(-1)
        return np.column_stack([boxes[idx], kps[idx], scores[idx]]) if len(idx) else None


@DETECTORS.register("yunet")
def make_yunet(model_path: Path, *, cpu_backend: str = "auto", threads: int = 0, precision: str = "auto",
               **kw) -> Detector:
    """YuNet through OpenVINO when the `openvino` extra is installed (models.cpu_backend auto|openvino), else
    through OpenCV's FaceDetectorYN (opencv)."""
    from .embed import openvino_available
    if cpu_backend == "openvino" or (cpu_backend == "auto" and openvino_available()):
        return YuNetOpenVinoDetector(model_path, threads=threads, precision=precision, **kw)
    if cpu_backend not in ("auto", "opencv"):
        raise ModelError(f"unknown models.cpu_backend {cpu_backend!r}; use auto, openvino or opencv")
    return YuNetDetector(model_path, **kw)


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
                 max_side: int = 640, min_face_px: int = 16, threads: int | None = None, cpu_backend: str = "auto",
                 precision: str = "auto", small_pass: str = "off", small_face_px: int = 64):
        """cpu_backend, precision: accepted for a uniform factory call; RetinaFace always runs on onnxruntime
        (f32)."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError(f"detector 'retinaface' needs onnxruntime (pip install -e '.[retinaface]'): {e}") from None
        self.max_side = max_side
        self.min_face_px = min_face_px
        self.small_pass, self.small_face_px = small_pass, small_face_px
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

    def _scaled(self, image: np.ndarray, max_side: int) -> list[Face]:
        small, sx = downscale(image, max_side)
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
        return faces
