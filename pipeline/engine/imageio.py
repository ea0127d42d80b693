"""Image loading that never crashes on bad input: every failure is an ImageError with a clear reason."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageError(ValueError):
    pass


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Bytes -> 3-channel uint8 BGR."""
    if not data:
        raise ImageError(f"{name}: empty file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"{name}: not a readable image")
    return img


def load_image(path: str | Path) -> np.ndarray:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, name=str(p))
