"""Track analyzers: plug-ins that look at a track's faces once, when the track ends, and return typed fields for
its `track.ended` event (liveness today; attributes would be another). They run in the matcher on the faces the
track already kept (a few small grey crops, boxes, landmarks), never per frame.

An analyzer registers itself by name in ANALYZERS (as detectors do in pipeline/models.py) and is built from
settings by `hook.build_analyzers`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from ..registry import Registry


@dataclass
class FaceSample:
    """One kept face of a track: stream time, a grey crop (the detector's thumbnail: the face box grown by 30 %,
    square), the face box and 5 landmarks in frame pixels."""

    t: float
    crop: np.ndarray
    box: tuple[float, float, float, float]
    landmarks: tuple[float, ...] = ()


class Analyzer(Protocol):
    name: str
    field: str  # the Event field its result goes to

    def analyze(self, faces: list[FaceSample]) -> Any: ...


ANALYZERS: Registry[Analyzer] = Registry("analyzer")


@dataclass
class FaceBuffer:
    """A track's faces for the analyzers, bounded: at most `size` samples spread over the whole track. A sample is
    kept as the JPEG thumbnail the detector made anyway (decoded only when the track ends); when the buffer is full,
    every other sample is dropped and the spacing doubles, so a long track keeps an even spread at constant
    memory (size x ~3 KB)."""

    size: int = 12
    min_dt: float = 0.1
    items: list[tuple[float, bytes, tuple, tuple]] = field(default_factory=list)
    spacing: float = 0.0
    added: int = 0    # samples ever kept (the early liveness check runs on new ones only)
    checked: int = 0  # `added` at the last early check

    def __post_init__(self):
        self.spacing = self.min_dt

    def add(self, t: float, jpeg: bytes | None, box, landmarks) -> None:
        if not jpeg:
            return
        if self.items and t - self.items[-1][0] < self.spacing:
            return
        self.items.append((t, jpeg, tuple(box), tuple(landmarks)))
        self.added += 1
        if len(self.items) > self.size:
            self.items = self.items[::2]
            self.spacing *= 2

    def samples(self) -> list[FaceSample]:
        out = []
        for t, jpeg, box, lm in self.items:
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is not None:
                out.append(FaceSample(t, img, box, lm))
        return out

