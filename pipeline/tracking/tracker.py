"""A small face tracker: IoU against a constant-velocity prediction, plus appearance (embedding cosine).

Why not norfair (the maintained tracker we looked at): norfair 2.3 pins numpy<2 (we run numpy 2), pulls
scipy + filterpy + rich, and keeps Kalman state in objects we could not checkpoint as small JSON for matcher
failover. Faces per frame are few, so greedy matching on a combined score is as good as Hungarian here, and
the appearance term does the heavy lifting across scene cuts (a different face at the same place is not the
same track: `appearance_veto`). The whole state is JSON (`to_state`/`from_state`), and every decision
depends only on the ordered input, so a replay after failover makes the same tracks with the same ids.

Time is stream time (pts, or captured_at when there is no pts), never the wall clock."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .state import TrackState


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Detection:
    """One face of one frame, as the tracker sees it."""

    index: int
    box: list[float]
    embedding: np.ndarray | None
    quality: float
    score: float
    payload: object = None  # caller data (e.g. the EmbeddedFace), never checkpointed


@dataclass
class Track:
    track_id: str
    first_seq: int
    first_t: float
    last_t: float
    box: list[float]
    vel: list[float] = field(default_factory=lambda: [0.0, 0.0])
    emb: list[float] | None = None
    hits: int = 1
    data: TrackState = field(default_factory=TrackState)  # identity votes, snapshot, ... (MatcherStage's)

    def predict(self, t: float) -> list[float]:
        dt = max(0.0, t - self.last_t)
        return [self.box[0] + self.vel[0] * dt, self.box[1] + self.vel[1] * dt, self.box[2], self.box[3]]

    def to_state(self) -> dict:
        """Checkpoint v2: the typed state under "state" (v1 had a free dict under "data")."""
        return {"track_id": self.track_id, "first_seq": self.first_seq, "first_t": self.first_t,
                "last_t": self.last_t, "box": self.box, "vel": self.vel, "emb": self.emb, "hits": self.hits,
                "state": self.data.to_dict()}

    @classmethod
    def from_state(cls, d: dict) -> "Track":
        """Either checkpoint version: v2 ("state") or v1 ("data")."""
        d = dict(d)
        state = d.pop("state", None)
        legacy = d.pop("data", None)
        return cls(**d, data=TrackState.from_dict(state if state is not None else legacy or {}))


class FaceTracker:
    def __init__(self, camera: str, *, iou_threshold: float = 0.3, appearance_threshold: float = 0.4,
                 appearance_veto: float = 0.15, max_age_s: float = 2.0, velocity_beta: float = 0.3,
                 embedding_momentum: float = 0.8):
        self.camera = camera
        self.iou_threshold = iou_threshold
        self.appearance_threshold = appearance_threshold
        self.appearance_veto = appearance_veto
        self.max_age_s = max_age_s
        self.beta = velocity_beta
        self.momentum = embedding_momentum
        self.tracks: dict[str, Track] = {}

    # ---- association ----------------------------------------------------------------------------------
    def _pair_score(self, tr: Track, pred: list[float], det: Detection) -> float | None:
        ov = iou(pred, det.box)
        cos = None
        if tr.emb is not None and det.embedding is not None:
            cos = float(np.dot(np.asarray(tr.emb, np.float32), det.embedding))
        if cos is not None and cos < self.appearance_veto:
            return None  # someone else at the same place (scene cut, crossing faces)
        if ov >= self.iou_threshold:
            return ov + (cos if cos is not None else 0.0)
        if cos is not None and cos >= self.appearance_threshold:
            # appearance match: only nearby (centre within ~2 face sizes of the prediction)
            cx, cy = pred[0] + pred[2] / 2, pred[1] + pred[3] / 2
            dx, dy = det.box[0] + det.box[2] / 2, det.box[1] + det.box[3] / 2
            reach = 2.0 * max(pred[2], pred[3], det.box[2], det.box[3])
            if (cx - dx) ** 2 + (cy - dy) ** 2 <= reach ** 2:
                return ov + cos
        return None

    def expire(self, t: float) -> list[Track]:
        """Tracks not seen for more than max_age_s of stream time, oldest first; removed from the tracker."""
        gone = [tr for tr in self.tracks.values() if t - tr.last_t > self.max_age_s]
        for tr in gone:
            del self.tracks[tr.track_id]
        return sorted(gone, key=lambda tr: (tr.first_seq, tr.track_id))

    def end_all(self) -> list[Track]:
        gone = sorted(self.tracks.values(), key=lambda tr: (tr.first_seq, tr.track_id))
        self.tracks.clear()
        return gone

    def update(self, seq: int, t: float, dets: list[Detection]) -> tuple[list[tuple[Track, Detection]], list[Track]]:
        """Assign this frame's detections. Returns ([(track, det)] for every detection, [tracks it created])."""
        pairs = []
        live = sorted(self.tracks.values(), key=lambda tr: tr.track_id)
        for tr in live:
            pred = tr.predict(t)
            for di, det in enumerate(dets):
                s = self._pair_score(tr, pred, det)
                if s is not None:
                    pairs.append((-s, tr.track_id, di))
        pairs.sort()
        used_t, used_d, out = set(), set(), []
        for _, tid, di in pairs:
            if tid in used_t or di in used_d:
                continue
            used_t.add(tid)
            used_d.add(di)
            tr = self.tracks[tid]
            self._apply(tr, t, dets[di])
            out.append((tr, dets[di]))
        created = []
        for di, det in enumerate(dets):
            if di in used_d:
                continue
            tr = Track(track_id=f"{self.camera}:{seq}:{det.index}", first_seq=seq, first_t=t, last_t=t,
                       box=[float(v) for v in det.box],
                       emb=None if det.embedding is None else [float(x) for x in det.embedding])
            self.tracks[tr.track_id] = tr
            created.append(tr)
            out.append((tr, det))
        out.sort(key=lambda p: p[1].index)
        return out, created

    def _apply(self, tr: Track, t: float, det: Detection) -> None:
        dt = t - tr.last_t
        if dt > 0:
            ocx, ocy = tr.box[0] + tr.box[2] / 2, tr.box[1] + tr.box[3] / 2
            ncx, ncy = det.box[0] + det.box[2] / 2, det.box[1] + det.box[3] / 2
            tr.vel = [(1 - self.beta) * tr.vel[0] + self.beta * (ncx - ocx) / dt,
                      (1 - self.beta) * tr.vel[1] + self.beta * (ncy - ocy) / dt]
        tr.box = [float(v) for v in det.box]
        tr.last_t = t
        tr.hits += 1
        if det.embedding is not None:
            if tr.emb is None:
                tr.emb = [float(x) for x in det.embedding]
            else:
                e = self.momentum * np.asarray(tr.emb, np.float32) + (1 - self.momentum) * det.embedding
                e /= max(float(np.linalg.norm(e)), 1e-12)
                tr.emb = [round(float(x), 6) for x in e]

    # ---- checkpoint -----------------------------------------------------------------------------------
    def to_state(self) -> list[dict]:
        return [tr.to_state() for tr in sorted(self.tracks.values(), key=lambda tr: tr.track_id)]

    def load_state(self, state: list[dict]) -> None:
        self.tracks = {d["track_id"]: Track.from_state(d) for d in state}
