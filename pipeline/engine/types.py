"""The one face type that flows from detection through alignment, embedding and search."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """A detected face in full-resolution image coordinates.

    box: x, y, w, h; landmarks: 5x2 (right eye, left eye, nose tip, right mouth corner, left mouth corner),
    as YuNet and the ArcFace alignment template order them.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    quality: float = 0.0
    embedding: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def box_list(self) -> list[float]:
        return [round(float(v), 1) for v in self.box]
