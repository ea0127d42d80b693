"""DetectStage: decoded frames in, one FacesMsg per frame out (no Redis). The detector worker
(workers/detector.py) and `identify` on a still (pipeline/identify.py) both run it.

Its MotionGate (pipeline/motion.py) passes frames where nothing moves on without a detector pass (a still FrameMsg
v2 from a grabber's gate has no pixels and is passed on as it is); its ReembedGate (pipeline/tracking/reembed.py;
or SharedReembedGate, one per camera in Redis for all detectors) picks the faces worth a new embedding; only those
are aligned and get a crop and a thumbnail, the others travel as box, landmarks and quality for the tracker."""
from __future__ import annotations

from typing import Sequence, cast

import cv2
import numpy as np

from ..config import Settings
from ..engine.engine import FaceEngine
from ..engine.types import Face, Faces
from ..messages import DetectedFace, FacesMsg, FrameMsg
from ..motion import MotionGate
from ..tracking.reembed import ReembedGate


def face_thumb(image: np.ndarray, box, max_px: int, quality: int = 80) -> bytes | None:
    """The face with some context (box grown by 30 %), long side <= max_px, as JPEG."""
    x, y, w, h = [float(v) for v in box]
    cx, cy, side = x + w / 2, y + h / 2, max(w, h) * 1.3
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(image.shape[1], cx + side / 2)), int(min(image.shape[0], cy + side / 2))
    if x1 <= x0 or y1 <= y0:
        return None
    crop = image[y0:y1, x0:x1]
    s = max_px / max(crop.shape[:2])
    if s < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


class DetectStage:
    """Plain stage: decoded frames in, one FacesMsg per frame out (no Redis here)."""

    def __init__(self, settings: Settings, engine: FaceEngine | None = None, gate: ReembedGate | None = None, *,
                 motion: bool = True, thumbs: bool = True):
        self.settings = settings
        self.engine = engine or FaceEngine(settings)
        self.gate = gate if gate is not None else ReembedGate.from_config(settings.workers)
        self.thumb_px = settings.workers.thumb_px if thumbs else 0
        self.skipped = 0  # faces passed on without a crop (the gate), since start
        self.motion = MotionGate.from_settings(settings) if motion and settings.motion.enabled else None
        self.motion_skipped = 0  # frames passed on without a detector pass (nothing moved), since start

    @classmethod
    def for_stills(cls, engine: FaceEngine) -> "DetectStage":
        """The stage for single images (`identify`): no motion gate, every face gets a crop (the re-embedding gate
        off), no thumbnails."""
        return cls(engine.settings, engine, gate=ReembedGate(0.0), motion=False, thumbs=False)

    def process(self, frames: list[tuple[FrameMsg, np.ndarray | None]]) -> list[FacesMsg]:
        # the gates see each camera's frames in stream order, whatever order the batch came in
        refs = [msg.frame for msg, _ in frames]
        order = sorted(range(len(frames)), key=lambda i: (refs[i].camera, refs[i].stream_time, i))
        run = [img is not None for _, img in frames]
        if self.motion is not None:
            for i in order:  # a frame the grabber's gate passed (gated) is not checked twice
                img = frames[i][1]
                if run[i] and img is not None and not frames[i][0].gated:
                    run[i] = self.motion.moving(refs[i].camera, refs[i].stream_time, img)
            self.motion_skipped += sum(1 for (_, img), r in zip(frames, run) if img is not None and not r)
        images = [img for (_, img), r in zip(frames, run) if r and img is not None]
        detections = iter(self.engine.detect(images) if images else [])
        found: list[list[Face]] = [next(detections) if r else [] for r in run]
        if self.motion is not None:
            for i in order:
                if found[i]:
                    self.motion.faces_seen(refs[i].camera, refs[i].stream_time)
        arrays = [Faces.from_faces(fs) for fs in found]
        wanted: list[list[bool]] = [[] for _ in frames]
        todo = [i for i in order if frames[i][1] is not None]
        plans = self.gate.plan_many([(refs[i].camera, refs[i].stream_time,
                                      [(cast(Sequence[float], box), float(q)) for box, q in zip(arrays[i].boxes,
                                                                                               arrays[i].quality)])
                                     for i in todo])
        for i, plan in zip(todo, plans):
            wanted[i] = plan
        out = []
        for (msg, img), faces, fa, want in zip(frames, found, arrays, wanted):
            if img is None:  # EOS, or a still frame from the grabber's motion gate: no faces
                out.append(FacesMsg(frame=msg.frame))
                continue
            keep = [f for f, w in zip(faces, want) if w]
            aligned = iter(self.engine.align(img, keep) if keep else [])
            crops = [np.ascontiguousarray(next(aligned), dtype=np.uint8).tobytes() if w else b"" for w in want]
            self.skipped += len(want) - len(keep)
            out.append(FacesMsg(
                frame=msg.frame,
                faces=[DetectedFace(index=i, box=[float(v) for v in fa.boxes[i]],
                                    landmarks=[float(v) for v in fa.landmarks[i]], score=float(fa.scores[i]),
                                    quality=float(fa.quality[i]),
                                    thumb_jpeg=face_thumb(img, fa.boxes[i], self.thumb_px) if w and self.thumb_px
                                    else None)
                       for i, w in enumerate(want)],
                crops=crops))
        return out


