"""Low-resolution copies of an aligned face crop, for templates that look like what a far camera sees.

A 36 px face in a 720p frame reaches the embedder as a 112 px crop upsampled ~3x from a blurred patch; SFace
puts it far from the same person's sharp enrollment photo (cosine ~0.25 on bench/eval_hard.py) though rank-1
is still mostly right. Enrolling the photo's crop also at those resolutions (down with INTER_AREA, a little
blur, back up with INTER_LINEAR, as alignment does) gives the gallery templates in the probe's domain."""
from __future__ import annotations

import cv2
import numpy as np


def degraded_crops(crop: np.ndarray, sizes: tuple[int, ...], blur: float = 1.0) -> list[np.ndarray]:
    """One copy of `crop` per size: downscaled to size x size, Gaussian blur `blur` px, upscaled back."""
    h, w = crop.shape[:2]
    out = []
    for s in sizes:
        small = cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA)
        if blur > 0:
            small = cv2.GaussianBlur(small, (0, 0), blur)
        out.append(np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)))
    return out
