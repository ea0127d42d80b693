"""Calibrate the same-person threshold (thresholds.match) and the detector score threshold on ../shared/data.

    .venv/bin/python bench/calibrate_threshold.py [--data ../shared/data] [--json bench/results/engine_calibration.json]

Match threshold: embed the largest face of every deepface photo (25 photos, 9 people), score all 300 labelled
pairs of pairs.csv (cosine), and take the widest gap between the lowest same-person score and the highest
different-person score; the default is the middle of that gap, rounded to 0.01 (best margin on both sides).
The same threshold is then checked, unseen, on the face_recognition photo set (knn_examples/train + test,
single-face photos labelled by folder / file name).

Detector threshold: YuNet at 0.5..0.9 over every shared photo (faces found vs. the known count per photo) and over
every frame of short_hamilton_clip.mp4 (detections per score band; which of them are faces was judged by eye on
contact sheets, see the README).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.engine.imageio import load_image  # noqa: E402

# Photos with more than one face (known counts); every other shared photo has exactly one.
KNOWN_COUNTS = {"two_people.jpg": 2, "obama_and_biden.jpg": 3, "kit_with_rose.jpg": 2}


def engine(det_threshold: float = 0.5) -> FaceEngine:
    """The engine with this run's FACETRAIL_* environment (e.g. FACETRAIL_MODELS__CPU_PRECISION=f32) and the
    detector threshold under test."""
    env = {k: v for k, v in os.environ.items() if k.startswith("FACETRAIL_") and k != "FACETRAIL_CONFIG"}
    return FaceEngine(load_settings([], env=dict(env, FACETRAIL_MODELS__DET_SCORE_THRESHOLD=str(det_threshold))))


def embed_dir(eng: FaceEngine, paths: list[Path]) -> dict[str, np.ndarray]:
    out = {}
    for p in paths:
        face = eng.main_face(load_image(p))
        if face is None:
            raise SystemExit(f"no face in {p}")
        out[p.name if p.parent.name == "deepface" else str(p)] = face.embedding
    return out


def calibrate_match(eng: FaceEngine, data: Path) -> dict:
    d = data / "faces" / "deepface"
    with open(d / "pairs.csv", newline="") as f:
        pairs = [(r["file_x"], r["file_y"], r["Decision"].strip().lower() == "yes") for r in csv.DictReader(f)]
    names = sorted({p for a, b, _ in pairs for p in (a, b)})
    emb = embed_dir(eng, [d / n for n in names])
    same = np.array([float(emb[a] @ emb[b]) for a, b, y in pairs if y])
    diff = np.array([float(emb[a] @ emb[b]) for a, b, y in pairs if not y])
    lo, hi = float(diff.max()), float(same.min())
    threshold = round((lo + hi) / 2, 2)
    return {"pairs": len(pairs), "same_pairs": int(len(same)), "different_pairs": int(len(diff)),
            "same_min": round(hi, 4), "same_mean": round(float(same.mean()), 4),
            "different_max": round(lo, 4), "different_mean": round(float(diff.mean()), 4),
            "separable": hi > lo, "threshold": threshold,
            "margin": round(min(hi - threshold, threshold - lo), 4),
            "errors_at_threshold": int((same < threshold).sum() + (diff >= threshold).sum())}


def holdout(eng: FaceEngine, data: Path, threshold: float) -> dict:
    fr = data / "faces" / "face_recognition" / "knn_examples"
    people = {}
    for p in sorted((fr / "train").glob("*/*")):
        people[p] = p.parent.name
    for p in sorted((fr / "test").glob("*.jpg")):
        for person in ("alex_lacamoire", "obama"):
            if p.stem.startswith(person):
                people[p] = person
    emb = {p: eng.main_face(load_image(p)).embedding for p in people}
    same, diff = [], []
    for a, b in itertools.combinations(people, 2):
        (same if people[a] == people[b] else diff).append(float(emb[a] @ emb[b]))
    same, diff = np.array(same), np.array(diff)
    return {"photos": len(people), "same_pairs": int(len(same)), "different_pairs": int(len(diff)),
            "same_min": round(float(same.min()), 4), "different_max": round(float(diff.max()), 4),
            "errors_at_threshold": int((same < threshold).sum() + (diff >= threshold).sum())}


def detector_sweep(data: Path, thresholds=(0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)) -> dict:
    eng = engine(min(thresholds))
    faces_root = data / "faces"
    photos = sorted(p for p in faces_root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    still_scores = {}
    for p in photos:
        still_scores[p] = [f.score for f in eng.detect([load_image(p)])[0]]
    clip_scores = []
    cap = cv2.VideoCapture(str(faces_root / "face_recognition" / "short_hamilton_clip.mp4"))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        clip_scores.append([f.score for f in eng.detect([frame])[0]])
        frames += 1
    rows = []
    for t in thresholds:
        missed = extra = 0
        for p, scores in still_scores.items():
            n = sum(s >= t for s in scores)
            want = KNOWN_COUNTS.get(p.name, 1)
            missed += max(0, want - n)
            extra += max(0, n - want)
        kept = [[s for s in fr if s >= t] for fr in clip_scores]
        rows.append({"threshold": t, "photos": len(photos), "photo_faces_missed": missed,
                     "photo_extra_detections": extra, "clip_detections": sum(len(k) for k in kept),
                     "clip_frames_with_face": sum(bool(k) for k in kept), "clip_frames": frames})
    true_min = min(s for p, sc in still_scores.items()
                   for s in sorted(sc, reverse=True)[:KNOWN_COUNTS.get(p.name, 1)])
    false_max = max((s for p, sc in still_scores.items()
                     for s in sorted(sc, reverse=True)[KNOWN_COUNTS.get(p.name, 1):]), default=0.0)
    return {"rows": rows, "photo_true_face_min_score": round(true_min, 4),
            "photo_false_detection_max_score": round(false_max, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "engine_calibration.json")
    ap.add_argument("--skip-detector", action="store_true")
    args = ap.parse_args()
    eng = engine(0.7)
    match = calibrate_match(eng, args.data)
    print(f"pairs.csv: {match['same_pairs']} same / {match['different_pairs']} different; "
          f"same min {match['same_min']}, different max {match['different_max']} -> threshold "
          f"{match['threshold']} (margin {match['margin']}), errors {match['errors_at_threshold']}")
    ho = holdout(eng, args.data, match["threshold"])
    print(f"hold-out (face_recognition photos): {ho['same_pairs']} same / {ho['different_pairs']} different; "
          f"same min {ho['same_min']}, different max {ho['different_max']}, errors {ho['errors_at_threshold']}")
    result = {"match": match, "holdout": ho}
    if not args.skip_detector:
        det = detector_sweep(args.data)
        result["detector"] = det
        print(f"photos: lowest true-face score {det['photo_true_face_min_score']}, "
              f"highest false detection {det['photo_false_detection_max_score']}")
        print(f"{'det thr':>7} {'missed':>6} {'extra':>5} {'clip dets':>9} {'clip frames':>11}")
        for r in det["rows"]:
            print(f"{r['threshold']:>7} {r['photo_faces_missed']:>6} {r['photo_extra_detections']:>5} "
                  f"{r['clip_detections']:>9} {r['clip_frames_with_face']:>7}/{r['clip_frames']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
