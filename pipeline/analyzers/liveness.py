"""Liveness from a track's own faces, no model: does the face move like one plane (a print, a phone, a tablet) or
like a head (nose and cheeks shift by different amounts as it turns)?

For pairs of the track's face crops some time apart, dense optical flow (Farneback) maps the inner face of one
crop onto the other. One homography (RANSAC) explains that flow field entirely when the face is flat, however the
print is moved, rotated, scaled or tilted; when a real head yaws or pitches, the nose region moves against the
cheeks and one homography leaves a residual. Per pair: the residual (high percentile of the flow's distance to
the homography, as a share of the crop side) and the motion (how far the flow is from a plain shift). Over the
track: the score is a high percentile of the residual over the pairs that moved enough.

verdict: live (score >= live_threshold), spoof (score < spoof_threshold with at least `min_pairs` moving pairs),
undetermined otherwise (too little motion, too few crops: a head that held still is not evidence either way).
Measured in bench/eval_liveness.py (README "Liveness")."""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import ANALYZERS, FaceSample

SIDE = 96  # crops are compared at this size


class Liveness(BaseModel):
    """The liveness of one track (on its `track.ended` event)."""

    model_config = ConfigDict(extra="forbid")
    score: float | None = Field(None, description="parallax the planar model leaves (share of the face crop, x100); "
                                                  "higher = more head-like; null when no pair moved enough")
    verdict: Literal["live", "spoof", "undetermined"]
    reasons: list[str] = Field(default_factory=list)
    pairs: int = Field(0, description="crop pairs that moved enough to count")


def _mask(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    d = ((xx - side / 2) / (0.30 * side)) ** 2 + ((yy - side * 0.52) / (0.36 * side)) ** 2
    return d <= 1.0


_MASK = _mask(SIDE)
_GRID = np.zeros_like(_MASK)
_GRID[::3, ::3] = True
_PTS = np.argwhere(_MASK & _GRID)[:, ::-1].astype(np.float32)  # (x, y)


def _prep(crop: np.ndarray) -> np.ndarray | None:
    h, w = crop.shape[:2]
    if min(h, w) < 24 or abs(h - w) > 0.08 * max(h, w):  # clipped at the frame edge: not the usual framing
        return None
    img = cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA if h > SIDE else cv2.INTER_LINEAR)
    return cv2.equalizeHist(img)


def _flow_fit(a: np.ndarray, b: np.ndarray, p: np.ndarray):
    flow = cv2.calcOpticalFlowFarneback(a, b, np.zeros((SIDE, SIDE, 2), np.float32), 0.5, 3, 13, 4, 5, 1.1, 0)
    pi = np.clip(np.rint(p), 0, SIDE - 1).astype(int)
    q = p + flow[pi[:, 1], pi[:, 0]]
    H, _ = cv2.findHomography(p, q, cv2.RANSAC, 1.0, maxIters=500, confidence=0.99)
    return q, H


def pair_measure(a: np.ndarray, b: np.ndarray, refine: bool = True) -> tuple[float, float]:
    """(residual, motion) of one pair of prepared crops, both as a share of the crop side. With `refine`, crop a
    is first warped by the homography found, and the flow measured again: what is left is small for a plane
    (flow is accurate at small displacements), the parallax for a head."""
    p = _PTS
    q, H = _flow_fit(a, b, p)
    f = q - p
    motion = float(np.percentile(np.linalg.norm(f - np.median(f, 0), axis=1), 90)) / SIDE
    if H is None:
        return 0.0, motion
    if refine:
        aw = cv2.warpPerspective(a, H, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        p2 = cv2.perspectiveTransform(p[None], H)[0]
        ok = (p2 >= 0).all(1) & (p2 <= SIDE - 1).all(1)
        if ok.sum() >= 20:
            q2, H2 = _flow_fit(aw, b, p2[ok])
            if H2 is not None:
                res = np.linalg.norm(cv2.perspectiveTransform(p2[ok][None], H2)[0] - q2, axis=1)
                return float(np.percentile(res, 90)) / SIDE, motion
    res = np.linalg.norm(cv2.perspectiveTransform(p[None], H)[0] - q, axis=1)
    return float(np.percentile(res, 90)) / SIDE, motion


class LivenessAnalyzer:
    name = "liveness"
    field = "liveness"

    def __init__(self, cfg=None, *, live_threshold: float = 0.8, spoof_threshold: float = 0.8,
                 min_motion: float = 0.02, min_pairs: int = 3, max_gap: int = 3, percentile: float = 50.0):
        g = (lambda k, d: getattr(cfg, k, d)) if cfg is not None else (lambda k, d: d)
        self.live_threshold = g("live_threshold", live_threshold)
        self.spoof_threshold = g("spoof_threshold", spoof_threshold)
        self.min_motion = g("min_motion", min_motion)
        self.min_pairs = g("min_pairs", min_pairs)
        self.max_gap = g("max_gap", max_gap)
        self.percentile = g("percentile", percentile)

    def measure(self, faces: list[FaceSample]) -> list[tuple[float, float]]:
        imgs = [x for x in (_prep(f.crop) for f in faces) if x is not None]
        return [pair_measure(imgs[i], imgs[j]) for i in range(len(imgs))
                for j in range(i + 1, min(len(imgs), i + 1 + self.max_gap))]

    def decide(self, pairs: list[tuple[float, float]], n_faces: int) -> Liveness:
        moved = [r for r, m in pairs if m >= self.min_motion]
        if not moved:
            why = "too few face crops" if n_faces < 2 else "the face barely moved"
            return Liveness(score=None, verdict="undetermined", reasons=[why], pairs=0)
        score = round(float(np.percentile(moved, self.percentile)) * 100, 3)
        if score >= self.live_threshold:
            return Liveness(score=score, verdict="live", pairs=len(moved),
                            reasons=[f"parallax {score:.2f} >= {self.live_threshold:g}: not one plane"])
        if score < self.spoof_threshold and len(moved) >= self.min_pairs:
            return Liveness(score=score, verdict="spoof", pairs=len(moved),
                            reasons=[f"planar motion: one homography explains the face over {len(moved)} pairs "
                                     f"(parallax {score:.2f} < {self.spoof_threshold:g})"])
        return Liveness(score=score, verdict="undetermined", pairs=len(moved),
                        reasons=[f"parallax {score:.2f} between the thresholds or too few moving pairs "
                                 f"({len(moved)} < {self.min_pairs})"])

    def analyze(self, faces: list[FaceSample]) -> Liveness:
        return self.decide(self.measure(faces), len(faces))


ANALYZERS.register("liveness")(LivenessAnalyzer)
