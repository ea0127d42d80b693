"""FaceEngine: detect -> quality -> align -> embed on whole images. `identify` on a still and the streaming
workers both go through these same stage objects."""
from __future__ import annotations

from functools import cached_property

import numpy as np

from ..config import Settings
from ..models import model_path
from .align import align_face
from .detect import DETECTORS, Detector
from .embed import EMBEDDERS, Embedder
from .types import Face


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class FaceEngine:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.threshold = settings.thresholds.match

    @cached_property
    def detector(self) -> Detector:
        m = self.settings.models
        return DETECTORS.create(m.detector, model_path(m.detector, m.dir), score_threshold=m.det_score_threshold,
                                nms_threshold=m.nms_threshold, max_side=m.detect_max_side, min_face_px=m.min_face_px)

    @cached_property
    def embedder(self) -> Embedder:
        m = self.settings.models
        return EMBEDDERS.create(m.embedder, model_path(m.embedder, m.dir), batch=m.embed_batch)

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        return self.detector.detect(images)

    def align(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        return [align_face(image, f.landmarks, self.embedder.input_size) for f in faces]

    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        vecs = self.embedder.embed(self.align(image, faces))
        for f, v in zip(faces, vecs):
            f.embedding = v
        return faces

    def analyze(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Detect and embed every face of every image (one embedding batch for all of them)."""
        per_image = self.detect(images)
        crops, owners = [], []
        for img, faces in zip(images, per_image):
            for f in faces:
                crops.append(align_face(img, f.landmarks, self.embedder.input_size))
                owners.append(f)
        for f, v in zip(owners, self.embedder.embed(crops)):
            f.embedding = v
        return per_image
