"""ReembedGate: which faces of a camera need a fresh embedding.

Embedding is most of a frame's cost (~2 faces a frame, each as costly as detecting the whole frame). At 30 fps a
face barely moves between frames and its embedding barely changes, so re-embedding it every frame buys the
identity vote nothing new. The gate passes a face on *without* an embedding when this process embedded a face
at nearly the same place (box IoU >= `iou`) less than `every_s` of stream time ago and the new face is not
clearly better (quality gain < `quality_gain`). The matcher follows such a face by position (its tracker
needs no embedding for an IoU match) and votes only with the faces that were embedded, so each face is
embedded at most about 1/every_s times a second: a camera sampled at <= 1/every_s fps is never thinned, a
30 fps file is embedded about one frame in three.

It is per-process memory only: with several embedder workers each thins the frames it sees, and a redelivered
frame may come out embedded where the first try would have skipped it; both are fine, since a frame's output
is still written once and every decision only saves work."""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Sequence

from .tracker import iou


class ReembedGate:
    MAX_CAMERAS = 1024  # cameras remembered (least recently seen forgotten first)
    PER_CAMERA = 64     # embedded faces remembered per camera
    RESTART_S = 1.0     # stream time this far behind the newest remembered face: a new run of the source

    def __init__(self, every_s: float = 0.1, *, iou: float = 0.6, quality_gain: float = 0.1):
        self.every_s = every_s
        self.iou = iou
        self.quality_gain = quality_gain
        self._recent: OrderedDict[str, deque[tuple[float, tuple[float, ...], float]]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.every_s > 0

    def plan(self, camera: str, t: float, faces: Sequence[tuple[Sequence[float], float]]) -> list[bool]:
        """For one frame's faces ((box, quality) each) at stream time t: True = embed it. The faces to embed
        are remembered as embedded; call once per frame, in stream order where possible."""
        if not self.enabled:
            return [True] * len(faces)
        recent = self._recent.get(camera)
        if recent is None:
            recent = self._recent[camera] = deque(maxlen=self.PER_CAMERA)
            while len(self._recent) > self.MAX_CAMERAS:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(camera)
            if recent and t < max(e[0] for e in recent) - self.RESTART_S:
                recent.clear()  # stream time went back: the camera's source restarted (a file processed again)
        near = [e for e in recent if abs(t - e[0]) < self.every_s]
        out = []
        for box, quality in faces:
            covered = any(iou(box, b) >= self.iou and quality < q + self.quality_gain for _, b, q in near)
            out.append(not covered)
        for (box, quality), embed in zip(faces, out):
            if embed:
                recent.append((t, tuple(float(v) for v in box), float(quality)))
        return out
