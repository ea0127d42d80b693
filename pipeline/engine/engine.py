"""FaceEngine: detect -> quality -> align -> embed on whole images. `identify` on a still and the streaming
workers both go through these same stage objects."""
from __future__ import annotations

from functools import cached_property

import numpy as np

from ..config import Settings
from ..models import model_path
from .align import align_face
from .detect import DETECTOR_MODELS, DETECTORS, Detector
from .embed import EMBEDDERS, Embedder, FlipAveraged
from .quality import face_quality
from .types import Face

# embedder name -> model registry name of its weights file
EMBEDDER_MODELS: dict[str, str] = {"sface": "sface", "sface-torch": "sface", "sface-openvino": "sface"}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class FaceEngine:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.threshold = settings.thresholds.match

    @cached_property
    def detector(self) -> Detector:
        m = self.settings.models
        model = DETECTOR_MODELS.get(m.detector, m.detector)
        path = model_path(model, m.dir) if model else None
        return DETECTORS.create(m.detector, path, score_threshold=m.det_score_threshold,
                                nms_threshold=m.nms_threshold, max_side=m.detect_max_side, min_face_px=m.min_face_px,
                                cpu_backend=m.cpu_backend, precision=m.cpu_precision,
                                threads=self.settings.workers.cv_threads or None,
                                small_pass=m.small_face_pass, small_face_px=m.small_face_px)

    @cached_property
    def embedder(self) -> Embedder:
        m = self.settings.models
        path = model_path(EMBEDDER_MODELS.get(m.embedder, m.embedder), m.dir)
        emb = EMBEDDERS.create(m.embedder, path, batch=m.embed_batch, device=m.device, cpu_backend=m.cpu_backend,
                               precision=m.cpu_precision, threads=self.settings.workers.cv_threads)
        return FlipAveraged(emb) if m.embed_flip else emb

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per image, largest first, each with .quality in [0, 1] (see quality.py)."""
        per_image = self.detector.detect(images)
        for img, faces in zip(images, per_image):
            for f in faces:
                face_quality(img, f)
        return per_image

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

    def main_face(self, image: np.ndarray) -> Face | None:
        """The largest face of a still, embedded; None when there is none."""
        faces = self.detect([image])[0]
        if not faces:
            return None
        return self.embed_faces(image, faces[:1])[0]

    def similarity(self, a: Face, b: Face) -> float:
        return cosine(a.embedding, b.embedding)

    def same(self, similarity: float) -> bool:
        return similarity >= self.threshold
