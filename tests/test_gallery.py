"""Gallery: FAISS index, Redis truth + change log, replicas (sync, snapshot, catch-up), enrollment rules."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import redis

from index import hooks
from index.enroll import EnrollError, FaceChoice, templates_from_image
from index.faiss_index import GalleryIndex, IndexParams
from index.replica import GalleryReplica, Match, decide
from index.store import GalleryError, GalleryStore, NewTemplate
from pipeline.config import load_settings
from pipeline.engine.engine import FaceEngine
from pipeline.engine.imageio import load_image

from conftest import RedisProc


def unit(rng, n, d=128):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v, rng, noise=0.05):
    w = v + noise * rng.standard_normal(v.shape).astype(np.float32)
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def tpls(vecs):
    return [NewTemplate(embedding=v, sha256="ab" * 32, quality=0.9, thumbnail=b"\xff\xd8jpeg") for v in vecs]


# ---- GalleryIndex ----------------------------------------------------------------------------------------------
def test_index_best_template_per_identity_and_remove():
    rng = np.random.default_rng(1)
    a, b, c = unit(rng, 3), unit(rng, 2), unit(rng, 1)
    ix = GalleryIndex(IndexParams())
    ix.add([1, 2, 3], a, "A")
    ix.add([4, 5], b, "B")
    ix.add([6], c, "C")
    res = ix.search(np.vstack([near(a[1], rng), near(b[0], rng)]), k=3)
    assert [r[0][0] for r in res] == ["A", "B"]
    assert len({iid for iid, _ in res[0]}) == 3  # identities, not templates: A appears once
    assert res[0][0][1] == pytest.approx(float(near(a[1], np.random.default_rng(1)) @ a[1]), abs=0.2)
    assert res[0][0][1] > res[0][1][1]
    assert ix.remove_identity("A") == 3
    assert len(ix) == 3 and "A" not in ix.identities()
    assert all(iid != "A" for iid, _ in ix.search(a[1], k=5)[0])
    ix.add([1], a[:1], "A")  # ids are never reused by the store; a known-live id is skipped
    ix.add([4], a[:1], "Z")
    assert ix.template_ids("B") == [4, 5] and ix.template_ids("Z") == []


ANN_KINDS = pytest.mark.parametrize("ann", ["pq", "hnsw"])


def ann_params(ann: str, **kw) -> IndexParams:
    return IndexParams(ann_above=100, ann=ann, hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=64, **kw)


@ANN_KINDS
def test_index_switches_to_ann_and_filters_removed(ann):
    rng = np.random.default_rng(2)
    ix = GalleryIndex(ann_params(ann, background_build=False))
    vecs = unit(rng, 300)
    ix.add(np.arange(300), vecs, [f"p{i // 3}" for i in range(300)])
    assert ix.kind == "ann" and not ix.building
    q = near(vecs[30], rng)
    (top_id, top_score), = ix.search(q, k=1)[0]
    assert top_id == "p10"
    # returned scores are exact cosines (PQ re-scores its candidates from the stored vectors)
    assert top_score == pytest.approx(float(max(vecs[30:33] @ (q / np.linalg.norm(q)))), abs=1e-5)
    ix.remove([30, 31, 32])
    top = ix.search(vecs[30], k=5)[0]
    assert "p10" not in [i for i, _ in top] and len(top) == 5
    ix.remove(np.arange(33, 285))  # below ann_above / 2: back to exact search
    assert ix.kind == "flat" and len(ix) == 45
    assert ix.search(vecs[290], k=1)[0][0] == ("p96", pytest.approx(1.0, abs=1e-5))
    assert "p10" not in ix.identities() or ix.template_ids("p10") == []


@ANN_KINDS
def test_background_ann_build_serves_exact_meanwhile_and_keeps_changes(monkeypatch, ann):
    rng = np.random.default_rng(7)
    vecs = unit(rng, 260)
    ix = GalleryIndex(ann_params(ann))
    gate = threading.Event()
    new_ann = ix._new_ann
    monkeypatch.setattr(ix, "_new_ann", lambda sample: (gate.wait(30), new_ann(sample))[1])
    ix.add(np.arange(200), vecs[:200], [f"p{i // 2}" for i in range(200)])
    assert ix.building and ix.kind == "flat"  # the ANN index is being built; exact search serves meanwhile
    assert ix.search(vecs[10], k=1)[0][0][0] == "p5"
    ix.add(np.arange(200, 260), vecs[200:], [f"q{i}" for i in range(60)])  # changes during the build
    ix.remove_identity("p5")
    ix.remove([250])
    gate.set()
    assert ix.wait_ready(30) and ix.kind == "ann" and len(ix) == 257
    assert ix.search(vecs[230], k=1)[0][0][0] == "q30"
    assert "p5" not in [i for i, _ in ix.search(vecs[10], k=5)[0]]
    assert "q50" not in [i for i, _ in ix.search(vecs[250], k=5)[0]]
    assert all(i != "p5" for row in ix.search(vecs[:20], k=3) for i, _ in row)


def test_decide_threshold_and_margin():
    m = [Match("1", "ann", 0.70), Match("2", "bob", 0.60)]
    assert tuple(decide(m, 0.45, 0.05)) == ("ann", 0.70, "bob", 0.60)
    d = decide(m, 0.45, 0.15)  # too close to the runner-up: nobody
    assert d.name is None and d.identity_id is None and d.score == 0.70 and d.runner_up == "bob"
    assert decide(m, 0.75, 0.0).name is None
    assert tuple(decide(m[:1], 0.45, 0.05)) == ("ann", 0.70, None, 0.0)
    assert tuple(decide([], 0.45, 0.05)) == (None, 0.0, None, 0.0)


# ---- store + replicas ------------------------------------------------------------------------------------------
def test_replica_follows_enroll_rename_remove(settings):
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(3)
    ann, bob = unit(rng, 2), unit(rng, 1)
    rep = GalleryReplica(r, settings).start()
    assert rep.search(ann[0]) == [[]]
    iid, tids = store.enroll("ann", tpls(ann), metadata={"team": "x"})
    assert len(tids) == 2
    assert store.enroll("ann", tpls(ann)) == (iid, [])  # same photos again: nothing new, no log entry
    bid, _ = store.enroll("bob", tpls(bob))
    got = rep.search(near(ann[0], rng))[0]
    assert (got[0].identity_id, got[0].name) == (iid, "ann") and got[1].name == "bob"
    store.rename("ann", "anne")
    assert rep.search(ann[0])[0][0].name == "anne"
    with pytest.raises(GalleryError):
        store.rename("anne", "bob")
    with pytest.raises(GalleryError):
        store.remove("nobody")
    store.remove("anne")
    assert [m.name for m in rep.search(ann[0])[0]] == ["bob"]
    assert r.xlen(store.log_key) == 2  # bob's enroll, the removal (ann's enroll and rename were deleted)
    assert store.identity(bid).templates == 1 and [i.name for i in store.identities()] == ["bob"]


def test_remove_deletes_every_key_of_the_person_and_runs_hooks(settings):
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(4)
    iid, tids = store.enroll("ann", tpls(unit(rng, 3)))
    store.enroll("bob", tpls(unit(rng, 1)))
    assert store.thumbnail(tids[0]) == b"\xff\xd8jpeg"
    before = set(r.keys("*"))
    calls = []

    def broken(*a):
        raise OSError("events store down")

    hooks.on_remove.extend([broken, lambda *a: calls.append(a)])
    try:
        with pytest.raises(hooks.HookError, match="ann was removed from the gallery, but 1 removal hook"):
            store.remove("ann")
    finally:
        del hooks.on_remove[-2:]
    assert calls == [(r, settings, iid, "ann")]  # the other hooks still ran
    after = set(r.keys("*"))
    gone = {k.decode() for k in before - after}
    assert gone == {store.k("ident", iid), store.k("ident", iid, "tpls"), store.k("ident", iid, "src"),
                    *(store.k("tpl", t) for t in tids)}
    assert not any(iid.encode() in k for k in after)
    assert not r.hexists(store.k("names"), "ann")
    # the only trace left is the removal entry in the change log (which carries no vectors)
    last = r.xrevrange(store.log_key, count=1)[0][1]
    assert last[b"op"] == b"remove" and b"emb" not in last


def test_snapshot_then_catch_up_from_log(settings, monkeypatch):
    monkeypatch.setattr("index.changelog.SNAP_CHUNK", 3)  # several chunks even for a tiny gallery
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(5)
    people = {n: unit(rng, 2) for n in ["a", "b", "c"]}
    store.enroll("a", tpls(people["a"]))
    behind = GalleryReplica(r, settings).start()  # the entries after this one get trimmed before it reads them
    store.enroll("b", tpls(people["b"]))
    store.rename("b", "bee")
    assert GalleryReplica(r, settings).snapshot()
    assert r.xlen(store.log_key) == 1  # trimmed up to (not including) the snapshot's entry
    store.enroll("c", tpls(people["c"]))
    store.remove("a")
    fresh = GalleryReplica(r, settings).start()
    assert fresh.applied == 2  # only the entries after the snapshot were replayed
    assert behind.sync() == 2 and behind.applied == 3  # reloaded the snapshot, then the 2 entries after it
    for rep in (fresh, behind):
        assert sorted(rep.names.values()) == ["bee", "c"] and len(rep) == 4
        assert rep.search(people["b"][1])[0][0].name == "bee"
        assert rep.search(people["c"][0])[0][0].name == "c"
    # a stale snapshot never replaces a newer one
    assert not store.put_snapshot("1-0", np.empty(0), np.empty(0), np.empty((0, 128)), [])


def test_background_replica_and_store_survive_redis_restart(tmp_path, models_dir):
    rp = RedisProc(tmp_path, appendonly=True).start()
    try:
        s = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "d"), "FACETRAIL_REDIS_URL": rp.url,
                                   "FACETRAIL_MODELS_DIR": str(models_dir)})
        r = redis.Redis.from_url(rp.url)
        store = GalleryStore(r, s)
        rng = np.random.default_rng(6)
        v = unit(rng, 2)
        rep = GalleryReplica(r, s).start_background(block_ms=100)
        iid, _ = store.enroll("ann", tpls(v[:1]), metadata={"k": "v"})
        rp.stop()
        rp.start()  # same port and dir: the AOF is replayed
        assert store.identity(iid).metadata == {"k": "v"} and store.template_ids(iid)
        assert GalleryReplica(r, s).start().search(v[0])[0][0].name == "ann"
        store.enroll("bob", tpls(v[1:]))  # the background thread reconnects and picks this up
        from index.replica import wait_for
        assert wait_for(lambda: "bob" in rep.names.values(), 10)
        rep.stop()
    finally:
        rp.stop()


# ---- enrollment from photos ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_settings(models_dir):
    return load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir)})


def test_enroll_rules_faces_and_quality(engine_settings, faces_dir):
    eng = FaceEngine(engine_settings)
    knn = faces_dir / "face_recognition" / "knn_examples"
    two = load_image(knn / "test" / "obama_and_biden.jpg")
    with pytest.raises(EnrollError, match=r"faces found .*--face N"):
        templates_from_image(eng, two, engine_settings, name="two")
    largest = templates_from_image(eng, two, engine_settings, choice=FaceChoice(largest=True))
    second = templates_from_image(eng, two, engine_settings, choice=FaceChoice(index=1))
    assert len(largest) == 1 and float(largest[0].embedding @ second[0].embedding) < 0.5
    with pytest.raises(EnrollError, match="out of range"):
        templates_from_image(eng, two, engine_settings, choice=FaceChoice(index=9))
    with pytest.raises(EnrollError, match="no face found"):
        templates_from_image(eng, np.full((200, 200, 3), 127, np.uint8), engine_settings)
    one = load_image(knn / "train" / "obama" / "obama.jpg")
    flipped = templates_from_image(eng, one, engine_settings, flip=True)
    assert len(flipped) == 2 and float(flipped[0].embedding @ flipped[1].embedding) > 0.5
    assert flipped[0].thumbnail[:2] == b"\xff\xd8" and 0 < flipped[0].quality <= 1
    strict = engine_settings.model_copy(deep=True)
    strict.thresholds.min_enroll_quality = 0.7
    blurred = cv2.GaussianBlur(one, (0, 0), 12)
    with pytest.raises(EnrollError, match=r"quality 0\.\d\d is below min_enroll_quality 0\.70 .*sharpness"):
        templates_from_image(eng, blurred, strict)
    assert templates_from_image(eng, one, strict)


def test_concurrent_syncs_of_one_replica_converge(settings):
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(8)
    rep = GalleryReplica(r, settings).start()
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            rep.search(unit(rng, 1))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            store.enroll(f"p{i}", tpls(unit(rng, 1)))
            if i % 3 == 0:
                store.remove(f"p{i}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    rep.sync()
    assert sorted(rep.names.values()) == sorted(i.name for i in store.identities())
    assert sorted(rep.index.identities()) == sorted(rep.names)


# ---- forgetting a person ---------------------------------------------------------------------------------------
def redis_dump(r, skip_entries=()) -> dict[bytes, bytes]:
    """Every key of the database with everything it holds (type-aware), as one blob per key; stream entries
    with an id in skip_entries are left out."""
    out = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k)
        if t == b"string":
            parts = [r.get(k)]
        elif t == b"hash":
            parts = [x for kv in r.hgetall(k).items() for x in kv]
        elif t == b"stream":
            parts = [x for eid, f in r.xrange(k) if eid not in skip_entries
                     for x in (eid, *(y for kv in f.items() for y in kv))]
        elif t == b"set":
            parts = list(r.smembers(k))
        elif t == b"zset":
            parts = [m for m, _ in r.zrange(k, 0, -1, withscores=True)]
        elif t == b"list":
            parts = r.lrange(k, 0, -1)
        else:
            raise AssertionError(f"unexpected key type {t!r} of {k!r}")
        out[k] = b"\x00".join([k, *(p if isinstance(p, bytes) else str(p).encode() for p in parts)])
    return out


def test_remove_forgets_the_person_in_every_key_and_replicas_converge(settings, monkeypatch):
    monkeypatch.setattr("index.changelog.SNAP_CHUNK", 2)  # the person's templates and the others' in separate chunks
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(9)
    a1, a2, b, c = unit(rng, 2), unit(rng, 1), unit(rng, 3), unit(rng, 1)
    thumb = b"\xff\xd8annabel-thumbnail"
    aid, _ = store.enroll("Annabel Quist", [NewTemplate(embedding=v, thumbnail=thumb) for v in a1])
    bid, _ = store.enroll("Bob Brown", tpls(b))
    store.rename("Annabel Quist", "Annabel Q. Renamed")
    assert GalleryReplica(r, settings).snapshot()  # the snapshot holds her (chunk 0) and Bob (chunks 1-2)
    behind = GalleryReplica(r, settings).start()  # will read nothing until after the removal
    store.enroll("Annabel Q. Renamed", tpls(a2))  # in the log after the snapshot
    store.rename("Annabel Q. Renamed", "Annabel Third-Name")
    live = GalleryReplica(r, settings).start()
    assert live.search(a2[0])[0][0].name == "Annabel Third-Name" and live.search(a1[0])[0][0].identity_id == aid
    secrets = [v.astype(np.float32).tobytes() for v in (*a1, *a2)] + \
              [t.embedding.tobytes() for t in store.templates(aid)] + [b"Annabel", thumb, aid.encode()]
    store.remove("Annabel Third-Name")
    store.enroll("Cy", tpls(c))  # a change after the removal, replayed from the log

    # the one trace allowed: the removal entry, which must name the identity so that a replica holding her
    # drops her (it goes with the next snapshot's trim); it carries nothing else
    (rid, removal), = [(i, f) for i, f in r.xrange(store.log_key) if f[b"op"] == b"remove"]
    assert removal == {b"op": b"remove", b"identity": aid.encode()}
    assert r.xlen(store.log_key) == 2  # the removal and Cy's enroll
    dump = redis_dump(r, skip_entries={rid})
    assert store.k("snap").encode() in dump
    for k, blob in dump.items():
        for s in secrets:
            assert s not in blob, f"{k!r} still holds {s[:24]!r}"

    fresh = GalleryReplica(r, settings).start()
    for rep in (fresh, live, behind):
        rep.sync()
        assert sorted(rep.names.values()) == ["Bob Brown", "Cy"] and len(rep) == 4
        assert rep.search(b[1])[0][0].identity_id == bid
        assert all(m.identity_id != aid for q in (*a1, *a2) for m in rep.search(q)[0])


def test_snapshot_of_a_state_before_a_removal_is_refused(settings):
    r = redis.Redis.from_url(settings.redis.url)
    store = GalleryStore(r, settings)
    rng = np.random.default_rng(10)
    a = unit(rng, 1)
    store.enroll("ann", tpls(a))
    store.enroll("bob", tpls(unit(rng, 1)))
    stale = GalleryReplica(r, settings).start()  # holds ann
    store.remove("ann")
    ids, owners, vecs = stale.index.dump()
    idents = sorted(stale.names.items())
    pos = {iid: i for i, (iid, _) in enumerate(idents)}
    assert not store.put_snapshot(stale.last_id, ids, np.array([pos[o] for o in owners]), vecs,
                                  [list(x) for x in idents])
    assert r.hgetall(store.k("snap")) == {} and not list(r.scan_iter(match=store.k("snap", "*")))
    assert GalleryReplica(r, settings).snapshot()  # a replica that saw the removal may write one
    assert [n for _, n in store.get_snapshot()[4]] == ["bob"]
