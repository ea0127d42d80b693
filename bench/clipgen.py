"""Compose test clips from still photos: head crops moving over a static background, with ground truth.

Used by tests (unknown visitors on two cameras) and benchmarks. Nothing is committed: clips are written at
test/bench time from ../shared/data. A visit is one photo's head crop gliding across the frame for a few
seconds; between visits the scene is empty for longer than tracking.max_age_s, so each visit is one track.
Optional per-visit blur (Gaussian sigma, px) and gain (brightness factor) make harder footage; occluding bars
(pillars, drawn over the faces), several visits at once (crossing at different heights) and long stays make the
hard development set of bench/eval_hard.py. Each truth row names its visit and how much of the face is visible,
so an evaluation can tell a face hidden by a pillar from one the detector missed."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Visit:
    person: str
    photo: str          # path of the source photo
    start_s: float
    dur_s: float
    face_px: int = 110  # face box height in the clip
    x0: float = 0.15    # start and end of the face centre, as fractions of the frame
    x1: float = 0.75
    y: float = 0.5
    blur: float = 0.0
    gain: float = 1.0
    y1: float | None = None  # end height (None = y): a visit may drift up or down while crossing


@dataclass
class Bar:
    """An occluder (a pillar or a door frame) in front of everyone: x and width as fractions of the frame width,
    full height."""

    x: float
    width: float
    color: tuple[int, int, int] = (70, 80, 90)


def _detector(models_dir: Path):
    from pipeline.models import model_path

    return cv2.FaceDetectorYN.create(str(model_path("yunet", models_dir)), "", (320, 320), 0.6, 0.3, 5000)


def largest_face(photo: str, detector) -> tuple[np.ndarray, np.ndarray]:
    """(the photo, its largest YuNet face row in the photo's pixels), found on a copy scaled to <= 640 px."""
    img = cv2.imread(photo, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{photo}: not a readable image")
    s = min(1.0, 640.0 / max(img.shape[:2]))
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
    detector.setInputSize((small.shape[1], small.shape[0]))
    _, faces = detector.detect(small)
    if faces is None or not len(faces):
        raise ValueError(f"{photo}: no face found")
    return img, faces[np.argmax(faces[:, 2] * faces[:, 3])] / s


def head_crop(photo: str, detector) -> tuple[np.ndarray, float]:
    """The photo's largest face with a margin (head and some shoulders); returns (crop, face box height)."""
    img, f = largest_face(photo, detector)
    x, y, w, h = f[:4]
    m = 0.6
    x0, y0 = int(max(0, x - m * w)), int(max(0, y - m * h))
    x1, y1 = int(min(img.shape[1], x + w + m * w)), int(min(img.shape[0], y + h + m * h))
    return img[y0:y1, x0:x1].copy(), float(h)


def background(size: tuple[int, int], seed: int) -> np.ndarray:
    """A static scene: a gradient wall, a floor, a few shapes; the same for a seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    base = rng.uniform(60, 160, 3).astype(np.float32)
    img = np.broadcast_to(base * (0.7 + 0.5 * yy), (h, w, 3)).copy()
    img[int(h * 0.78):] *= 0.6
    for _ in range(6):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, int(h * 0.7)))
        cw, ch = int(rng.integers(30, 160)), int(rng.integers(30, 120))
        cv2.rectangle(img, (x, y), (x + cw, y + ch), rng.uniform(30, 220, 3).tolist(), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _visible(box: list[float], bars: list[tuple[int, int]], w: int, h: int) -> float:
    """Fraction of the face box inside the frame and not behind a bar."""
    x0, y0, x1, y1 = box[0], box[1], box[0] + box[2], box[1] + box[3]
    area = max(box[2] * box[3], 1e-6)
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return 0.0
    seen = (cx1 - cx0) * (cy1 - cy0)
    for bx0, bx1 in bars:
        ox = max(0.0, min(cx1, bx1) - max(cx0, bx0))
        seen -= ox * (cy1 - cy0)
    return round(max(0.0, seen) / area, 3)


def render(visits: list[Visit], path: Path, *, models_dir: Path, size=(640, 360), fps: float = 10.0,
           duration_s: float | None = None, seed: int = 0, bars: list[Bar] | tuple = ()) -> list[dict]:
    """Write the clip (mp4v) and return the ground truth: one row per frame with a face
    {frame, t, person, box: [x, y, w, h], visit, visible} (box = the pasted head crop's face box,
    approximately; visit = index into visits; visible = fraction of the box in frame and not behind a bar)."""
    det = _detector(models_dir)
    crops = {v.photo: head_crop(v.photo, det) for v in visits}
    bg = background(size, seed)
    end = duration_s or max(v.start_s + v.dur_s for v in visits) + 3.0
    n = int(round(end * fps))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not out.isOpened():
        raise RuntimeError(f"cannot write {path}")
    truth: list[dict] = []
    w, h = size
    bar_px = [(int(b.x * w), int((b.x + b.width) * w)) for b in bars]
    try:
        for i in range(n):
            t = i / fps
            frame = bg.copy()
            for vi, v in enumerate(visits):
                if not v.start_s <= t < v.start_s + v.dur_s:
                    continue
                crop, face_h = crops[v.photo]
                s = v.face_px / face_h
                ch, cw = max(8, int(crop.shape[0] * s)), max(8, int(crop.shape[1] * s))
                head = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
                if v.blur > 0:
                    head = cv2.GaussianBlur(head, (0, 0), v.blur)
                if v.gain != 1.0:
                    head = np.clip(head.astype(np.float32) * v.gain, 0, 255).astype(np.uint8)
                f = (t - v.start_s) / max(v.dur_s, 1e-6)
                yy = v.y if v.y1 is None else v.y + (v.y1 - v.y) * f
                cx, cy = int((v.x0 + (v.x1 - v.x0) * f) * w), int(yy * h)
                x0, y0 = cx - cw // 2, cy - ch // 2
                xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + cw), min(h, y0 + ch)
                if xb <= xa or yb <= ya:
                    continue
                frame[ya:yb, xa:xb] = head[ya - y0:yb - y0, xa - x0:xb - x0]
                fw = v.face_px * 0.8
                box = [round(cx - fw / 2, 1), round(cy - v.face_px / 2, 1), round(fw, 1), v.face_px]
                truth.append({"frame": i, "t": round(t, 3), "person": v.person, "box": box, "visit": vi,
                              "visible": _visible(box, bar_px, w, h)})
            for (bx0, bx1), b in zip(bar_px, bars):
                frame[:, bx0:bx1] = b.color
            out.write(frame)
    finally:
        out.release()
    return truth


def visits_json(visits: list[Visit]) -> list[dict]:
    return [asdict(v) for v in visits]


def write_h264(frames, out: Path, fps: int, gop: int, preset: str = "ultrafast") -> Path:
    """BGR frames as an IP camera sends them: H.264 (PyAV's libx264), IPPP, a keyframe every gop frames."""
    import av

    c = av.open(str(out), "w")
    s = None
    for img in frames:
        if s is None:
            s = c.add_stream("libx264", rate=fps)
            s.height, s.width = img.shape[:2]
            s.pix_fmt = "yuv420p"
            s.options = {"g": str(gop), "keyint_min": str(gop), "bf": "0", "sc_threshold": "0", "preset": preset}
        for pk in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            c.mux(pk)
    if s is not None:
        for pk in s.encode(None):
            c.mux(pk)
    c.close()
    return out


def to_h264(src: Path, out: Path, *, gop: int | None = None, gop_s: float = 1.0, preset: str = "ultrafast") -> Path:
    """A rendered clip re-encoded by write_h264 at its own fps; gop frames, or gop_s seconds, between keyframes."""
    cap = cv2.VideoCapture(str(src))
    fps = int(round(cap.get(cv2.CAP_PROP_FPS) or 10))

    def frames():
        ok, img = cap.read()
        while ok:
            yield img
            ok, img = cap.read()

    try:
        return write_h264(frames(), out, fps, gop or max(1, int(round(gop_s * fps))), preset)
    finally:
        cap.release()
