"""Small-face embedding variants on the hard sets (issue 15): does anything raise the cosine to the right person
more than it raises strangers'?

Renders bench/eval_hard.py's tune and check clips, detects every frame once (the configured detector and small-face
pass) and keeps a patch around each face, then re-embeds the faces per variant and replays them through the
matcher (MatcherStage, the gallery of eval_hard with `gallery.lowres_templates`):

- `plain`     - the pipeline's alignment (5-point similarity, INTER_LINEAR);
- `cubic`, `lanczos` - the same warp with a sharper interpolation;
- `jit5`, `jitS` - alignment jitter: 5 crops (+-1.5 px shifts, or shifts and 0.94 / 1.06 scales of the similarity
  transform), their embeddings averaged (5x the embedding cost);
- `us0.5`, `us1.0` - faces under 60 px: the patch upscaled 2x (INTER_CUBIC) and unsharp-masked (amount 0.5 / 1.0,
  sigma 1 px of the original) before alignment;
- `--landmarks`: per enrolled person's appearance, the cosine with the detector's landmarks, with "oracle" landmarks
  (the sharp photo's landmarks carried by the clip's known paste transform) and with RetinaFace's landmarks on
  the face's patch upscaled 2x; and the cosine of the clip's faces to their own sharp source photo.

    .venv/bin/python bench/eval_hard_align.py [--variants plain,cubic,...] [--landmarks] [FACETRAIL_...=V ...]

Per variant and set: decisions, the lowest track-mean cosine of a named enrolled person, the mean per-face cosine
to the right person, person_13's and obama's track means, and the highest stranger track mean and lead. Results
go to bench/results/hard_align.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import eval_hard as EH  # noqa: E402
from clipgen import _detector, head_crop, render  # noqa: E402
from index.replica import Match  # noqa: E402
from pipeline.engine.align import TEMPLATE_112, align_face, similarity_transform  # noqa: E402
from pipeline.engine.embed import l2_normalize  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import EmbeddedFace, EmbeddingsMsg, FrameRef  # noqa: E402
from pipeline.stages import MatcherStage  # noqa: E402


def build(name: str, eng: FaceEngine, tmp: Path) -> dict:
    """Render set `name`, detect every frame; per face: box, landmarks, score, quality, visit and a 3x patch."""
    visits, bars = EH.plan(name)
    clip = tmp / f"{name}.mp4"
    truth = render(visits, clip, models_dir=eng.settings.models.dir, size=EH.SIZE, fps=EH.FPS,
                   seed=EH.SETS[name]["seed"], bars=bars)
    by_frame = defaultdict(list)
    for r in truth:
        by_frame[r["frame"]].append(r)
    cap, seq, faces = EH.open_clip(clip), 0, []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        found = eng.detect([img])[0]
        used: dict[int, int] = {}
        for gt in by_frame.get(seq, []):
            hit = next((i for i, f in enumerate(found) if i not in used and EH._hit(f.box, gt["box"])), None)
            if hit is not None:
                used[hit] = gt["visit"]
        for i, f in enumerate(found):
            x, y, w, h = f.box
            side = int(3 * max(w, h))
            ox, oy = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
            patch = cv2.warpAffine(img, np.float32([[1, 0, -ox], [0, 1, -oy]]), (side, side))
            faces.append({"seq": seq, "index": i, "box": [float(v) for v in f.box], "score": float(f.score),
                          "lm": np.asarray(f.landmarks, np.float64).reshape(5, 2) - (ox, oy),
                          "quality": float(f.quality), "visit": used.get(i, -1), "patch": patch, "off": (ox, oy)})
        seq += 1
    return {"visits": visits, "frames": seq, "faces": faces}


def _warp(f: dict, m: np.ndarray, flag: int = cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.warpAffine(f["patch"], m, (112, 112), flags=flag)


def plain(f: dict) -> list[np.ndarray]:
    return [align_face(f["patch"], f["lm"], 112)]


def interp(flag: int):
    return lambda f: [_warp(f, similarity_transform(f["lm"], TEMPLATE_112), flag)]


def jitter(moves):
    def fn(f: dict) -> list[np.ndarray]:
        a = np.vstack([similarity_transform(f["lm"], TEMPLATE_112), [0, 0, 1]])
        return [_warp(f, (np.array([[s, 0, 56 * (1 - s) + dx], [0, s, 56 * (1 - s) + dy], [0, 0, 1]]) @ a)[:2])
                for dx, dy, s in moves]
    return fn


def upsharp(amount: float, sigma: float = 1.0, up: int = 2):
    def fn(f: dict) -> list[np.ndarray]:
        if f["box"][3] >= 60:
            return plain(f)
        u = cv2.resize(f["patch"], None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        u = cv2.addWeighted(u, 1 + amount, cv2.GaussianBlur(u, (0, 0), sigma * up), -amount, 0)
        return [align_face(u, f["lm"] * up + (up - 1) / 2.0, 112)]
    return fn


VARIANTS = {"plain": plain, "cubic": interp(cv2.INTER_CUBIC), "lanczos": interp(cv2.INTER_LANCZOS4),
            "jit5": jitter([(0, 0, 1), (1.5, 0, 1), (-1.5, 0, 1), (0, 1.5, 1), (0, -1.5, 1)]),
            "jitS": jitter([(0, 0, 1), (0, 0, 0.94), (0, 0, 1.06), (1.5, 1.5, 1), (-1.5, -1.5, 1)]),
            "us0.5": upsharp(0.5), "us1.0": upsharp(1.0)}


def embed(eng: FaceEngine, faces: list[dict], crops_of) -> tuple[np.ndarray, float]:
    """Per face the (averaged) embedding of its crops; and ms per face for making the crops."""
    crops, owner = [], []
    t0 = time.perf_counter()
    for i, f in enumerate(faces):
        cs = crops_of(f)
        crops += cs
        owner += [i] * len(cs)
    ms = 1000 * (time.perf_counter() - t0) / max(1, len(faces))
    v = eng.embedder.embed(crops)
    out = np.zeros((len(faces), v.shape[1]), np.float32)
    np.add.at(out, np.asarray(owner), v)
    return l2_normalize(out), ms


def replay(data: dict, vecs: np.ndarray, gallery: dict[str, np.ndarray], settings, top_k: int = 0) -> dict:
    """The cached faces with these embeddings through MatcherStage; verdicts and track means per visit (the
    reported mean over the top_k best-quality faces of the track when top_k > 0, else over all, as the matcher)."""
    names = list(gallery)

    def best_of(v):
        return np.array([[float((gallery[n] @ x).max()) for n in names] for x in np.asarray(v).reshape(-1, 128)])

    def search(v):
        return [sorted((Match(n, n, float(s)) for n, s in zip(names, row)), key=lambda m: -m.score)
                for row in best_of(v)]

    st = MatcherStage.from_settings("hard", search, settings)
    assigned = EH.record_tracks(st)
    by_seq = defaultdict(list)
    for k, f in enumerate(data["faces"]):
        by_seq[f["seq"]].append(k)
    events = []
    for seq in range(data["frames"] + 1):
        ref = FrameRef(camera="hard", seq=seq, captured_at=seq / EH.FPS, pts=seq / EH.FPS, width=EH.SIZE[0],
                       height=EH.SIZE[1], eos=seq == data["frames"])
        fl = [EmbeddedFace(index=f["index"], box=f["box"], score=f["score"], quality=f["quality"],
                           landmarks=[float(x) for x in (f["lm"] + f["off"]).reshape(-1)],
                           embedding=vecs[k].astype("<f4").tobytes())
              for k in by_seq.get(seq, []) for f in [data["faces"][k]]]
        events += st.update(EmbeddingsMsg(frame=ref, faces=fl)).events
    index = {(f["seq"], f["index"]): k for k, f in enumerate(data["faces"])}
    track_faces = defaultdict(list)
    for key, tid in assigned.items():
        track_faces[tid].append(index[key])
    named = defaultdict(set)
    for e in events:
        if e.type == "identity.matched":
            named[e.track_id].add(e.identity)
    rows = []
    for vi, v in enumerate(data["visits"]):
        tids = [t for t in {e.track_id for e in events if e.type == "track.started"}
                if max(set(vs := [data["faces"][k]["visit"] for k in track_faces[t]]), key=vs.count) == vi]
        given = set().union(*(named[t] for t in tids)) if tids else set()
        ks = [k for t in tids for k in track_faces[t]]
        w = np.array([max(0.05, min(1.0, data["faces"][k]["quality"] or data["faces"][k]["score"])) for k in ks])
        if top_k and len(ks) > top_k:
            w[np.argsort(-w)[top_k:]] = 0.0
        m = (vecs[ks] * w[:, None]).sum(0) if ks else np.zeros(128)
        sc = best_of(m / max(np.linalg.norm(m), 1e-9))[0]
        o = np.argsort(-sc)
        known = v.person in gallery
        rows.append({"person": v.person, "known": known, "tracks": len(tids),
                     "verdict": "wrong" if given - {v.person} else "named" if v.person in given else "unknown",
                     "mean_top": names[o[0]], "mean": round(float(sc[o[0]]), 3),
                     "lead": round(float(sc[o[0]] - sc[o[1]]), 3),
                     "face_cos_right": round(float(best_of(vecs[ks])[:, names.index(v.person)].mean()), 3)
                     if known and ks else None})
    return {"rows": rows}


def summary(rows: list[dict]) -> dict:
    kn = [r for r in rows if r["known"]]
    st = [r for r in rows if not r["known"]]
    return {"named": f"{sum(r['verdict'] == 'named' for r in kn)}/{len(kn)}",
            "wrong": sum(r["verdict"] == "wrong" for r in rows),
            "strangers_unknown": f"{sum(r['verdict'] == 'unknown' for r in st)}/{len(st)}",
            "tracks_per_appearance": round(float(np.mean([r["tracks"] for r in rows])), 2),
            "face_cos_right": round(float(np.mean([r["face_cos_right"] for r in kn])), 3),
            "p13_obama_means": [(r["person"], r["mean"], r["lead"]) for r in kn if r["person"] in ("p13", "obama")],
            "stranger_max_mean": max(r["mean"] for r in st), "stranger_max_lead": max(r["lead"] for r in st)}


def landmarks(eng: FaceEngine, data: dict, gallery: dict[str, np.ndarray]) -> list[dict]:
    """Per enrolled appearance: mean cosine to the right person with detected, oracle and RetinaFace landmarks."""
    from pipeline.engine.detect import DETECTORS
    from pipeline.models import model_path

    rf = DETECTORS.create("retinaface", model_path("retinaface", eng.settings.models.dir), score_threshold=0.5,
                          nms_threshold=0.3, max_side=640, min_face_px=0, threads=1)
    yn = _detector(eng.settings.models.dir)
    w, h = EH.SIZE
    out = []
    for vi, v in enumerate(data["visits"]):
        if v.person not in gallery:
            continue
        crop, face_h = head_crop(v.photo, yn)
        yn.setInputSize((crop.shape[1], crop.shape[0]))
        found = yn.detect(crop)[1]
        lm_crop = found[np.argmax(found[:, 2] * found[:, 3])][4:14].reshape(5, 2)
        s = v.face_px / face_h
        ch, cw = max(8, int(crop.shape[0] * s)), max(8, int(crop.shape[1] * s))
        faces = [f for f in data["faces"] if f["visit"] == vi]
        det_c, ora_c, rf_c, err = [], [], [], []
        for f in faces:
            fr = (f["seq"] / EH.FPS - v.start_s) / v.dur_s
            cx, cy = int((v.x0 + (v.x1 - v.x0) * fr) * w), int(v.y * h)
            lm = (lm_crop * (cw / crop.shape[1], ch / crop.shape[0]) + (cx - cw // 2, cy - ch // 2)
                  - np.asarray(f["off"]))
            err.append(float(np.abs(lm - f["lm"]).mean()) / v.face_px)
            det_c += plain(f)
            ora_c.append(align_face(f["patch"], lm, 112))
            up = cv2.resize(f["patch"], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
            r = rf.detect([up])[0]
            if r:
                rf_c.append(align_face(up, np.asarray(max(r, key=lambda r: r.box[2] * r.box[3]).landmarks)
                                       .reshape(5, 2), 112))
        g = gallery[v.person]
        img = cv2.imread(v.photo)
        own = eng.embedder.embed(eng.align(img, eng.detect([img])[0][:1]))  # the clip's own sharp source photo

        def cos(cs):
            return round(float((eng.embedder.embed(cs) @ g.T).max(1).mean()), 3) if cs else None
        out.append({"person": v.person, "face_px": v.face_px, "blur": v.blur, "faces": len(faces),
                    "landmark_error_of_face": round(float(np.mean(err)), 3), "cos_detected": cos(det_c),
                    "cos_oracle": cos(ora_c), "cos_retinaface_2x": cos(rf_c),
                    "cos_to_own_source_photo": round(float((eng.embedder.embed(det_c) @ own.T).mean()), 3)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--top-k", type=int, default=0, help="report track means over the k best-quality faces only "
                    "(template aggregation; the decisions are still the matcher's)")
    ap.add_argument("--landmarks", action="store_true", help="also the landmark check (oracle, RetinaFace)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "hard_align.json"))
    ap.add_argument("overrides", nargs="*", help="FACETRAIL_* env overrides, KEY=VALUE")
    args = ap.parse_args()
    s = EH.settings_with(args.overrides)
    eng = FaceEngine(s)
    gallery = EH.enroll(eng, tuple(s.gallery.lowres_templates))
    result: dict = {"overrides": args.overrides, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="eval_hard_align_") as tmp:
        sets = {n: build(n, eng, Path(tmp)) for n in ("tune", "check")}
    for v in args.variants.split(","):
        for name, data in sets.items():
            vecs, ms = embed(eng, data["faces"], VARIANTS[v])
            r = replay(data, vecs, gallery, s, args.top_k)
            r["summary"] = dict(summary(r["rows"]), crop_ms_per_face=round(ms, 2))
            result["variants"].setdefault(v, {})[name] = r
            print(f"{v:8s} {name:5s} {r['summary']}", flush=True)
    if args.landmarks:
        result["landmarks"] = {n: landmarks(eng, d, gallery) for n, d in sets.items()}
        for n, rows in result["landmarks"].items():
            for row in rows:
                print(n, row)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
