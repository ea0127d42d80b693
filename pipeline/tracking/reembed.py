"""ReembedGate: which faces of a camera need a fresh embedding.

Embedding is most of a frame's cost (~2 faces a frame, each as costly as detecting the whole frame). At 30 fps a
face barely moves between frames and its embedding barely changes, so re-embedding it every frame buys the
identity vote nothing new. The gate keeps one *slot* per face it is following: the face's last box, when it was
last seen and last embedded, how many times it was embedded and its best quality. Each new face takes the live
slot whose box it overlaps most (IoU >= `iou`, seen at most `follow_s` ago) and the slot's box moves with it,
so a walking face stays followed. A face is embedded when it starts a new slot, when it is clearly better than
any embedding of its slot so far (quality gain >= `quality_gain`), or when its slot's last embedding is a window
old: `every_s` for the slot's first `settle_n` embeddings (dense, so the track mean the matcher searches after
`tracking.track_min_faces` embeddings exists within a second), `settled_s` after that (sparse: a face standing
in view for a minute is re-checked a few times a second, not thirty). The matcher follows a face passed over by
position (its tracker needs no embedding for an IoU match) and votes only with the faces that were embedded.

DetectStage runs it (pipeline/stages/detect.py), so a face passed over is not even aligned or thumbnailed and its
FacesMsg carries no crop. This one is per-process memory: with several detector workers each thins the frames it
sees (so more faces are embedded; workers.reembed_shared switches to SharedReembedGate, the same rules on slots
kept in Redis), and a redelivered frame may come out embedded where the first try would have skipped it; both
are fine, since a frame's output is still written once and every decision only saves work."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from .tracker import iou


@dataclass
class _Slot:
    box: tuple[float, ...]
    seen: float      # stream time the face was last seen here
    embedded: float  # stream time of its last embedding
    best: float      # best quality embedded
    n: int = 1       # embeddings so far


class ReembedGate:
    MAX_CAMERAS = 1024  # cameras remembered (least recently seen forgotten first)
    PER_CAMERA = 64     # faces followed per camera (least recently seen dropped first)
    RESTART_S = 1.0     # stream time this far behind the newest face seen: a new run of the source

    def __init__(self, every_s: float = 0.1, *, settle_n: int = 8, settled_s: float | None = None,
                 iou: float = 0.6, quality_gain: float = 0.1, follow_s: float = 0.5):
        self.every_s = every_s
        self.settle_n = settle_n
        self.settled_s = every_s if settled_s is None else max(settled_s, every_s)
        self.iou = iou
        self.quality_gain = quality_gain
        self.follow_s = follow_s
        self._recent: OrderedDict[str, list[_Slot]] = OrderedDict()

    @classmethod
    def from_config(cls, workers) -> "ReembedGate":
        """The gate `workers.reembed_*` describe."""
        return cls(workers.reembed_s, settle_n=workers.reembed_settle_n, settled_s=workers.reembed_settled_s)

    @property
    def enabled(self) -> bool:
        return self.every_s > 0

    def _slots(self, camera: str, t: float) -> list[_Slot]:
        slots = self._recent.get(camera)
        if slots is None:
            slots = self._recent[camera] = []
            while len(self._recent) > self.MAX_CAMERAS:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(camera)
            if slots and t < max(s.seen for s in slots) - self.RESTART_S:
                slots.clear()  # stream time went back: the camera's source restarted (a file processed again)
        return slots

    def plan(self, camera: str, t: float, faces: Sequence[tuple[Sequence[float], float]]) -> list[bool]:
        """For one frame's faces ((box, quality) each) at stream time t: True = embed it. Call once per frame,
        in stream order where possible (a frame a little out of order is judged by its distance in time)."""
        if not self.enabled:
            return [True] * len(faces)
        slots = self._slots(camera, t)
        live = [s for s in slots if abs(t - s.seen) <= self.follow_s]
        pairs = sorted(((iou(box, s.box), i, j) for i, (box, _) in enumerate(faces) for j, s in enumerate(live)),
                       reverse=True)
        taken: dict[int, _Slot] = {}
        used: set[int] = set()
        for overlap, i, j in pairs:  # greedy: the best overlaps pair up first, one slot per face
            if overlap < self.iou:
                break
            if i not in taken and j not in used:
                taken[i] = live[j]
                used.add(j)
        out = []
        for i, (box, quality) in enumerate(faces):
            box, quality = tuple(float(v) for v in box), float(quality)
            slot = taken.get(i)
            if slot is None:
                slots.append(_Slot(box, t, t, quality))
                out.append(True)
                continue
            window = self.every_s if slot.n < self.settle_n else self.settled_s
            embed = abs(t - slot.embedded) >= window or quality >= slot.best + self.quality_gain
            slot.box, slot.seen = box, max(slot.seen, t)
            if embed:
                slot.embedded, slot.best, slot.n = t, max(slot.best, quality), slot.n + 1
            out.append(embed)
        if len(slots) > self.PER_CAMERA:
            slots.sort(key=lambda s: s.seen)
            del slots[:len(slots) - self.PER_CAMERA]
        return out

    def plan_many(self, frames: Sequence[tuple[str, float, Sequence[tuple[Sequence[float], float]]]]
                  ) -> list[list[bool]]:
        """plan() for each (camera, t, faces) of a batch, in the order given."""
        return [self.plan(camera, t, faces) for camera, t, faces in frames]
