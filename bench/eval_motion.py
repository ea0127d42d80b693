"""Motion gating: frames the detector no longer runs on, and what that costs in missed faces (README
"Motion gating"). In-process, the same stages as the pipeline (DetectStage -> EmbedStage -> MatcherStage), each
clip run twice: motion gating off (every frame detected) and on.

    .venv/bin/python bench/eval_motion.py [--out bench/results/motion.json] [--grabber-only]

Clips: the Hamilton clip (faces nearly all the time) and a composed 60 s scene at 10 fps in which people are
present ~20 % of the time (bench/clipgen.py: shared photos over a static background, with sensor noise).
Missed face-frames = frames with a face in the ungated run that the gated run did not detect; the events
(tracks and the names they end with) are compared too. grabber_gate_*: the scene as H.264 (a keyframe a second)
through the grabber-side gate with idle keyframes-only decoding (pipeline/motion.GrabberGate, as a live camera's
grabber runs it) vs every frame decoded and detected."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from clipgen import Visit, render, to_h264  # noqa: E402
from index.replica import Match  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import EmbeddingsMsg, FrameMsg, FrameRef  # noqa: E402
from pipeline.stages import MatcherStage  # noqa: E402
from pipeline.stages import DetectStage  # noqa: E402
from pipeline.stages import EmbedStage  # noqa: E402

FACES = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"


def gallery_search(eng, people: dict[str, str]):
    names, vecs = [], []
    for name, path in people.items():
        names.append(name)
        vecs.append(eng.analyze([cv2.imread(path)])[0][0].embedding)
    G = np.stack(vecs).astype(np.float32)

    def search(vectors):
        sims = np.asarray(vectors, np.float32) @ G.T
        return [sorted((Match(n, n, float(s)) for n, s in zip(names, row)), key=lambda m: -m.score) for row in sims]
    return search


def run(video: Path, settings, eng, search, noise: float = 0.0) -> dict:
    det, emb = DetectStage(settings, eng), EmbedStage(settings, eng)
    stage = MatcherStage.from_settings("cam", search, settings)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    rng = np.random.default_rng(0)
    with_face, events, seq, t_det = set(), [], 0, 0.0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if noise:
            img = np.clip(img.astype(np.int16) + rng.normal(0, noise, img.shape).astype(np.int16), 0, 255
                          ).astype(np.uint8)
        ref = FrameRef(camera="cam", seq=seq, captured_at=seq / fps, pts=seq / fps, width=img.shape[1],
                       height=img.shape[0])
        t0 = time.perf_counter()
        fm = det.process([(FrameMsg(frame=ref, jpeg=b""), img)])[0]
        t_det += time.perf_counter() - t0
        if fm.faces:
            with_face.add(seq)
        events += stage.update(emb.process([fm])[0]).events
        seq += 1
    events += stage.update(EmbeddingsMsg(frame=FrameRef(camera="cam", seq=seq, captured_at=seq / fps, width=1,
                                                       height=1, eos=True))).events
    ended = sorted((e.first_seen, e.identity) for e in events if e.type == "track.ended")
    return {"frames": seq, "frames_with_face": with_face, "motion_skipped": det.motion_skipped,
            "detect_ms_per_frame": round(1000 * t_det / max(seq, 1), 2), "tracks": ended}


def compare(video: Path, eng_settings: tuple, search, noise: float = 0.0) -> dict:
    (s_off, s_on), eng = eng_settings
    off, on = run(video, s_off, eng, search, noise), run(video, s_on, eng, search, noise)
    missed = sorted(off["frames_with_face"] - on["frames_with_face"])
    return {"frames": off["frames"], "frames_with_face": len(off["frames_with_face"]),
            "skipped_by_motion": on["motion_skipped"],
            "skipped_share": round(on["motion_skipped"] / max(off["frames"], 1), 3),
            "missed_face_frames": len(missed), "missed_at": missed[:20],
            "tracks_off": len(off["tracks"]), "tracks_on": len(on["tracks"]),
            "names_off": sorted(n for _, n in off["tracks"] if n), "names_on": sorted(n for _, n in on["tracks"] if n),
            "detect_ms_per_frame_off": off["detect_ms_per_frame"], "detect_ms_per_frame_on": on["detect_ms_per_frame"]}


def run_grabber(video: Path, settings, eng, search, gated: bool) -> dict:
    """The clip as a live camera's grabber with motion.at = grabber sees it (every frame sampled): with gated, its
    GrabberGate and idle keyframes-only decoding (replay on motion); still frames go on with no faces, frames
    never decoded while idle are never published. Without, every frame is decoded and detected."""
    from pipeline.decode import AvCapture
    from pipeline.messages import FacesMsg
    from pipeline.motion import GrabberGate

    plain = settings.model_copy(update={"motion": settings.motion.model_copy(update={"enabled": False})})
    det, emb = DetectStage(plain, eng), EmbedStage(plain, eng)
    stage = MatcherStage.from_settings("cam", search, plain)
    cap = AvCapture(str(video), skip="none", idle_capable=gated)
    clock = {"t": 0.0, "face": -1e9}
    gate = GrabberGate(settings, "cam", lambda: clock["face"] + settings.tracking.max_age_s,
                       clock=lambda: clock["t"])
    st = {"seq": 0, "detected": 0, "still": 0}
    with_face, events = set(), []

    def publish(t, img, go):
        ref = FrameRef(camera="cam", seq=st["seq"], captured_at=t, pts=t, width=img.shape[1], height=img.shape[0])
        st["seq"] += 1
        if go:
            st["detected"] += 1
            fm = det.process([(FrameMsg(v=2, frame=ref, jpeg=b"", gated=True), img)])[0]
            if fm.faces:
                with_face.add(round(t, 2))
                clock["face"] = t
        else:
            st["still"] += 1
            fm = FacesMsg(frame=ref)
        events.extend(stage.update(emb.process([fm])[0]).events)

    while cap.grab():
        ok, img = cap.retrieve()
        t = cap.get(0) / 1000.0
        clock["t"] = t
        if not gated:
            publish(t, img, True)
            continue
        go, replay = gate.step(cap, t, img)
        for old_t, old_img in replay:
            publish(old_t, old_img, True)
        publish(t, img, go)
    cap.release()
    events += stage.update(EmbeddingsMsg(frame=FrameRef(camera="cam", seq=st["seq"], captured_at=clock["t"],
                                                       width=1, height=1, eos=True))).events
    ended = sorted((e.first_seen, e.identity) for e in events if e.type == "track.ended")
    return {"published": st["seq"], "detected": st["detected"], "still": st["still"], "decoded": cap.decoded,
            "replayed": cap.replayed, "frames_with_face": with_face, "tracks": ended}


def compare_grabber(video: Path, settings, eng, search) -> dict:
    off, on = (run_grabber(video, settings, eng, search, g) for g in (False, True))
    missed = sorted(off["frames_with_face"] - on["frames_with_face"])
    return {"frames": off["decoded"], "frames_with_face": len(off["frames_with_face"]),
            "decoded_on": on["decoded"], "decoded_share": round(on["decoded"] / max(1, off["decoded"]), 3),
            "published_on": on["published"], "still_on": on["still"], "replayed_on": on["replayed"],
            "detected_on": on["detected"], "detected_share": round(on["detected"] / max(1, off["detected"]), 3),
            "missed_face_frames": len(missed), "missed_at": missed[:20],
            "tracks_off": len(off["tracks"]), "tracks_on": len(on["tracks"]),
            "names_off": sorted(n for _, n in off["tracks"] if n), "names_on": sorted(n for _, n in on["tracks"] if n)}


def scene(path: Path, models_dir: Path) -> None:
    """60 s at 10 fps; five visits of 2.4 s (20 % presence)."""
    d = FACES / "deepface"
    photos = [FACES / "face_recognition" / "lin-manuel-miranda.png", d / "img1.jpg", d / "img13.jpg",
              FACES / "face_recognition" / "obama.jpg", d / "img3.jpg"]
    visits = [Visit(person=p.stem, photo=str(p), start_s=4.0 + 12.0 * i, dur_s=2.4, face_px=90 + 15 * (i % 3))
              for i, p in enumerate(photos)]
    render(visits, path, models_dir=models_dir, fps=10.0, duration_s=60.0, seed=21)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "motion.json"))
    ap.add_argument("--grabber-only", action="store_true",
                    help="only the grabber-side gate on the scene (added to an existing --out)")
    a = ap.parse_args()
    s_off = load_settings([], env={"FACETRAIL_MOTION__ENABLED": "false"})
    s_on = load_settings([], env={"FACETRAIL_MOTION__ENABLED": "true"})
    eng = FaceEngine(s_on)
    fr = FACES / "face_recognition"
    search = gallery_search(eng, {"lin-manuel-miranda": str(fr / "lin-manuel-miranda.png"),
                                  "alex-lacamoire": str(fr / "alex-lacamoire.png"),
                                  "obama": str(fr / "obama2.jpg")})
    if a.grabber_only:
        out = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    else:
        out = {"hamilton": compare(fr / "short_hamilton_clip.mp4", ((s_off, s_on), eng), search)}
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "scene.mp4"
        scene(p, s_on.models.dir)
        if not a.grabber_only:
            out["scene_20pct"] = compare(p, ((s_off, s_on), eng), search)
            out["scene_20pct_sensor_noise"] = compare(p, ((s_off, s_on), eng), search, noise=4.0)
        clip = to_h264(p, Path(tmp) / "scene_h264.mp4", preset="veryfast")
        out["grabber_gate_scene_20pct_h264_gop1s"] = compare_grabber(clip, s_on, eng, search)
    if a.grabber_only:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out["grabber_gate_scene_20pct_h264_gop1s"], indent=1))
        return 0
    gate = __import__("pipeline.motion", fromlist=["MotionGate"]).MotionGate.from_settings(s_on)
    img = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for i in range(300):
        gate.moving("bench", i * 0.1, img)
    out["motion_ms_per_720p_frame"] = round((time.perf_counter() - t0) / 300 * 1000, 3)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
