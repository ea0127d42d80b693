"""Liveness (README "Liveness"): APCER / BPCER of the motion-parallax analyzer through the real stages
(DetectStage/YuNet -> EmbedStage/SFace -> MatcherStage with the analyzers), and CPU ms per analysis.

    .venv/bin/python bench/eval_liveness.py [--seeds 2] [--out bench/results/liveness.json]

Shots (bench/livegen.py, made from ../shared/data; other photos and seeds than tests/test_liveness.py):
live = a photo's face on a 3D head that turns; spoof = the same photo as a flat print or screen, moved, rotated,
scaled and tilted, bare, with a paper margin, or with a dark bezel and screen texture. Real heads: the tracks of
short_hamilton_clip.mp4 (every 3rd frame, ~10 fps).
APCER = spoof tracks judged live (a held-up photo would be named); BPCER = live tracks not judged live (under
the gate with undetermined=deny they name nobody); undetermined rates are reported apart. The gate is on
(analyzers.liveness.required) and every photo is enrolled: `gate` says how many spoof tracks were named anyway
(early or at the end), how many live ones were not, and how soon the live ones were named. CPU: per analysis
(the one at each track's end and the gate's early checks while a track is not yet live)."""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.livegen import Shot, StagePipeline, render  # noqa: E402
from pipeline.config import load_settings  # noqa: E402

DATA = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data"))
# (kind, border, screen, peak yaw/tilt in degrees): the default turn (25), a small one (10) and a strong tilt (40)
KINDS = [("live", "none", False, 25.0), ("live", "none", False, 10.0), ("spoof", "none", False, 25.0),
         ("spoof", "paper", False, 25.0), ("spoof", "bezel", True, 25.0), ("spoof", "paper", False, 40.0)]


def photos() -> list[str]:
    fr = DATA / "faces" / "face_recognition"
    test = {"obama.jpg", "biden.jpg"}  # tests/test_liveness.py uses these
    out = [p for p in sorted(glob.glob(str(fr / "knn_examples" / "train" / "*" / "*"))) if Path(p).name not in test]
    out += sorted(glob.glob(str(DATA / "faces" / "deepface" / "img*.jpg")))[::3]
    return out


def ended(events) -> list:
    return [e for e in events if e.type == "track.ended"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "liveness.json"))
    a = ap.parse_args()
    settings = load_settings([])
    settings.analyzers.liveness.required = True  # the gate: is a held-up photo named, is a live face?
    pipe = StagePipeline(settings)
    rows, ms = [], []
    t0 = time.time()
    for pi, photo in enumerate(photos()):
        search = pipe.enroll({Path(photo).stem: photo})  # the shot's person only: naming is not what is measured
        for seed in range(a.seeds):
            for kind, border, screen, yaw in KINDS:
                shot = Shot(kind, photo, 1000 + 97 * pi + seed, frames=a.frames, border=border, screen=screen,
                            yaw_deg=yaw)
                try:
                    frames = render(shot, _yunet(settings))
                except ValueError as e:
                    print(f"skip {photo}: {e}", file=sys.stderr)
                    break
                cam = f"s{pi}-{seed}-{kind}-{border}-{yaw:g}"
                events, stage = pipe.run(cam, frames, search)
                ms += stage.analyzers.ms
                named = {e.track_id: e.seq for e in events if e.type == "identity.matched"}
                for e in ended(events):
                    lv = e.liveness
                    rows.append({"photo": Path(photo).name, "seed": shot.seed, "kind": kind, "border": border,
                                 "screen": screen, "yaw": yaw, "track": e.track_id, "frames": e.frames,
                                 "verdict": lv.verdict, "named": e.track_id in named,
                                 "named_at_frame": named.get(e.track_id), "status": e.status,
                                 "score": lv.score, "pairs": lv.pairs})
                    print(f"{cam:28s} {Path(photo).name:14s} frames={e.frames:3d} {lv.verdict:12s} "
                          f"score={lv.score} pairs={lv.pairs} named={e.track_id in named}", flush=True)
    fr = DATA / "faces" / "face_recognition"
    real = hamilton(pipe, pipe.enroll({"lin-manuel-miranda": str(fr / "lin-manuel-miranda.png"),
                                       "alex-lacamoire": str(fr / "alex-lacamoire.png")}), ms)
    live = [r for r in rows if r["kind"] == "live"]
    spoof = [r for r in rows if r["kind"] == "spoof"]

    def rate(rs, cond):
        return round(sum(1 for r in rs if cond(r)) / max(1, len(rs)), 4)

    long_real = [r for r in real if r["frames"] >= 20]
    summary = {
        "tracks": {"live": len(live), "spoof": len(spoof), "real_heads": len(real)},
        "APCER": rate(spoof, lambda r: r["verdict"] == "live"),
        "APCER_by_border": {b: rate([r for r in spoof if r["border"] == b], lambda r: r["verdict"] == "live")
                            for b in ("none", "paper", "bezel")},
        "gate": {"spoof_named": rate(spoof, lambda r: r["named"]),
                 "live_not_named": rate(live, lambda r: not r["named"]),
                 "live_named_before_end": rate(live, lambda r: r["named_at_frame"] is not None
                                               and r["named_at_frame"] < a.frames),
                 "median_frame_named": float(np.median([r["named_at_frame"] for r in live if r["named"]] or [0]))},
        "APCER_tilt40": rate([r for r in spoof if r["yaw"] == 40.0], lambda r: r["verdict"] == "live"),
        "spoof_undetermined": rate(spoof, lambda r: r["verdict"] == "undetermined"),
        "BPCER": rate(live, lambda r: r["verdict"] != "live"),
        "BPCER_spoof_verdict": rate(live, lambda r: r["verdict"] == "spoof"),
        "BPCER_yaw10": rate([r for r in live if r["yaw"] == 10.0], lambda r: r["verdict"] != "live"),
        "scores": {k: [round(min(x), 3), round(max(x), 3)] if x else None for k, x in (
            ("live", [r["score"] for r in live if r["score"] is not None]),
            ("spoof", [r["score"] for r in spoof if r["score"] is not None]),
            ("real_heads", [r["score"] for r in real if r["score"] is not None]))},
        "real_heads_live": rate(real, lambda r: r["verdict"] == "live"),
        "real_heads_spoof": rate(real, lambda r: r["verdict"] == "spoof"),
        "real_heads_20plus_frames": {"n": len(long_real), "live": rate(long_real, lambda r: r["verdict"] == "live")},
        "cpu_ms_per_analysis": {"median": round(float(np.median(ms)), 1) if ms else None,
                             "p95": round(float(np.percentile(ms, 95)), 1) if ms else None, "n": len(ms)},
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(summary, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"summary": summary, "shots": rows, "real_heads": real}, indent=1))
    return 0


_DET = None


def _yunet(settings):
    global _DET
    if _DET is None:
        from bench.clipgen import _detector

        _DET = _detector(Path(settings.models.dir))
    return _DET


def hamilton(pipe: StagePipeline, search, ms: list) -> list[dict]:
    """The real clip's tracks (real heads, every 3rd frame)."""
    cap = cv2.VideoCapture(str(DATA / "faces" / "face_recognition" / "short_hamilton_clip.mp4"))
    frames, i = [], 0
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        if i % 3 == 0:
            frames.append(fr)
        i += 1
    events, stage = pipe.run("hamilton", frames, search, fps=29.97 / 3)
    ms += stage.analyzers.ms
    out = []
    named = {e.track_id: e.identity for e in events if e.type == "identity.matched"}
    for e in ended(events):
        lv = e.liveness
        out.append({"track": e.track_id, "frames": e.frames, "verdict": lv.verdict, "score": lv.score,
                    "pairs": lv.pairs, "named": named.get(e.track_id)})
        print(f"hamilton {e.track_id:24s} frames={e.frames:3d} {lv.verdict:12s} score={lv.score} pairs={lv.pairs}",
              flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
