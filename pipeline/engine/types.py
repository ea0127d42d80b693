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


@dataclass
class Faces:
    """The faces of one image as arrays, row i = face i (like supervision's `Detections`): what the stages pass
    between them in-process. DetectStage makes it from the engine's faces (`from_faces`); MatcherStage reads it
    from the wire (`from_msg`: a FacesMsg's or EmbeddingsMsg's faces). Values are kept as given (no dtype change),
    so a stage computes on the same numbers as with the per-face objects.

    boxes (N, 4) x, y, w, h; landmarks (N, 10) five (x, y) points; scores, quality (N,); embeddings (N, D) float32
    with `embedded` (N,) marking the rows that have one (a face the re-embedding gate passed over has none; its
    row is zeros)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    quality: np.ndarray
    embeddings: np.ndarray
    embedded: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def _of(cls, boxes: list, landmarks: list, scores: list, quality: list, vecs: list[np.ndarray | None]
            ) -> "Faces":
        dim = next((len(v) for v in vecs if v is not None), 0)
        emb = np.zeros((len(vecs), dim), np.float32)
        for i, v in enumerate(vecs):
            if v is not None:
                emb[i] = v
        return cls(boxes=np.asarray(boxes).reshape(len(boxes), 4), landmarks=np.asarray(landmarks).reshape(
            len(landmarks), 10), scores=np.asarray(scores, np.float64), quality=np.asarray(quality, np.float64),
            embeddings=emb, embedded=np.asarray([v is not None for v in vecs], bool))

    @classmethod
    def from_faces(cls, faces: list[Face]) -> "Faces":
        """The engine's faces of one image (quality 0.0 where the detector gave none)."""
        return cls._of([f.box for f in faces], [np.asarray(f.landmarks).reshape(-1) for f in faces],
                       [float(f.score) for f in faces], [float(f.quality or 0.0) for f in faces],
                       [None if f.embedding is None else np.asarray(f.embedding, np.float32) for f in faces])

    @classmethod
    def from_msg(cls, faces) -> "Faces":
        """A message's faces (DetectedFace / EmbeddedFace: an empty or absent embedding is no embedding)."""
        vecs = [np.frombuffer(e, dtype="<f4") if (e := getattr(f, "embedding", b"")) else None for f in faces]
        return cls._of([f.box for f in faces], [f.landmarks for f in faces], [f.score for f in faces],
                       [f.quality for f in faces], [v if v is not None and v.size else None for v in vecs])
