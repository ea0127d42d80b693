"""Does cohort score normalization separate a far face's own person from strangers better than raw SFace cosine?
(issue 15, measured only; nothing in the matcher uses it)

A blurred 40 px face looks a little like everybody. Cohort normalization rescales its cosine s to a template by
how it (Z-norm, probe side) or the template (T-norm) scores against faces of *other* people, the cohort:

    z = (s - mean P) / sd P     P = the probe track's cosines to the cohort (all, or its top K)
    t = (s - mean T) / sd T     T = the template's cosines to the cohort (all, or its top K)
    as = (z + t) / 2            adaptive symmetric (AS-norm) with top-K stats
    lead = s - max P            the score's lead over the probe's best cohort score

SFace only (the default recognizer), the default gallery (one sharp template per enrolled photo, no low-res
templates); a track's vector is the mean of its faces' unit vectors, made unit. Probes as in
bench/eval_faceapi.py: degraded tracks of every non-enrollment shared photo (eval_hard_pairs' 34/42/52 px x
blur 0.8/1.3/1.6, 4 faces), and the hard tune/check clips' appearances (eval_hard_align.build, faces by ground
truth). The cohort never holds an enrolled person, the probe's person or the template's person:

- **clips**: check's cohort = tune's strangers (their clip tracks) plus the degraded tracks of shared photos that
  neither clip nor the enrollment uses, of people in neither clip's cast (= the tune strangers' other photos);
  tune's cohort is the same with check's strangers. This is what a camera's unknowns store would hold.
- **5-person gallery / pairs**: leave-one-identity-out over the degraded tracks of all non-enrollment photos.

Cohort kinds: `deg` (each degraded track / clip track a member: the camera's domain), `cent` (one centroid per
photo or clip appearance, as the unknowns store keeps them), `sharp` (each photo's sharp embedding).

Threshold-free: enrolled tracks above every stranger track, rank-1, person_13's tracks; clips: enrolled
appearances above every stranger appearance and the margin (lowest enrolled own score - highest stranger score).
Then a rule (top-1 by the variant's score, named when score >= thr and its lead over the runner-up >= margin) is
calibrated on tune + the degraded pairs + the 5-person gallery only: per variant and margin (0 / 0.5 / 1 / 2 x the
variant's spread over different-person pair scores) the lowest thr that names no negative there, then the one
naming most positives; check is only reported.

    .venv/bin/python bench/eval_norm.py [--cache /tmp/eval_norm.pkl] [--frames 4]   # ~4 min; with the cache ~30 s

Results: bench/results/norm.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
from eval_faceapi import metrics  # noqa: E402
from eval_hard import ENROLL, FACES  # noqa: E402
from eval_hard_pairs import degraded_tracks, identities  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402

KNOWN = set(ENROLL)
KS = (5, 10, 0)  # top-K cohort stats; 0 = all
MARGIN_F = (0.0, 0.5, 1.0, 2.0)


def unit(v: np.ndarray) -> np.ndarray:
    m = np.asarray(v, np.float64).mean(axis=0) if np.ndim(v) == 2 else np.asarray(v, np.float64)
    return m / np.linalg.norm(m)


def person(name: str) -> str:
    return name.replace("person_", "p")


# ---------------------------------------------------------------- embeddings (slow part, cached)

def collect(eng: FaceEngine, frames: int) -> dict:
    """Sharp embedding of every shared photo, degraded tracks of the non-enrollment ones, clip appearances."""
    ids = {p: person(w) for p, w in identities().items()}

    def sharp(photo: str) -> np.ndarray:
        img = cv2.imread(str(FACES / photo))
        f = max(eng.detect([img])[0], key=lambda f: f.box[2] * f.box[3])
        return unit(eng.embedder.embed([eng.align(img, [f])[0]])[0])

    photos = {**ids, **{v: k for k, v in ENROLL.items()}}
    data = {"sharp": {p: sharp(p) for p in photos}, "who": photos}
    tracks = degraded_tracks(eng, {p: w for p, w in ids.items() if p not in set(ENROLL.values())}, frames)
    data["tracks"] = [{"photo": t["photo"], "who": t["who"], "px": t["px"], "blur": t["blur"],
                       "vec": unit(t["vecs"])} for t in tracks]
    data["clips"] = {}
    import eval_hard_align as EHA
    with tempfile.TemporaryDirectory(prefix="eval_norm_") as tmp:
        for name in ("tune", "check"):
            d = EHA.build(name, eng, Path(tmp))
            fs = [f for f in d["faces"] if f["visit"] >= 0]
            crops = [eng.align(f["patch"], [SimpleNamespace(landmarks=f["lm"], box=[
                f["box"][0] - f["off"][0], f["box"][1] - f["off"][1], *f["box"][2:]])])[0] for f in fs]
            vecs = eng.embedder.embed(crops)
            apps = []
            for vi, v in enumerate(d["visits"]):
                ks = [k for k, f in enumerate(fs) if f["visit"] == vi]
                if ks:
                    apps.append({"who": v.person, "photo": str(Path(v.photo).relative_to(FACES)),
                                 "px": v.face_px, "blur": v.blur, "faces": len(ks), "vec": unit(vecs[ks])})
            data["clips"][name] = apps
    return data


# ---------------------------------------------------------------- cohorts and scores

def pools(data: dict) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """kind -> [(identity, photo, vec)] over the non-enrollment photos (5-person gallery and pairs)."""
    enr = set(ENROLL.values())
    deg = [(t["who"], t["photo"], t["vec"]) for t in data["tracks"]]
    cent: dict[str, list] = {}
    for w, p, v in deg:
        cent.setdefault(p, [w, []])[1].append(v)
    return {"deg": deg, "cent": [(w, p, unit(np.array(vs))) for p, (w, vs) in cent.items()],
            "sharp": [(w, p, v) for p, v in data["sharp"].items() if p not in enr for w in [data["who"][p]]]}


def clip_pools(data: dict, name: str) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """The cohort a camera showing clip `name` would have: the other clip's strangers as seen there, plus photos
    neither clip nor the enrollment uses; people of `name`'s cast (and the enrolled) never."""
    other = "check" if name == "tune" else "tune"
    cast = {a["who"] for a in data["clips"][name]} | KNOWN
    used = {a["photo"] for c in data["clips"].values() for a in c} | set(ENROLL.values())
    strangers = [a for a in data["clips"][other] if a["who"] not in cast]
    base = pools(data)
    out = {k: [m for m in base[k] if m[0] not in cast and m[1] not in used] for k in ("deg", "cent")}
    for k in ("deg", "cent"):
        out[k] += [(a["who"], a["photo"], a["vec"]) for a in strangers]
    out["sharp"] = [m for m in base["sharp"] if m[0] not in cast]   # incl. the other clip's strangers' photos
    return out


class Scorer:
    """All variants of probe-vs-template scores with a cohort that leaves out given identities."""

    def __init__(self, pool: list[tuple[str, str, np.ndarray]]):
        self.ids = np.array([m[0] for m in pool])
        self.mat = np.array([m[2] for m in pool])
        self._tcache: dict = {}
        self._masks: dict = {}

    def mask(self, drop: frozenset) -> np.ndarray:
        if drop not in self._masks:
            self._masks[drop] = ~np.isin(self.ids, list(drop | KNOWN))
        return self._masks[drop]

    @staticmethod
    def _stats(x: np.ndarray) -> dict[int, tuple[float, float]]:
        xs = np.sort(x)[::-1]
        return {k: (float(xs[:k].mean()), float(xs[:k].std()) + 1e-6) if k else
                (float(xs.mean()), float(xs.std()) + 1e-6) for k in KS}

    def scores(self, p: np.ndarray, t: np.ndarray, tkey: str, drop: frozenset) -> dict[str, float]:
        m = self.mask(drop)
        s = float(p @ t)
        P = self.mat[m] @ p
        if (tkey, drop) not in self._tcache:
            self._tcache[(tkey, drop)] = self._stats(self.mat[m] @ t)
        ps, ts = self._stats(P), self._tcache[(tkey, drop)]
        out = {"raw": s, "lead": s - float(P.max())}
        for k in KS:
            tag = f"top{k}" if k else "all"
            z, tn = (s - ps[k][0]) / ps[k][1], (s - ts[k][0]) / ts[k][1]
            out[f"z-{tag}"], out[f"t-{tag}"], out[f"as-{tag}"] = z, tn, (z + tn) / 2
        return out


def gallery_scores(sc: Scorer, vec: np.ndarray, who: str, gal: dict[str, tuple[str, str, np.ndarray]]
                   ) -> dict[str, dict[str, float]]:
    """template name -> variant -> score; gal: name -> (person, photo, vec). The cohort leaves out the probe's
    and the template's person."""
    return {g: sc.scores(vec, t, photo, frozenset({who, w})) for g, (w, photo, t) in gal.items()}


def records(data: dict, kind: str) -> dict[str, list[dict]]:
    """set -> probes, each {who, ok (names that are right), sc (template -> variant -> score), meta}."""
    gal = {g: (g, photo, data["sharp"][photo]) for g, photo in ENROLL.items()}
    sc = Scorer(pools(data)[kind])
    out: dict[str, list[dict]] = {"five": [], "pairs_same": [], "pairs_diff": []}
    for t in data["tracks"]:
        out["five"].append({"who": t["who"], "ok": {t["who"]} & KNOWN,
                            "sc": gallery_scores(sc, t["vec"], t["who"], gal),
                            "meta": [t["photo"], t["px"], t["blur"]]})
    by_photo: dict[str, list[dict]] = {}
    for t in data["tracks"]:
        by_photo.setdefault(t["photo"], []).append(t)
    for r in csv.DictReader(open(FACES / "deepface" / "pairs.csv")):
        same = r["Decision"] == "Yes"
        for a, b in ((r["file_x"], r["file_y"]), (r["file_y"], r["file_x"])):
            xa = "deepface/" + a
            g6 = dict(gal, X=(data["who"][xa], xa, data["sharp"][xa]))
            for t in by_photo.get("deepface/" + b, []):
                ok = ({"X"} if same else set()) | ({t["who"]} & KNOWN)
                out["pairs_same" if same else "pairs_diff"].append({
                    "who": t["who"], "ok": ok, "sc": gallery_scores(sc, t["vec"], t["who"], g6),
                    "meta": [xa, t["photo"], t["px"], t["blur"]]})
    for name in ("tune", "check"):
        csc = Scorer(clip_pools(data, name)[kind])
        out[name] = [{"who": a["who"], "ok": {a["who"]} & KNOWN, "sc": gallery_scores(csc, a["vec"], a["who"], gal),
                      "meta": [a["photo"], a["px"], a["blur"]]} for a in data["clips"][name]]
    out["_cohort_sizes"] = {"pairs_max": len(sc.ids), "tune": len(Scorer(clip_pools(data, "tune")[kind]).ids),
                            "check": len(Scorer(clip_pools(data, "check")[kind]).ids)}  # type: ignore[list-item]
    return out


def top(rec: dict, v: str) -> tuple[str, float, float]:
    """(top-1 name, its score, its lead over the runner-up) by variant v."""
    s = sorted(((x[v], g) for g, x in rec["sc"].items()), reverse=True)
    return s[0][1], s[0][0], s[0][0] - s[1][0]


def threshold_free(recs: dict, v: str) -> dict:
    """5-person gallery and clips as eval_faceapi reports them; pairs' AUC against template X."""
    out: dict = {}
    for name in ("five", "tune", "check"):
        rs = recs[name]
        kn = [(r["sc"][r["who"]][v], max(x[v] for g, x in r["sc"].items() if g != r["who"]), r) for r in rs
              if r["ok"]]
        st = [(top(r, v)[1], r["who"], top(r, v)[0]) for r in rs if not r["ok"]]
        smax = max(st)
        d = {"enrolled_above_every_stranger": f"{sum(o > smax[0] for o, _, _ in kn)}/{len(kn)}",
             "rank1": f"{sum(o > rv for o, rv, _ in kn)}/{len(kn)}",
             "margin": round(min(o for o, _, _ in kn) - smax[0], 3),
             "stranger_max": [round(smax[0], 3), smax[1], smax[2]],
             "p13_above_every_stranger": f"{sum(o > smax[0] for o, _, r in kn if r['who'] == 'p13')}"
                                         f"/{sum(r['who'] == 'p13' for _, _, r in kn)}",
             "p13": [[round(o, 3), round(o - rv, 3)] + r["meta"][1:] for o, rv, r in kn if r["who"] == "p13"]}
        if name == "five":
            d["auc_own_vs_stranger_best"] = metrics([o for o, _, _ in kn], [x[0] for x in st]).get("auc")
            d["p13"] = d["p13"] if len(d["p13"]) < 3 else None
        out[name] = d
    out["pairs_vs_X"] = metrics([r["sc"]["X"][v] for r in recs["pairs_same"]],
                                [r["sc"]["X"][v] for r in recs["pairs_diff"]])
    return out


def decide(rec: dict, v: str, thr: float, margin: float) -> str | None:
    name, s, lead = top(rec, v)
    return name if s >= thr and lead >= margin else None


def tally(rs: list[dict], v: str, thr: float, margin: float) -> dict:
    named = [decide(r, v, thr, margin) for r in rs]
    return {"probes": len(rs), "right": sum(n is not None and n in r["ok"] for n, r in zip(named, rs)),
            "wrong": sum(n is not None and n not in r["ok"] for n, r in zip(named, rs)),
            "positives": sum(bool(r["ok"]) for r in rs),
            "strangers": sum(not r["ok"] for r in rs),
            "strangers_named": sum(n is not None for n, r in zip(named, rs) if not r["ok"])}


def calibrate(recs: dict, v: str, spread: float, sets: tuple[str, ...]) -> list[dict]:
    """Per margin: the lowest thr that names no negative (top-1 not a right name) in `sets`, and its counts."""
    out = []
    for f in MARGIN_F:
        m = f * spread
        neg = [top(r, v) for s in sets for r in recs[s] if top(r, v)[0] not in r["ok"]]
        thr = max([sc for _, sc, ld in neg if ld >= m], default=-1e9) + 1e-9
        row = {"margin_f": f, "margin": round(m, 4), "thr": round(thr, 4)}
        for s in ("five", "pairs_same", "pairs_diff", "tune", "check"):
            row[s] = tally(recs[s], v, thr, m)
        row["calib_named"] = sum(row[s]["right"] for s in ("five", "pairs_same", "tune"))
        out.append(row)
    return out


VARIANTS = ("raw", "lead", *(f"{n}-{f'top{k}' if k else 'all'}" for n in ("z", "t", "as") for k in KS))
CALIB = {"A": ("five", "pairs_same", "pairs_diff", "tune"), "B": ("five", "tune")}


def analyse(data: dict) -> dict:
    res: dict = {}
    for kind in ("deg", "cent", "sharp"):
        recs = records(data, kind)
        res[kind] = {"cohort_sizes": recs.pop("_cohort_sizes")}
        for v in VARIANTS:
            if kind != "deg" and v == "raw":
                continue
            spread = float(np.std([r["sc"]["X"][v] for r in recs["pairs_diff"]]))
            d = {"threshold_free": threshold_free(recs, v), "spread": round(spread, 4)}
            for c, sets in CALIB.items():
                rows = calibrate(recs, v, spread, sets)
                d[f"calib_{c}"] = max(rows, key=lambda r: (r["calib_named"], -r["margin_f"]))
            p13 = next(r for r in recs["check"] if r["who"] == "p13")
            thr13 = p13["sc"]["p13"][v]  # read off check: what naming person_13 there would take
            d["at_check_p13_score (read off check)"] = {"thr": round(thr13, 4), **{
                s: tally(recs[s], v, thr13, 0.0) for s in ("five", "pairs_same", "pairs_diff", "tune", "check")}}
            if v == "raw":
                d["rule_0.40_0.10"] = {s: tally(recs[s], v, 0.40, 0.10)
                                       for s in ("five", "pairs_same", "pairs_diff", "tune", "check")}
            res[kind][v] = d
    return res


def table(res: dict) -> None:
    print("kind  variant    | 5p above/rank1/p13 | tune sep (margin) | check sep (margin) p13 (own, lead) | "
          "A: thr margin named(5p,pairs-same,tune) check right/wrong/strangers-named | B: pair FA, check | "
          "at check p13's score: pair FA, 5p strangers named, tune wrong")
    for kind in ("deg", "cent", "sharp"):
        for v, d in res[kind].items():
            if v == "cohort_sizes":
                print(kind, "cohort sizes", d)
                continue
            tf, a, b = d["threshold_free"], d["calib_A"], d["calib_B"]
            n = d["at_check_p13_score (read off check)"]
            ch = a["check"]
            print(f"{kind:5s} {v:10s} | {tf['five']['enrolled_above_every_stranger']} {tf['five']['rank1']} "
                  f"{tf['five']['p13_above_every_stranger']} | {tf['tune']['enrolled_above_every_stranger']} "
                  f"({tf['tune']['margin']}) | {tf['check']['enrolled_above_every_stranger']} "
                  f"({tf['check']['margin']}) "
                  f"{tf['check']['p13']} | {a['thr']} {a['margin']} {a['calib_named']} ({a['five']['right']},"
                  f"{a['pairs_same']['right']},{a['tune']['right']}) {ch['right']}/{ch['wrong']} "
                  f"{ch['strangers_named']} | {b['pairs_diff']['wrong']} "
                  f"{b['check']['right']}/{b['check']['wrong']} | {n['pairs_diff']['wrong']} "
                  f"{n['five']['strangers_named']} {n['tune']['wrong']}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--cache", default=None, help="pickle of the embeddings: read if there, else written")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "norm.json"))
    args = ap.parse_args()
    t0 = time.time()
    if args.cache and Path(args.cache).is_file():
        data = pickle.loads(Path(args.cache).read_bytes())
    else:
        eng = FaceEngine(load_settings([], env=dict(os.environ, FACETRAIL_WORKERS__CV_THREADS="1")))
        data = collect(eng, args.frames)
        if args.cache:
            Path(args.cache).write_bytes(pickle.dumps(data))
    res = analyse(data)
    best = {k: max(((d["calib_A"]["calib_named"], v) for v, d in res[k].items() if v != "cohort_sizes"))
            for k in ("deg", "cent", "sharp")}
    res["chosen_on_calibration_A"] = {"per_kind": best, "overall": max((n, k, v) for k, (n, v) in best.items())}
    res["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1, default=list) + "\n")
    table(res)
    print("chosen on tune + pairs + 5-person (calibration A):", res["chosen_on_calibration_A"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
