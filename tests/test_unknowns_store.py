"""UnknownStore on a real Redis with synthetic tracks: idempotent ingest, merge, ignore, retention, rebuild of
another process's index, and the negative filter. (The video end-to-end tests are in test_unknowns.py.)"""
from __future__ import annotations

import numpy as np
import redis

from pipeline.unknowns import keys as K
from pipeline.unknowns.model import TrackFace, TrackFaces, pack_vector
from pipeline.unknowns.negatives import NegativeFilter
from pipeline.unknowns.store import UnknownStore

JPEG = b"\xff\xd8fake-jpeg"


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def queue(r, settings, tid: str, vec: np.ndarray, t: float, camera: str = "cam", q: float = 0.8) -> None:
    faces = []
    for j in range(2):
        fid = f"{tid}:{j}"
        r.set(f"ft:snap:{fid}", JPEG)
        faces.append(TrackFace(id=fid, k=0.5 - j * 0.1, q=q, e=pack_vector(vec)))
    rec = TrackFaces(track_id=tid, camera=camera, first_seen=t, last_seen=t + 2, frames=10, mean=pack_vector(vec),
                     n=10, faces=faces, snapshot_id=faces[0].id)
    r.set(K.track_faces(settings, tid), rec.encode())
    r.xadd(K.unk(settings, "ingest"), {"t": tid})


def test_ingest_merge_ignore_and_retention(settings, redis_url):
    r = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    near_a = unit(a + 0.3 * unit(rng.normal(size=128)))
    queue(r, settings, "cam:1:0", a, 100.0)
    queue(r, settings, "cam:50:0", near_a, 200.0, camera="cam2")
    queue(r, settings, "cam:90:0", b, 300.0)
    queue(r, settings, "cam:90:0", b, 300.0)  # delivered twice: one membership
    queue(r, settings, "cam:95:0", unit(rng.normal(size=128)), 310.0, q=0.1)  # too blurred to cluster
    store = UnknownStore(r, settings)
    assert store.drain() == 5 and store.pending() == 0
    rows = store.clusters()
    assert [(c["tracks"], c["cameras"]) for c in rows] == [(1, ["cam"]), (2, ["cam", "cam2"])]
    assert r.get("ft:unk:face:cam:1:0:1") == JPEG and not r.exists("ft:snap:cam:1:0:1"), "crop moved to the store"
    assert r.exists("ft:snap:cam:1:0:0"), "the event's own snapshot stays"

    other = UnknownStore(r, settings)  # another process: its index is rebuilt from Redis before it assigns
    queue(r, settings, "cam:120:0", unit(b + 0.2 * unit(rng.normal(size=128))), 400.0)
    assert other.drain() == 1
    bc = next(c for c in other.clusters() if "cam:90:0" in {f["track_id"] for f in c["faces"]})
    assert bc["tracks"] == 2

    ac = next(c for c in rows if c["tracks"] == 2)
    merged = store.merge([ac["id"], bc["id"]])
    assert merged["tracks"] == 4 and len(merged["track_list"]) == 4
    assert [c["id"] for c in store.clusters()] == [ac["id"]]
    assert store.ignore(ac["id"]) == {"id": ac["id"], "ignored": True}
    assert store.clusters() == [] and len(store.clusters(include_ignored=True)) == 1

    assert store.sweep(now=250.0 + store.retention_s) == 2  # tracks last seen at 102 and 202 expire
    left = store.clusters(include_ignored=True)
    assert len(left) == 1 and left[0]["tracks"] == 2
    assert not r.exists("ft:unk:face:cam:1:0:1")
    assert store.sweep(now=1e6 + store.retention_s) == 2
    assert store.clusters(include_ignored=True) == [] and not r.exists(f"ft:unk:cl:{ac['id']}")


def test_negative_filter_drops_an_identity_closer_to_its_negatives(settings, redis_url):
    from index.replica import Match

    r = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(1)
    stranger = unit(rng.normal(size=128))
    f = NegativeFilter(r, settings, refresh_s=0.0)
    cands = [[Match("x", "X", 0.5), Match("y", "Y", 0.2)]]
    assert f.apply(stranger[None, :], cands) == cands
    r.hset(K.negatives(settings, "x"), "cam:1:0", np.stack([stranger]).astype("<f4").tobytes())
    r.sadd(K.negatives(settings, "index"), "x")
    r.incr(K.negatives_version(settings))
    assert f.apply(stranger[None, :], cands) == [[Match("y", "Y", 0.2)]], "X refused: the face is X's negative"
    other = unit(rng.normal(size=128))
    assert f.apply(other[None, :], cands) == cands, "a face far from the negatives keeps X"


def test_suggestion_is_the_closest_enrolled_person_within_suggest_min(settings, redis_url):
    from index.replica import Match

    r = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(2)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    queue(r, settings, "cam:1:0", a, 10.0)
    queue(r, settings, "cam:9:0", b, 20.0)
    store = UnknownStore(r, settings)
    store.drain()
    enrolled_a = unit(a + 2.2 * unit(rng.normal(size=128)))  # the same person enrolled, seen in bad light

    def search(vectors):
        return [[Match("ia", "Ann", float(v @ enrolled_a))] for v in vectors]

    sim = float(a @ enrolled_a)
    assert settings.unknowns.suggest_min <= sim < settings.thresholds.match
    rows = {c["faces"][0]["track_id"]: c for c in store.suggest(store.clusters(), search)}
    assert rows["cam:1:0"]["suggestion"] == "Ann" and abs(rows["cam:1:0"]["suggestion_score"] - sim) < 1e-3
    assert rows["cam:9:0"]["suggestion"] is None, "a stranger far from everyone enrolled gets no suggestion"
    store.ignore(rows["cam:1:0"]["id"])
    ign = store.suggest(store.clusters(include_ignored=True), search)
    assert all(c["suggestion"] is None for c in ign if c["ignored"]), "an ignored cluster is never suggested"
