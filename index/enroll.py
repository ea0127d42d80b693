"""Turning photos into gallery templates: pick the face, gate on quality, embed (optionally flipped), thumbnail."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.config import Settings

from .store import NewTemplate


class EnrollError(ValueError):
    """This photo cannot be enrolled; the message says why (no face, several faces, low quality)."""


@dataclass
class FaceChoice:
    index: int | None = None  # faces are sorted by box area, largest first; 0 = largest
    largest: bool = False


def thumbnail(image: np.ndarray, box, px: int = 128, margin: float = 0.25, jpeg_quality: int = 85) -> bytes:
    """A small square JPEG of the face with some margin around its box."""
    h, w = image.shape[:2]
    x, y, bw, bh = (float(v) for v in box[:4])
    side = max(bw, bh) * (1 + 2 * margin)
    cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(max(0, round(cx - side / 2))), int(max(0, round(cy - side / 2)))
    x1, y1 = int(min(w, round(cx + side / 2))), int(min(h, round(cy + side / 2)))
    crop = image[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else image
    s = px / float(max(crop.shape[:2]))
    if s < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    return buf.tobytes() if ok else b""


def quality_reason(face) -> str:
    parts = (getattr(face, "extras", None) or {}).get("quality_parts") or {}
    weak = [f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: kv[1]) if v < 0.6]
    return f" (weakest: {', '.join(weak)})" if weak else ""


def pick_face(faces: list, choice: FaceChoice, name: str) -> tuple[int, Any]:
    if not faces:
        raise EnrollError(f"{name}: no face found")
    if choice.index is not None:
        if not 0 <= choice.index < len(faces):
            raise EnrollError(f"{name}: --face {choice.index} is out of range: {len(faces)} face(s) found "
                              f"(0 = largest)")
        return choice.index, faces[choice.index]
    if len(faces) > 1 and not choice.largest:
        boxes = "; ".join(f"{i}: box {[int(round(v)) for v in f.box[:4]]}" for i, f in enumerate(faces[:5]))
        raise EnrollError(f"{name}: {len(faces)} faces found ({boxes}); say which with --face N (0 = largest) "
                          f"or --largest")
    return 0, faces[0]


def templates_from_image(engine, image: np.ndarray, settings: Settings, *, name: str = "<image>",
                         choice: FaceChoice | None = None, flip: bool | None = None,
                         sha256: str | None = None) -> list[NewTemplate]:
    """One template (two with flip augmentation, and one more per gallery.lowres_templates size) for the chosen
    face of one image. Raises EnrollError."""
    choice = choice or FaceChoice()
    flip = settings.gallery.flip_augment if flip is None else flip
    faces = engine.detect([image])[0]
    idx, face = pick_face(faces, choice, name)
    q = float(getattr(face, "quality", 0.0) or 0.0)
    gate = settings.thresholds.min_enroll_quality
    if "quality_parts" in face.extras or q > 0:  # engines that don't score quality leave it at 0: not gated
        if q < gate:
            raise EnrollError(f"{name}: face quality {q:.2f} is below min_enroll_quality {gate:.2f}"
                              f"{quality_reason(face)}; use a larger, sharper, frontal photo")
    crops = engine.align(image, [face])
    if flip:
        crops.append(cv2.flip(crops[0], 1))  # a mirrored aligned crop is itself an aligned face
    if settings.gallery.lowres_templates:
        from pipeline.engine.degrade import degraded_crops
        crops += degraded_crops(crops[0], tuple(settings.gallery.lowres_templates))
    vecs = engine.embedder.embed(crops)
    sha = sha256 or hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    thumb = thumbnail(image, face.box, settings.gallery.thumbnail_px)
    # no explicit source: the store dedupes on the embedding itself, so enrolling the same photo twice, or
    # importing an export back, adds nothing
    return [NewTemplate(embedding=np.asarray(v, np.float32), sha256=sha, quality=q, thumbnail=thumb) for v in vecs]
