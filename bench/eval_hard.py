"""Per-stage evaluation on hard footage (issue 15): where does each miss come from?

Builds the hard development set with bench/clipgen.py (720p, faces 30-60 px, blur sigma 0.6-1.6, gain 0.45-1.35,
a pillar, up to 3 people at once, one person who stays 25 s), enrolls five people from photos that are never in
the clips, and runs the stages in-process (DetectStage -> EmbedStage -> MatcherStage, as bench/eval_clip.py does).
It reports, per set:

- detection recall by face size (visible faces only: a face behind the pillar is not a detector miss);
- the cosine of each embedded face to the right person's template, by size, blur and gain;
- track fragmentation: started tracks per appearance (visit), and named tracks per appearance;
- the decision per appearance: named right, unknown, or wrong; strangers: unknown or wrong;
- the CPU cost per frame of each stage (wall time, single process; the VM's 2 cores are shared, so noisy).

Two sets with different seeds and different photos: `tune` (for choosing mechanisms and thresholds) and `check`
(judged once). Clips are rendered to a temporary folder and never kept.

    .venv/bin/python bench/eval_hard.py [--set tune|check|both] [--label NAME] [FACETRAIL_SECTION__FIELD=V ...]

Results are merged into bench/results/hard.json under the label (default: "current").
"""
from __future__ import annotations

import argparse
import json
import os
import random
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

from clipgen import Bar, Visit, render  # noqa: E402
from index.replica import Match  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import EmbeddingsMsg, FrameMsg, FrameRef  # noqa: E402
from pipeline.stages import MatcherStage  # noqa: E402
from pipeline.stages import DetectStage  # noqa: E402
from pipeline.stages import EmbedStage  # noqa: E402

FACES = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
DF, FR = "deepface/", "face_recognition/"
KT = FR + "knn_examples/train/"
KS = FR + "knn_examples/test/"

# Enrolled people: the enrollment photo is never in a clip; tuning and check clips use different photos.
ENROLL = {"obama": FR + "obama.jpg", "alex": FR + "alex-lacamoire.png", "kit": KT + "kit_harington/john2.jpeg",
          "p1": DF + "img1.jpg", "p13": DF + "img13.jpg"}
SETS = {
    "tune": {"seed": 11,
             "known": [("obama", FR + "obama2.jpg"), ("alex", KT + "alex_lacamoire/img1.jpg"),
                       ("kit", KT + "kit_harington/john1.jpeg"), ("p1", DF + "img4.jpg"), ("p13", DF + "img14.jpg")],
             "stay": ("p1", DF + "img2.jpg"),
             "strangers": [("biden", KT + "biden/biden2.jpg"), ("p3", DF + "img3.jpg"), ("p8", DF + "img8.jpg"),
                           ("p16", DF + "img16.jpg"), ("lin", FR + "lin-manuel-miranda.png")]},
    "check": {"seed": 23,
              "known": [("obama", KS + "obama1.jpg"), ("alex", KS + "alex_lacamoire1.jpg"),
                        ("kit", KS + "johnsnow_test1.jpg"), ("p1", DF + "img6.jpg"), ("p13", DF + "img15.jpg")],
              "stay": ("p1", DF + "img5.jpg"),
              "strangers": [("rose", KT + "rose_leslie/img1.jpg"), ("p18", DF + "img18.jpg"),
                            ("p20", DF + "img20.jpg"), ("p22", DF + "img22.jpg"), ("p24", DF + "img24.jpg")]},
}
LANES = (0.52, 0.68)        # crossing lanes (face centre height); the stay keeps to 0.3
SIZE, FPS = (1280, 720), 8.0
SIZE_BINS = ((30, 40), (40, 50), (50, 61))
BLUR_BINS = ((0.6, 1.0), (1.0, 1.3), (1.3, 1.61))
GAIN_BINS = ((0.45, 0.75), (0.75, 1.05), (1.05, 1.36))


def plan(name: str) -> tuple[list[Visit], list[Bar]]:
    """The set's visits: one stay of 25 s, then every other person crossing on one of two lanes (so up to
    three faces at once), in a shuffled order, random direction, size, blur and gain."""
    spec = SETS[name]
    rnd = random.Random(spec["seed"])

    def look():
        return dict(face_px=rnd.randint(30, 60), blur=round(rnd.uniform(0.6, 1.6), 2),
                    gain=round(rnd.uniform(0.45, 1.35), 2))

    p, photo = spec["stay"]
    visits = [Visit(person=p, photo=str(FACES / photo), start_s=1.0, dur_s=25.0, x0=0.12, x1=0.3, y=0.3, **look())]
    people = spec["known"] + spec["strangers"]
    rnd.shuffle(people)
    free = {lane: 0.5 + 1.5 * i for i, lane in enumerate(LANES)}
    for p, photo in people:
        lane = min(free, key=lambda k: free[k])
        dur = round(rnd.uniform(5.0, 7.0), 1)
        x0, x1 = (0.08, 0.92) if rnd.random() < 0.5 else (0.92, 0.08)
        visits.append(Visit(person=p, photo=str(FACES / photo), start_s=free[lane], dur_s=dur, x0=x0, x1=x1,
                            y=lane, **look()))
        free[lane] += dur + round(rnd.uniform(2.2, 3.0), 1)  # > max_age_s: the next one is a new appearance
    return visits, [Bar(x=0.55, width=0.08)]


def _bin(v: float, bins) -> str | None:
    for lo, hi in bins:
        if lo <= v < hi:
            return f"{lo:g}-{hi:g}"
    return None


def _hit(box, gt) -> bool:
    """A detection is the ground-truth face when their centres are within half a face and sizes agree."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    gx, gy = gt[0] + gt[2] / 2, gt[1] + gt[3] / 2
    return (cx - gx) ** 2 + (cy - gy) ** 2 <= (0.5 * gt[3]) ** 2 and 0.5 <= box[3] / gt[3] <= 2.0


def open_clip(path: Path) -> cv2.VideoCapture:
    """The clip, every frame of it: a live source opened earlier in this process (pipeline/sources.py) may have
    left `fflags nobuffer` in OPENCV_FFMPEG_CAPTURE_OPTIONS, which makes FFmpeg drop most frames of a file."""
    old = os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    try:
        return cv2.VideoCapture(str(path))
    finally:
        if old is not None:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old


def enroll(eng: FaceEngine, lowres: tuple[int, ...] = (), photos: dict[str, str] = ENROLL) -> dict[str, np.ndarray]:
    """Person -> (K, dim) templates: the photo's face, plus (gallery.lowres_templates) copies of its aligned crop
    brought down to those sizes and blurred, as index/enroll.py makes them."""
    from pipeline.engine.degrade import degraded_crops

    out = {}
    for p, photo in photos.items():
        img = cv2.imread(str(FACES / photo))
        f = eng.detect([img])[0][0]
        crop = eng.align(img, [f])[0]
        out[p] = eng.embedder.embed([crop] + degraded_crops(crop, lowres))
    return out


def evaluate(name: str, settings, eng: FaceEngine, gallery: dict[str, np.ndarray], workdir: Path,
             scene: tuple[list[Visit], list[Bar], int] | None = None, fps: float | None = None) -> dict:
    """Render set `name` (or `scene`: visits, bars, seed) and run the stages on it; the per-stage numbers."""
    visits, bars = plan(name) if scene is None else scene[:2]
    seed = SETS[name]["seed"] if scene is None else scene[2]
    fps = fps or FPS
    clip = workdir / f"hard-{name}.mp4"
    truth = render(visits, clip, models_dir=settings.models.dir, size=SIZE, fps=fps, seed=seed, bars=bars)
    by_frame = defaultdict(list)
    for row in truth:
        by_frame[row["frame"]].append(row)
    names = list(gallery)
    G = np.concatenate([gallery[n] for n in names])
    owner = np.concatenate([[i] * len(gallery[n]) for i, n in enumerate(names)])

    def best_of(vectors):
        """(N, people): the best template's cosine per person, as the gallery's search gives it."""
        sims = np.asarray(vectors, np.float32).reshape(-1, G.shape[1]) @ G.T
        return np.stack([sims[:, owner == i].max(axis=1) for i in range(len(names))], axis=1)

    def search(vectors):
        return [sorted((Match(n, n, float(s)) for n, s in zip(names, row)), key=lambda m: -m.score)
                for row in best_of(vectors)]

    det, emb = DetectStage(settings, eng), EmbedStage(settings, eng)
    match = MatcherStage.from_settings("hard", search, settings)
    assigned = record_tracks(match)  # (seq, face index) -> track id
    ended: dict[str, dict] = {}  # track id -> its final mean's top candidate (what the decision rule saw)
    orig_end = match._end

    def end(tr, seq, out):
        orig_end(tr, seq, out)
        m = match.voter.mean_embedding(tr.data)
        if m is not None:
            sims = sorted(((float(x), n) for x, n in zip(best_of(m)[0], names)), reverse=True)
            ended[tr.track_id] = {"top": sims[0][1], "score": round(sims[0][0], 3), "runner_up": sims[1][1],
                                  "margin": round(sims[0][0] - sims[1][0], 3), "faces": tr.data.en}

    match._end = end
    cap = open_clip(clip)
    events, seq, cost = [], 0, defaultdict(float)
    det_rows = []   # per visible ground-truth face: size, hit
    cos_rows = []   # per embedded face of an enrolled person: size, blur, gain, cosine, rank-1 right
    face_visit: dict[tuple[int, int], int] = {}
    false_dets = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        ref = FrameRef(camera="hard", seq=seq, captured_at=seq / fps, pts=seq / fps, width=img.shape[1],
                       height=img.shape[0])
        t0 = time.perf_counter()
        fm = det.process([(FrameMsg(frame=ref, jpeg=b""), img)])[0]
        t1 = time.perf_counter()
        em = emb.process([fm])[0]
        t2 = time.perf_counter()
        events += match.update(em).events
        t3 = time.perf_counter()
        cost["detect"] += t1 - t0
        cost["embed"] += t2 - t1
        cost["match"] += t3 - t2
        cost["faces_embedded"] += sum(1 for f in em.faces if f.embedding)
        used = set()
        for gt in by_frame.get(seq, []):
            v = visits[gt["visit"]]
            hit = next((f for f in em.faces if f.index not in used and _hit(f.box, gt["box"])), None)
            if hit is not None:
                used.add(hit.index)
                face_visit[(seq, hit.index)] = gt["visit"]
            if gt["visible"] >= 0.7:
                det_rows.append((v.face_px, hit is not None))
            if hit is not None and hit.embedding and v.person in gallery:
                sims = dict(zip(names, (float(x) for x in best_of(hit.vector())[0])))
                cos_rows.append((v.face_px, v.blur, v.gain, sims[v.person], max(sims, key=sims.get) == v.person))
        false_dets += sum(1 for f in em.faces if f.index not in used)
        seq += 1
    events += match.update(EmbeddingsMsg(frame=FrameRef(camera="hard", seq=seq, captured_at=seq / fps, pts=None,
                                                        width=1, height=1, eos=True))).events
    frames = seq

    # tracks -> the visit most of their faces belong to
    track_faces: dict[str, list[int]] = defaultdict(list)
    for key, tid in assigned.items():
        track_faces[tid].append(face_visit.get(key, -1))
    started = {e.track_id for e in events if e.type == "track.started"}
    named: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.type == "identity.matched":
            named[e.track_id].add(e.identity)
    per_visit: dict[int, list[str]] = defaultdict(list)
    ghost_tracks = 0
    for tid in started:
        vs = track_faces.get(tid, [])
        top = max(set(vs), key=vs.count) if vs else -1
        if top < 0:
            ghost_tracks += 1
        else:
            per_visit[top].append(tid)
    decisions, visit_rows = defaultdict(int), []
    for vi, v in enumerate(visits):
        known = v.person in gallery
        tids = per_visit.get(vi, [])
        names_given = set().union(*(named[t] for t in tids)) if tids else set()
        wrong = names_given - {v.person}
        named_tracks = sum(1 for t in tids if named[t])
        if wrong:
            verdict = "wrong"
        elif known and v.person in names_given:
            verdict = "named"
        else:
            verdict = "unknown"
        decisions[("known_" if known else "stranger_") + verdict] += 1
        visit_rows.append({"visit": vi, "person": v.person, "known": known, "face_px": v.face_px, "blur": v.blur,
                           "gain": v.gain, "tracks": len(tids), "named_tracks": named_tracks,
                           "names": sorted(names_given), "verdict": verdict,
                           "means": [ended[t] for t in sorted(tids) if t in ended]})

    def recall(rows, bins):
        out = {}
        for lo, hi in bins:
            sel = [h for s, h in rows if lo <= s < hi]
            out[f"{lo:g}-{hi:g}"] = round(sum(sel) / len(sel), 3) if sel else None
        return out

    def cos_by(idx, bins):
        out = {}
        for lo, hi in bins:
            sel = [r for r in cos_rows if lo <= r[idx] < hi]
            out[f"{lo:g}-{hi:g}"] = ({"n": len(sel), "mean": round(float(np.mean([r[3] for r in sel])), 3),
                                      "ge_match": round(float(np.mean([r[3] >= settings.thresholds.match
                                                                       for r in sel])), 3),
                                      "rank1": round(float(np.mean([r[4] for r in sel])), 3)} if sel else None)
        return out

    known_visits = [r for r in visit_rows if r["known"]]
    return {
        "frames": frames, "visits": len(visits),
        "detection_recall": {"all": round(sum(h for _, h in det_rows) / max(1, len(det_rows)), 3),
                             "by_size": recall(det_rows, SIZE_BINS)},
        "false_detections": false_dets,
        "cosine_right": {"all": round(float(np.mean([r[3] for r in cos_rows])), 3) if cos_rows else None,
                         "by_size": cos_by(0, SIZE_BINS), "by_blur": cos_by(1, BLUR_BINS),
                         "by_gain": cos_by(2, GAIN_BINS)},
        "tracks_per_appearance": round(sum(r["tracks"] for r in visit_rows) / len(visit_rows), 3),
        "named_tracks_per_named_known": round(
            sum(r["named_tracks"] for r in known_visits if r["verdict"] == "named")
            / max(1, sum(1 for r in known_visits if r["verdict"] == "named")), 3),
        "ghost_tracks": ghost_tracks,
        "decisions": dict(sorted(decisions.items())),
        "cost_ms_per_frame": {k: round(1000 * cost[k] / frames, 1) for k in ("detect", "embed", "match")},
        "faces_embedded_per_frame": round(cost["faces_embedded"] / frames, 2),
        "per_visit": visit_rows,
    }


def cost(settings, workdir: Path, reps: int = 15) -> dict:
    """CPU ms per 720p frame with three 30-60 px faces: the detector per small-face mode and the embedding of
    the frame's faces plain and flip-averaged. Modes alternate within each repetition, so load from other
    processes on the shared VM hits them alike; medians. One thread each (cv_threads=1)."""
    from pipeline.engine.embed import FlipAveraged

    fr = FACES / "face_recognition"
    visits = [Visit(person=p, photo=str(fr / ph), start_s=0, dur_s=2, face_px=px, x0=x, x1=x, y=y, blur=1.0)
              for p, ph, px, x, y in (("obama", "obama2.jpg", 36, 0.2, 0.5),
                                      ("alex", "alex-lacamoire.png", 48, 0.5, 0.7),
                                      ("biden", "biden.jpg", 60, 0.8, 0.3))]
    clip = workdir / "cost.mp4"
    render(visits, clip, models_dir=settings.models.dir, size=SIZE, fps=FPS, duration_s=0.5, seed=1)
    ok, img = open_clip(clip).read()
    one = settings.model_copy(update={"workers": settings.workers.model_copy(update={"cv_threads": 1})})
    engines = {m: FaceEngine(one.model_copy(update={"models": one.models.model_copy(update={"small_face_pass": m})}))
               for m in ("off", "regions", "full")}
    faces = engines["off"].detect([img])[0]
    crops = engines["off"].align(img, faces)
    flip = FlipAveraged(engines["off"].embedder)
    jobs = {f"detect_{m}": (lambda e=e: e.detect([img])) for m, e in engines.items()}
    jobs["embed_plain"] = lambda: engines["off"].embedder.embed(crops)
    jobs["embed_flip"] = lambda: flip.embed(crops)
    times = defaultdict(list)
    for _ in range(reps):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1000 * (time.perf_counter() - t0))
    return {"faces": len(faces), **{k: round(float(np.median(v)), 1) for k, v in times.items()}}


def summary_line(name: str, r: dict) -> str:
    d = r["decisions"]
    kn = sum(v for k, v in d.items() if k.startswith("known_"))
    st = sum(v for k, v in d.items() if k.startswith("stranger_"))
    c = r["cost_ms_per_frame"]
    return (f"{name:5s} det {r['detection_recall']['all']:.2f} {r['detection_recall']['by_size']} | "
            f"cos {r['cosine_right']['all']} | tracks/app {r['tracks_per_appearance']} | "
            f"named {d.get('known_named', 0)}/{kn} wrong {d.get('known_wrong', 0) + d.get('stranger_wrong', 0)} "
            f"strangers unknown {d.get('stranger_unknown', 0)}/{st} | ms/frame det {c['detect']} emb {c['embed']} "
            f"match {c['match']}")


def settings_with(overrides: list[str]):
    """The settings with FACETRAIL_* KEY=VALUE overrides from the command line on top of the environment."""
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in overrides)
    return load_settings([], env=env)


def record_tracks(stage) -> dict[tuple[int, int], str]:
    """Record which track the stage's tracker gives each (seq, face index); the dict fills as frames are fed."""
    assigned: dict[tuple[int, int], str] = {}
    orig = stage.tracker.update

    def update(seq, t, dets):
        res = orig(seq, t, dets)
        for tr, d in res[0]:
            assigned[(seq, d.index)] = tr.track_id
        return res

    stage.tracker.update = update
    return assigned


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=("tune", "check", "both"), default="tune")
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "hard.json"))
    ap.add_argument("--quiet", action="store_true", help="no per-visit lines")
    ap.add_argument("--fps", type=float, default=FPS, help="clip frame rate (default %(default)s)")
    ap.add_argument("--cost", action="store_true", help="only the CPU cost per frame of each mechanism")
    ap.add_argument("overrides", nargs="*", help="FACETRAIL_* env overrides, KEY=VALUE")
    args = ap.parse_args()
    s = settings_with(args.overrides)
    eng = FaceEngine(s)
    gallery = enroll(eng, tuple(s.gallery.lowres_templates))
    results = {}
    with tempfile.TemporaryDirectory(prefix="eval_hard_") as tmp:
        if args.cost:
            results["cost"] = cost(s, Path(tmp))
            print(results["cost"])
        for name in [] if args.cost else (("tune", "check") if args.set == "both" else (args.set,)):
            r = evaluate(name, s, eng, gallery, Path(tmp), fps=args.fps)
            results[name] = r
            print(summary_line(name, r), flush=True)
            if not args.quiet:
                for v in r["per_visit"]:
                    print(f"    {v['person']:6s} {'known' if v['known'] else 'stranger':8s} {v['face_px']:3d}px "
                          f"blur {v['blur']:.2f} gain {v['gain']:.2f}: tracks {v['tracks']} named {v['names']} "
                          f"-> {v['verdict']:7s} means "
                          f"{[(m['top'], m['score'], m['margin'], m['faces']) for m in v['means']]}")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    entry = data.setdefault(args.label, {})
    entry["overrides"] = args.overrides
    entry.update(results)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
