"""Per-detection quality in [0, 1], used for best-shot selection and enrollment gating.

    quality = (size * sharpness * frontal) ** (1/3)        (geometric mean: any factor at 0 gives 0)

- size      = clip((min(w, h) - 20) / (80 - 20), 0, 1): a face 20 px or smaller is useless for recognition, 80 px and
              up is as good as the 112 px aligned crop needs.
- sharpness = 1 - exp(-v / 200), v = variance of the Laplacian of the face box resized to 64x64 grey (or to
              its own size when smaller, never upscaled past 24 px): texture left at about the scale the embedder
              sees. Sharp shared photos measure v 600..2500 (score >= 0.95); a Gaussian blur of sigma 1 / 2 / 3 px
              at that scale brings v to ~100-400 / 25-130 / 10-65.
- frontal   = clip(1 - (yaw + pitch), 0, 1) from the 5 landmarks in the eye-line frame (roll does not matter:
              alignment removes it): yaw = 2 * |nose - eye-midpoint| / eye distance along the eye line, beyond
              0.1 of slack; pitch = how far (nose height above mouth) / (eye-to-mouth height) strays from the
              frontal 0.35..0.75 band, x2.
"""
from __future__ import annotations

import cv2
import numpy as np

from .types import Face

SIZE_MIN_PX, SIZE_FULL_PX = 20.0, 80.0
SHARP_TAU = 200.0


def size_score(face: Face) -> float:
    s = float(min(face.box[2], face.box[3]))
    return float(np.clip((s - SIZE_MIN_PX) / (SIZE_FULL_PX - SIZE_MIN_PX), 0.0, 1.0))


def sharpness_value(image: np.ndarray, face: Face) -> float:
    h, w = image.shape[:2]
    x, y, bw, bh = face.box
    x0, y0 = int(max(0, np.floor(x))), int(max(0, np.floor(y)))
    x1, y1 = int(min(w, np.ceil(x + bw))), int(min(h, np.ceil(y + bh)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    crop = image[y0:y1, x0:x1]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    # 64x64, or the face's own size when smaller: upscaling a small face would blur it and count it twice
    side = int(np.clip(min(grey.shape), 24, 64))
    interp = cv2.INTER_AREA if min(grey.shape) >= side else cv2.INTER_LINEAR
    small = cv2.resize(grey, (side, side), interpolation=interp)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def sharpness_score(image: np.ndarray, face: Face) -> float:
    return float(1.0 - np.exp(-sharpness_value(image, face) / SHARP_TAU))


def frontal_score(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    re, le, nose, rm, lmth = lm
    eye_vec = le - re
    d = float(np.hypot(*eye_vec))
    if d < 1e-6:
        return 0.0
    ux = eye_vec / d                       # along the eye line
    uy = np.array([-ux[1], ux[0]])         # perpendicular, pointing down the face
    eye_mid = (re + le) / 2
    mouth_mid = (rm + lmth) / 2
    nx = float((nose - eye_mid) @ ux) / d  # 0 for a frontal face, about +-0.5 in profile
    yaw = max(0.0, 2.0 * abs(nx) - 0.1)
    em = float((mouth_mid - eye_mid) @ uy)
    if em <= 1e-6:
        return 0.0
    r = float((nose - eye_mid) @ uy) / em  # nose height within eye-to-mouth: ~0.55 frontal
    pitch = 2.0 * max(0.0, 0.35 - r, r - 0.75)
    return float(np.clip(1.0 - (yaw + pitch), 0.0, 1.0))


def face_quality(image: np.ndarray, face: Face) -> float:
    """Sets face.quality (and face.extras["quality_parts"]) and returns it."""
    parts = {"size": size_score(face), "sharpness": sharpness_score(image, face),
             "frontal": frontal_score(face.landmarks)}
    q = float(np.prod(list(parts.values())) ** (1.0 / 3.0))
    face.quality = round(q, 4)
    face.extras["quality_parts"] = {k: round(v, 4) for k, v in parts.items()}
    return face.quality
