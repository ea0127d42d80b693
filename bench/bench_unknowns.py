"""Unknown-visitor clustering: calibration, quality and cost (README "Unknown visitors").

    .venv/bin/python bench/bench_unknowns.py [--big 100000] [--out bench/results/unknowns.json]

1. Calibration pairs from video, with no labels needed: faces of one track are one person (the two halves of
   a track's best faces, each averaged), and tracks seen at the same time on one camera are different people.
   Sources: the Hamilton clip (real footage) and clips composed from the shared photos (bench/clipgen.py).
2. Purity and completeness of the incremental clustering (pipeline/unknowns/cluster.py) with the configured
   thresholds: on the composed clips (tracks, ground truth from the composition) and on the shared photos
   (one "track" per photo, deepface identities + face_recognition people).
   purity = share of tracks whose cluster's majority person is their person;
   completeness = share of tracks in their person's largest cluster.
3. Cost per ended track: UnknownStore ingest (crops copied, cluster updated) on a private redis-server.
4. Clustering time at --big unknown tracks (synthetic: 20 % as many people, tracks at cosine ~0.8 of their
   person, strangers ~0 apart as in 128-D): incremental assignment time per track and the index rebuild from
   Redis that a process does when another changed the store.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from clipgen import Visit, render  # noqa: E402
from conftest import free_port  # noqa: E402  (tests/conftest.py, as bench/soak_live.py uses it)
from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import EmbeddingsMsg, FrameMsg, FrameRef  # noqa: E402
from pipeline.stages import MatcherStage  # noqa: E402
from pipeline.unknowns.cluster import ClusterIndex  # noqa: E402
from pipeline.stages import DetectStage  # noqa: E402
from pipeline.stages import EmbedStage  # noqa: E402

# (camera, track id) -> seqs with a face of the track (two tracks in one frame are two people)
FRAMES: dict[tuple[str, str], set[int]] = {}
FACES = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"


def tracks_of(video: Path, settings, eng, camera: str, fps: float | None = None):
    """Run detect -> embed -> MatcherStage (empty gallery) in-process; return the ended tracks' records."""
    det, emb = DetectStage(settings, eng), EmbedStage(settings, eng)
    stage = MatcherStage.from_settings(camera, lambda v: [[] for _ in range(len(v))], settings)
    cap = cv2.VideoCapture(str(video))
    vfps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    recs, seq = [], 0
    frames_of: dict[str, set[int]] = defaultdict(set)  # track id -> seqs it had a face in
    while True:
        ok, img = cap.read()
        if not ok:
            break
        ref = FrameRef(camera=camera, seq=seq, captured_at=1e9 + seq / vfps, pts=seq / vfps, width=img.shape[1],
                       height=img.shape[0])
        em = emb.process([det.process([(FrameMsg(frame=ref, jpeg=b""), img)])[0]])[0]
        recs += stage.update(em).tracks
        for tr in stage.tracker.tracks.values():
            if tr.last_t == ref.stream_time:
                frames_of[tr.track_id].add(seq)
        seq += 1
    recs += stage.update(EmbeddingsMsg(frame=FrameRef(camera=camera, seq=seq, captured_at=1e9 + seq / vfps,
                                                      width=1, height=1, eos=True))).tracks
    for r in recs:
        FRAMES[(camera, r.track_id)] = frames_of.get(r.track_id, set())
    return recs


def unit(v):
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def good(r, floor: float) -> bool:
    return max((f.q for f in r.faces), default=0.0) >= floor


def calibration_pairs(recs, floor: float = 0.0) -> tuple[list[float], list[float]]:
    """(same-track half-mean cosines, same-frame track-mean cosines) of tracks whose best face >= floor."""
    recs = [r for r in recs if good(r, floor)]
    pos, neg = [], []
    for r in recs:
        vs = [f.vector() for f in r.faces]
        if len(vs) >= 4:
            pos.append(float(unit(np.mean(vs[0::2], axis=0)) @ unit(np.mean(vs[1::2], axis=0))))
    for i, a in enumerate(recs):
        for b in recs[i + 1:]:
            if a.camera == b.camera and FRAMES[(a.camera, a.track_id)] & FRAMES[(b.camera, b.track_id)]:
                neg.append(float(a.mean_vector() @ b.mean_vector()))
    return pos, neg


def stats(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs)
    return {"n": len(xs), "min": round(float(a.min()), 4), "p5": round(float(np.percentile(a, 5)), 4),
            "median": round(float(np.median(a)), 4), "p95": round(float(np.percentile(a, 95)), 4),
            "max": round(float(a.max()), 4)}


def cluster_quality(means: list[np.ndarray], labels: list[str], link: float, join: float) -> dict:
    idx = ClusterIndex(link=link, join=join)
    got = []
    for i, m in enumerate(means):
        c, _ = idx.assign(m)
        c = c or f"c{i}"
        idx.add(str(i), m, c)
        got.append(c)
    members = defaultdict(list)
    for c, lab in zip(got, labels):
        members[c].append(lab)
    pure = sum(Counter(v).most_common(1)[0][1] for v in members.values())
    by_person = defaultdict(Counter)
    for c, lab in zip(got, labels):
        by_person[lab][c] += 1
    complete = sum(cnt.most_common(1)[0][1] for cnt in by_person.values())
    mixed = sum(1 for v in members.values() if len(set(v)) > 1)
    return {"items": len(labels), "people": len(by_person), "clusters": len(members),
            "purity": round(pure / len(labels), 4), "completeness": round(complete / len(labels), 4),
            "mixed_clusters": mixed}


def composed_clips(tmp: Path, models_dir: Path) -> list[tuple[Path, str, list[dict]]]:
    """Two cameras; every stranger visits each camera, each visit from another photo where there is one."""
    d, k = FACES / "deepface", FACES / "face_recognition" / "knn_examples" / "train"
    people = defaultdict(list)
    for line in (d / "identities.csv").read_text().splitlines()[1:]:
        f, who = line.split(",")
        people[who].append(str(d / f))
    for p in k.iterdir():
        people[p.name] += sorted(str(x) for x in p.iterdir())
    plan = {"camA": [], "camB": []}
    for j, (who, photos) in enumerate(sorted(people.items())):
        for c, cam in enumerate(plan):
            for v in range(2 if len(photos) > 2 else 1):
                plan[cam].append((who, photos[(2 * c + v + j) % len(photos)]))
    out = []
    for s, (cam, visits) in enumerate(plan.items()):
        rng = np.random.default_rng(s)
        order = rng.permutation(len(visits))
        vs = [Visit(person=visits[o][0], photo=visits[o][1], start_s=0.5 + 4.5 * i, dur_s=2.5,
                    face_px=int(rng.integers(70, 140)), x0=float(rng.uniform(0.15, 0.4)),
                    x1=float(rng.uniform(0.55, 0.85)), y=float(rng.uniform(0.35, 0.6)))
              for i, o in enumerate(order)]
        path = tmp / f"{cam}.mp4"
        out.append((path, cam, render(vs, path, models_dir=models_dir, fps=10.0, seed=10 + s)))
    return out


def person_of(rec, truth: list[dict]) -> str:
    at = {row["frame"]: row["person"] for row in truth}
    votes = Counter(at.get(int(f.id.rsplit(":", 2)[1]), "?") for f in rec.faces)
    return votes.most_common(1)[0][0]


def photo_means(eng) -> tuple[list[np.ndarray], list[str]]:
    d, k = FACES / "deepface", FACES / "face_recognition" / "knn_examples" / "train"
    items = [(str(d / f), who) for f, who in (ln.split(",") for ln in
                                              (d / "identities.csv").read_text().splitlines()[1:])]
    items += [(str(x), p.name) for p in sorted(k.iterdir()) for x in sorted(p.iterdir())]
    means, labels = [], []
    for path, who in items:
        img = cv2.imread(path)
        faces = eng.analyze([img])[0] if img is not None else []
        if faces:
            f = max(faces, key=lambda f: f.box[2] * f.box[3])
            means.append(unit(f.embedding))
            labels.append(who)
    return means, labels


def ingest_cost(settings_env: dict, n: int = 1000) -> dict:
    """ms per ended unknown track through UnknownStore (real Redis, private server)."""
    import redis

    from pipeline.backbone import redis_server_binary
    from pipeline.unknowns import keys as K
    from pipeline.unknowns.model import TrackFace, TrackFaces, pack_vector
    from pipeline.unknowns.store import UnknownStore

    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no",
                                 "--dir", d], stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(200):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            s = load_settings([], env={**settings_env, "FACETRAIL_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
            rng = np.random.default_rng(0)
            centers = [unit(rng.normal(size=128)) for _ in range(n // 5)]
            jpeg = cv2.imencode(".jpg", np.full((96, 96, 3), 128, np.uint8))[1].tobytes()
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                c = centers[i % len(centers)]
                faces = []
                for j in range(3):
                    v = unit(c * 0.8 + unit(rng.normal(size=128)) * 0.6)
                    fid = f"cam:{i}:{j}"
                    pipe.set(f"ft:snap:{fid}", jpeg)
                    faces.append(TrackFace(id=fid, k=0.5, q=0.8, e=pack_vector(v)))
                mean = unit(np.sum([f.vector() for f in faces], axis=0))
                rec = TrackFaces(track_id=f"cam:{i}:0", camera="cam", first_seen=i, last_seen=i + 2, frames=20,
                                 mean=pack_vector(mean), n=20, faces=faces, snapshot_id=faces[0].id)
                pipe.set(K.track_faces(s, rec.track_id), rec.encode())
                pipe.xadd(K.unk(s, "ingest"), {"t": rec.track_id})
            pipe.execute()
            store = UnknownStore(r, s)
            t0 = time.perf_counter()
            got = store.drain(max_n=n + 10)
            dt = time.perf_counter() - t0
            return {"tracks": got, "ms_per_track": round(1000 * dt / max(got, 1), 3),
                    "clusters": int(r.zcard(K.unk(s, "clusters")))}
        finally:
            proc.terminate()
            proc.wait(10)


def big_run(n: int, link: float, join: float) -> dict:
    rng = np.random.default_rng(7)
    people = n // 5
    centers = rng.normal(size=(people, 128)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    who = rng.integers(0, people, n)
    noise = rng.normal(size=(n, 128)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    means = centers[who] * 0.8 + noise * 0.6  # cosine ~0.8 to the person, ~0.64 between two of their tracks
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    idx = ClusterIndex(link=link, join=join)
    t0 = time.perf_counter()
    got = []
    last_ms = []
    for i in range(n):
        ts = time.perf_counter()
        c, _ = idx.assign(means[i])
        c = c or f"c{i}"
        idx.add(str(i), means[i], c)
        got.append(c)
        if i >= n - 1000:
            last_ms.append(1000 * (time.perf_counter() - ts))
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    rebuilt = ClusterIndex(link=link, join=join)
    rebuilt.add_many([str(i) for i in range(n)], means, got)
    rebuild = time.perf_counter() - t1
    members = defaultdict(list)
    for c, p in zip(got, who):
        members[c].append(int(p))
    pure = sum(Counter(v).most_common(1)[0][1] for v in members.values()) / n
    by_person = defaultdict(Counter)
    for c, p in zip(got, who):
        by_person[int(p)][c] += 1
    complete = sum(cnt.most_common(1)[0][1] for cnt in by_person.values()) / n
    return {"tracks": n, "people": people, "total_s": round(total, 1), "completeness": round(complete, 4),
            "ms_per_track_at_full_size": round(float(np.mean(last_ms)), 3),
            "index_rebuild_s": round(rebuild, 3), "clusters": len(members), "purity": round(pure, 4)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "unknowns.json"))
    a = ap.parse_args()
    env = {"FACETRAIL_UNKNOWNS__FACES_PER_TRACK": "16"}  # more faces per track for the half-track pairs
    s = load_settings([], env=env)
    eng = FaceEngine(s)
    u = s.unknowns
    out: dict = {"link_threshold": u.link_threshold, "cluster_threshold": u.cluster_threshold,
                 "min_quality": u.min_quality}

    ham = tracks_of(FACES / "face_recognition" / "short_hamilton_clip.mp4", s, eng, "hamilton")
    pos, neg = calibration_pairs(ham)
    qpos, qneg = calibration_pairs(ham, u.min_quality)
    with tempfile.TemporaryDirectory() as tmp:
        clips = composed_clips(Path(tmp), s.models.dir)
        recs, labels = [], []
        for path, cam, truth in clips:
            rs = tracks_of(path, s, eng, cam)
            recs += rs
            labels += [person_of(r, truth) for r in rs]
    p2, n2 = calibration_pairs(recs)
    cross_pos = [float(a.mean_vector() @ b.mean_vector()) for i, a in enumerate(recs) for j, b in enumerate(recs)
                 if j > i and labels[i] == labels[j]]
    cross_neg = [float(a.mean_vector() @ b.mean_vector()) for i, a in enumerate(recs) for j, b in enumerate(recs)
                 if j > i and labels[i] != labels[j]]
    out["calibration"] = {
        "hamilton_same_track_halves": stats(pos), "hamilton_same_frame_tracks": stats(neg),
        "hamilton_tracks": len(ham), "hamilton_tracks_above_min_quality": sum(good(r, u.min_quality) for r in ham),
        "hamilton_same_track_halves_above_min_quality": stats(qpos),
        "hamilton_same_frame_tracks_above_min_quality": stats(qneg),
        "composed_same_track_halves": stats(p2), "composed_same_frame_tracks": stats(n2),
        "composed_same_person_other_visit": stats(cross_pos), "composed_different_people": stats(cross_neg)}
    keep = [i for i, r in enumerate(recs) if good(r, u.min_quality)]
    out["composed_tracks_below_min_quality"] = len(recs) - len(keep)
    recs, labels = [recs[i] for i in keep], [labels[i] for i in keep]
    out["composed_clips"] = cluster_quality([r.mean_vector() for r in recs], labels, u.link_threshold,
                                            u.cluster_threshold)
    pm, pl = photo_means(eng)
    out["shared_photos"] = cluster_quality(pm, pl, u.link_threshold, u.cluster_threshold)
    out["sweep_join"] = {f"{t:.2f}": {"clips": cluster_quality([r.mean_vector() for r in recs], labels, t, t),
                                      "photos": cluster_quality(pm, pl, t, t)}
                         for t in (0.35, 0.40, 0.45, 0.50, 0.55, 0.60)}
    out["ingest"] = ingest_cost(env)
    out["big"] = big_run(a.big, u.link_threshold, u.cluster_threshold)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
