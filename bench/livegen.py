"""Liveness clips from still photos (bench/eval_liveness.py, tests/test_liveness.py). Nothing is committed: frames
are made at test/bench time from ../shared/data.

LIVE: the photo's head crop mapped onto a 3D head (an ellipsoid with a protruding nose, separable depth) that
turns (yaw, some pitch) while it moves; rendered by inverting the depth map row by row, so the face deforms the
way a real head does (near parts shift more than far parts). A plain perspective warp of the flat photo would be
a homography, i.e. a print: it is not used here.
SPOOF: the same crop pasted flat, as a held-up print or a phone: moved, rotated, scaled and tilted (a
homography), optionally with a white paper margin or a dark screen bezel, and optionally with screen texture
(a fine pixel grid, a little blur and glare)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Shot:
    kind: str            # "live" | "spoof"
    photo: str
    seed: int
    frames: int = 40
    fps: float = 10.0
    face_px: int = 120   # face height in the frame
    yaw_deg: float = 25.0  # live: peak yaw; spoof: peak out-of-plane tilt of the print
    border: str = "none"  # spoof: none | paper | bezel
    screen: bool = False  # spoof: pixel grid + glare


def _ellipse_mask(h: int, w: int, feather: float = 0.08) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx - w / 2) / (w * 0.46)) ** 2 + ((yy - h / 2) / (h * 0.48)) ** 2
    return np.clip((1.0 - d) / feather, 0.0, 1.0)


def _depth(h: int, w: int, nose: tuple[float, float]) -> np.ndarray:
    """Depth (toward the camera, px) of a head filling an h x w crop: ellipsoid + nose ridge/tip."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = w * 0.5, h * 0.55
    d = 1.0 - ((xx - w / 2) / a) ** 2 - ((yy - h / 2) / b) ** 2
    z = 0.55 * a * np.sqrt(np.clip(d, 0.0, 1.0))
    nx, ny = nose
    z += 0.22 * w * np.exp(-(((xx - nx) / (0.09 * w)) ** 2 + ((yy - ny) / (0.16 * h)) ** 2))
    return z


def _turn(img: np.ndarray, z: np.ndarray, yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic rotation of a depth-mapped image: yaw moves columns by z*sin(yaw), pitch rows by z*sin(pitch).
    Inverted per row/column (the forward map is monotone for moderate angles); returns (image, alpha)."""
    h, w = z.shape
    alpha = _ellipse_mask(h, w)
    xs = np.arange(w, dtype=np.float32)
    mapx = np.empty((h, w), np.float32)
    c, s = np.cos(yaw), np.sin(yaw)
    for r in range(h):
        fwd = np.maximum.accumulate((xs - w / 2) * c + z[r] * s + w / 2)
        mapx[r] = np.interp(xs, fwd, xs)
    mapy = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1)
    out = cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    al = cv2.remap(alpha, mapx, mapy, cv2.INTER_LINEAR, borderValue=0)
    zz = cv2.remap(z, mapx, mapy, cv2.INTER_LINEAR)
    ys = np.arange(h, dtype=np.float32)
    mapy2 = np.empty((h, w), np.float32)
    c, s = np.cos(pitch), np.sin(pitch)
    for col in range(w):
        fwd = np.maximum.accumulate((ys - h / 2) * c + zz[:, col] * s + h / 2)
        mapy2[:, col] = np.interp(ys, fwd, ys)
    mapx2 = np.repeat(np.arange(w, dtype=np.float32)[None, :], h, 0)
    out = cv2.remap(out, mapx2, mapy2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    al = cv2.remap(al, mapx2, mapy2, cv2.INTER_LINEAR, borderValue=0)
    return out, al


def face_crop(photo: str, detector) -> tuple[np.ndarray, tuple[float, float], float]:
    """The photo's largest face, tightly (forehead to chin), with its nose position in the crop and face height."""
    try:
        from bench.clipgen import largest_face
    except ImportError:  # run as a script from bench/
        from clipgen import largest_face
    img, f = largest_face(photo, detector)
    x, y, w, h = f[:4]
    m = 0.25
    x0, y0 = int(max(0, x - m * w)), int(max(0, y - m * h))
    x1, y1 = int(min(img.shape[1], x + w + m * w)), int(min(img.shape[0], y + h + m * h))
    return img[y0:y1, x0:x1].copy(), (float(f[8] - x0), float(f[9] - y0)), float(h)


def _paste(frame: np.ndarray, img: np.ndarray, alpha: np.ndarray | None, H: np.ndarray) -> None:
    h, w = frame.shape[:2]
    warped = cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR)
    a = np.ones(img.shape[:2], np.float32) if alpha is None else alpha
    aw = cv2.warpPerspective(a, H, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame[:] = np.clip(frame * (1 - aw) + warped * aw, 0, 255).astype(np.uint8)


def _plane_tilt(w: float, h: float, yaw: float, pitch: float, f: float) -> np.ndarray:
    """Homography of a w x h plane rotated by yaw/pitch about its centre, seen by a pinhole camera at distance f."""
    R = cv2.Rodrigues(np.array([pitch, yaw, 0.0]))[0]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    pts = np.c_[src - [w / 2, h / 2], np.zeros(4)] @ R.T
    dst = (pts[:, :2] * (f / (f + pts[:, 2:3]))) + [w / 2, h / 2]
    return cv2.getPerspectiveTransform(src, np.float32(dst))


def render(shot: Shot, detector, size=(640, 360)) -> list[np.ndarray]:
    """The shot's frames (BGR), one face moving across a static background."""
    try:
        from bench.clipgen import background
    except ImportError:  # run as a script from bench/
        from clipgen import background

    rng = np.random.default_rng(shot.seed)
    crop, nose, fh = face_crop(shot.photo, detector)
    s = shot.face_px / fh
    crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    nose = (nose[0] * s, nose[1] * s)
    h, w = crop.shape[:2]
    bg = background(size, int(rng.integers(0, 1 << 30)))
    W, Hh = size
    phase, f0 = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2)  # turns per clip
    x0, x1 = rng.uniform(0.3, 0.45), rng.uniform(0.55, 0.7)
    y0 = rng.uniform(0.4, 0.6)
    src = crop
    alpha = None
    if shot.kind == "live":
        z = _depth(h, w, nose)
    else:
        pad = int(0.12 * max(h, w))
        if shot.border == "paper":
            src = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(235, 235, 232))
        elif shot.border == "bezel":
            src = cv2.copyMakeBorder(crop, pad // 2, pad // 2, pad // 2, pad // 2, cv2.BORDER_CONSTANT,
                                     value=(20, 20, 22))
        if shot.screen:
            g = np.indices(src.shape[:2]).sum(0) % 3 == 0
            src = src.astype(np.float32)
            src[g] *= 0.85
            yy, xx = np.mgrid[0:src.shape[0], 0:src.shape[1]]
            src += 40 * np.exp(-(((xx - src.shape[1] * 0.7) / (0.3 * src.shape[1])) ** 2
                                 + ((yy - src.shape[0] * 0.3) / (0.3 * src.shape[0])) ** 2))[..., None]
            src = cv2.GaussianBlur(np.clip(src, 0, 255).astype(np.uint8), (0, 0), 0.6)
    sh, sw = src.shape[:2]
    out = []
    for i in range(shot.frames):
        u = i / max(1, shot.frames - 1)
        ang = np.radians(shot.yaw_deg) * np.sin(2 * np.pi * f0 * u + phase)
        pit = 0.35 * np.radians(shot.yaw_deg) * np.sin(2 * np.pi * 0.5 * f0 * u + phase * 0.7)
        frame = bg.copy()
        cx, cy = (x0 + (x1 - x0) * u) * W, y0 * Hh + 10 * np.sin(3 * u)
        if shot.kind == "live":
            img, alpha = _turn(src, z, ang, pit)
            roll, scale = np.radians(4) * np.sin(5 * u + phase), 1.0 + 0.1 * np.sin(4 * u)
            T = _similar(sw, sh, cx, cy, roll, scale)
            _paste(frame, img, alpha, T)
        else:
            roll, scale = np.radians(12) * np.sin(4 * u + phase), 1.0 + 0.2 * np.sin(3 * u + phase)
            Ht = _plane_tilt(sw, sh, ang, pit, 2.2 * max(sw, sh))
            T = _similar(sw, sh, cx, cy, roll, scale) @ Ht
            _paste(frame, src, None, T)
        if shot.kind == "spoof" and shot.screen:
            frame = cv2.GaussianBlur(frame, (0, 0), 0.4)
        out.append(frame)
    return out


def _similar(w: float, h: float, cx: float, cy: float, roll: float, scale: float) -> np.ndarray:
    c, s = np.cos(roll) * scale, np.sin(roll) * scale
    A = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    return np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]]) @ A @ np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])


class StagePipeline:
    """The real pipeline stages in one process, no Redis: DetectStage (YuNet, the re-embedding gate, thumbnails)
    -> EmbedStage (SFace) -> MatcherStage (tracker, voting, analyzers). Each shot is its own camera."""

    def __init__(self, settings):
        from pipeline.engine.engine import FaceEngine
        from pipeline.stages import DetectStage
        from pipeline.stages import EmbedStage

        self.settings = settings
        self.engine = FaceEngine(settings)
        self.det = DetectStage(settings, engine=self.engine)
        self.emb = EmbedStage(settings, engine=self.engine)

    def enroll(self, photos: dict[str, str]):
        """A gallery search over one embedding per name (the photo's largest face)."""
        from pipeline.tracking import Candidate

        gallery = {}
        for name, path in photos.items():
            img = cv2.imread(path)
            faces = self.engine.embed_faces(img, self.engine.detect([img])[0])
            best = max(faces, key=lambda f: f.box[2] * f.box[3])
            gallery[name] = np.asarray(best.embedding, np.float32)

        def search(vecs):
            return [sorted((Candidate(n, n, float(np.dot(g, v))) for n, g in gallery.items()),
                           key=lambda c: -c.score) for v in vecs]
        return search

    def run(self, camera: str, frames: list[np.ndarray], search, fps: float = 10.0, stage=None):
        """All events of the shot (the stream ends after the last frame). Returns (events, stage)."""
        from pipeline.messages import FrameMsg, FrameRef
        from pipeline.stages import MatcherStage

        stage = stage or MatcherStage.from_settings(camera, search, self.settings)
        events = []
        h, w = frames[0].shape[:2]
        for i, img in enumerate(frames + [None]):
            ref = FrameRef(camera=camera, seq=i, captured_at=1000.0 + i / fps, pts=i / fps, width=w, height=h,
                           eos=img is None)
            faces = self.det.process([(FrameMsg(frame=ref, jpeg=b""), img)])
            for em in self.emb.process(faces):
                events += stage.update(em).events
        return events, stage
