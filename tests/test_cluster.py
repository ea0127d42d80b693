"""facetrail on a real local Redis Cluster (3 primaries + 3 replicas, tests/redis_cluster.py): frames -> faces
-> embeddings with the real models and redelivery (exactly once), the gallery and its replica with WAIT, and a
primary SIGKILLed mid-stream under two matcher processes: its replica is promoted and no event is lost or
written twice."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from redis.cluster import RedisCluster

from index.replica import GalleryReplica
from index.store import GalleryStore, NewTemplate
from pipeline.backbone import connect, key, wait_for
from pipeline.events import EventStore
from pipeline.keys import hash_tag
from pipeline.messages import EmbeddingsMsg, FacesMsg
from pipeline.streams import StreamNames
from workers.detector import DetectorWorker
from workers.embedder import EmbedderWorker
from workers.matcher import lease_key, progress_key

from test_matcher import CAM, N, key_of, make_world, noted, reference_events, shuffled, spawn, unit, wait_until
from test_streaming import clip_frames, push, read_all, with_workers


def test_keys_are_tagged_and_cameras_spread_over_primaries(cluster_settings, redis_cluster):
    r = connect(cluster_settings)
    assert isinstance(r, RedisCluster)
    names = StreamNames.of(cluster_settings)
    assert names.shards == 8
    for cam in ("door", "hall"):
        same = {r.keyslot(k) for k in (names.frames(cam), names.embeddings(cam), names.gone(cam), names.seq(cam),
                                       lease_key(cluster_settings, cam), progress_key(cluster_settings, cam),
                                       names.checkpoint(cam), names.outbox(cam))}
        assert len(same) == 1, "a camera's stream and matcher state share one slot"
        out = names.faces_for(cam)
        assert r.keyslot(names.done("detect", f"{cam}:1", near=out)) == r.keyslot(out)
    control = {r.keyslot(k) for k in (names.events, key(cluster_settings, "event", "x"),
                                      key(cluster_settings, "evidx", "all"), key(cluster_settings, "gallery"))}
    assert len(control) == 1
    assert r.keyslot(names.events) != r.keyslot(names.embeddings("door"))
    owners = {redis_cluster.port_of_slot(r.keyslot(names.frames(f"cam{i}"))) for i in range(40)}
    assert len(owners) == 3, "40 cameras' streams land on every primary"
    assert len({hash_tag(s) for s in names.all_faces}) == 8


def test_streaming_redelivery_exactly_once_on_cluster(cluster_settings, faces_dir):
    """Detector A stalls, B reclaims and finishes its frames, then A finishes the same frames: the two-step emit
    (marker + outputs in the output's slot, then the ack in the input's) writes each output once. Two cameras,
    so the workers read (and emit into) several slots."""
    s = with_workers(cluster_settings, reclaim_idle_ms=100, batch_max=64, batch_wait_ms=0, reembed_s=0)
    r = connect(s)
    names = StreamNames.of(s)
    frames = clip_frames(faces_dir, 3)
    seqs = {}
    for cam in ("door", "yard"):
        seqs[cam] = push(r, s, cam, frames)
    a = DetectorWorker(s, "det-a", r=r)
    b = DetectorWorker(s, "det-b", r=r, stage=a.stage)
    batch_a = a.reader.next_batch()
    assert len(batch_a) == 8
    time.sleep(0.25)
    batch_b = b.reader.next_batch()
    assert sorted(e[1] for e in batch_b) == sorted(e[1] for e in batch_a)
    b.handle(batch_b)
    a.handle(batch_a)
    faces = [m for sh in names.all_faces for m in read_all(r, sh, FacesMsg)]
    for cam, (q, eos) in seqs.items():
        assert sorted(m.frame.seq for m in faces if m.frame.camera == cam) == q + [eos]
        assert r.xlen(names.frames(cam)) == 0 and r.xpending(names.frames(cam), "detectors")["pending"] == 0
    assert any(m.faces for m in faces)

    ea = EmbedderWorker(s, "emb-a", r=r)
    eb = EmbedderWorker(s, "emb-b", r=r, stage=ea.stage)
    batch_a = ea.reader.next_batch()
    time.sleep(0.25)
    batch_b = eb.reader.next_batch()
    assert len(batch_b) == len(batch_a) == 8
    eb.handle(batch_b)
    ea.handle(batch_a)
    for cam, (q, eos) in seqs.items():
        embs = read_all(r, names.embeddings(cam), EmbeddingsMsg)
        assert sorted(m.frame.seq for m in embs) == q + [eos]
    for sh in names.all_faces:
        assert r.xlen(sh) == 0 or r.xpending(sh, "embedders")["pending"] == 0


def test_gallery_replicates_on_cluster_with_wait(cluster_settings, redis_cluster):
    r = connect(cluster_settings)
    gal = GalleryStore(r, cluster_settings)
    rng = np.random.default_rng(5)
    v = unit(rng.normal(size=128))
    iid, tids = gal.enroll("ann", [NewTemplate(embedding=v, sha256="a", quality=0.9, source="a")])
    assert tids
    assert wait_for(r, cluster_settings, key(cluster_settings, "gallery")) == 1, "one replica has the enrollment"
    rep = GalleryReplica(connect(cluster_settings), cluster_settings).start()
    hits = rep.search(v[None, :], 1)
    assert hits[0][0].identity_id == iid and hits[0][0].name == "ann"
    gal.rename("ann", "anna")
    assert wait_until(lambda: rep.sync() >= 0 and rep.names.get(iid) == "anna", 10), "the replica follows the log"


@pytest.fixture
def cluster_world(cluster_settings):
    return make_world(connect(cluster_settings), cluster_settings)


@pytest.mark.parametrize("victim_of", ["events", "camera"])
def test_primary_killed_midstream_replica_promoted_no_event_lost_or_duplicated(
        cluster_settings, cluster_world, redis_cluster, tmp_path, victim_of):
    """Two matcher processes on the cluster; mid-stream a primary is SIGKILLed: the one holding the events (the
    outbox relay's target), or the one holding the camera (its embeddings, lease, checkpoint, outbox). Its replica
    is promoted (cluster-node-timeout 1 s), the matchers reconnect, and the events are exactly those of an
    uninterrupted run: every id once in the store and in the stream, no outbox entry left."""
    s = cluster_settings
    r = connect(s)
    s.tracking.lease_ttl_s = 1.0
    expected = reference_events(r, s, cluster_world)
    assert ("identity.matched", "ann") in {(e.type, e.identity) for e in expected}
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp_path / "data"), FACETRAIL_MODELS_DIR=str(s.models.dir),
               FACETRAIL_REDIS_URL=s.redis.url, FACETRAIL_REDIS__KEY_PREFIX=s.redis.key_prefix,
               FACETRAIL_TRACKING__LEASE_TTL_S="1.0", FACETRAIL_TRACKING__REORDER_TIMEOUT_MS="600000",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.pop("FACETRAIL_CONFIG", None)
    os.makedirs(env["FACETRAIL_DATA_DIR"], exist_ok=True)
    names = StreamNames.of(s)
    stream = noted(r, s)
    order = shuffled(cluster_world, np.random.default_rng(3))
    half = 130
    first, rest = order[:half], order[half:]
    for m in first:
        r.xadd(stream, {"m": m.encode()})
    victim_key = names.events if victim_of == "events" else stream
    victim = redis_cluster.port_of_slot(r.keyslot(victim_key))
    procs = {n: spawn(env, n) for n in ("mA", "mB")}
    try:
        prog = lambda: int(r.get(progress_key(s, CAM)) or -1)  # noqa: E731
        assert wait_until(lambda: prog() >= 40, 90), "no matcher made progress"
        redis_cluster.kill(victim)  # mid-stream: frames in flight, commits going on
        for m in rest:
            r.xadd(stream, {"m": m.encode()})  # retried by the client until the replica is promoted
        assert wait_until(lambda: prog() == N, 120), f"stuck at {prog()}"
        assert redis_cluster.port_of_slot(r.keyslot(victim_key)) != victim, "the replica was promoted"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
        redis_cluster.restart(victim)  # rejoins as a replica: the session's cluster stays whole
        redis_cluster.wait_ok(60)
    store = EventStore(r, s)
    got = store.query(camera=CAM, limit=10_000).events
    assert sorted(map(key_of, got)) == sorted(map(key_of, expected))
    streamed = [json.loads(f[b"m"])["id"] for _, f in r.xrange(names.events)]
    assert sorted(streamed) == sorted(e.id for e in expected), "each event in the stream once, none lost"
    assert r.xpending(stream, "matchers")["pending"] == 0
    assert r.xlen(names.outbox(CAM)) == 0, "every committed op was relayed"


def test_migration_from_single_node_keeps_gallery_events_cameras_and_checkpoints(settings, cluster_settings):
    """pipeline.migrate_cluster copies a single-node deployment's durable state under the cluster's names: the
    gallery, events (store, indexes, stream with its sink group), the camera registry and a matcher checkpoint are
    all readable through the cluster code paths afterwards; frames in flight and leases are not copied."""
    from pipeline.cameras import CameraRegistry
    from pipeline.config import CameraConfig
    from pipeline.migrate_cluster import migrate
    from pipeline.streams import ensure_group
    from test_events_store import ev
    from workers.matcher import checkpoint_key

    prefix = cluster_settings.redis.key_prefix
    one = settings.model_copy(update={"redis": settings.redis.model_copy(update={"key_prefix": prefix})})
    r1 = connect(one)
    v = unit(np.random.default_rng(9).normal(size=128))
    iid, _ = GalleryStore(r1, one).enroll("ann", [NewTemplate(embedding=v, sha256="a", quality=0.9, source="a")])
    EventStore(r1, one).commit([ev("identity.matched", "door", "door:1:0", "ann"),
                                ev("track.ended", "door", "door:1:0")])
    ensure_group(r1, StreamNames.of(one).events, "sink-mqtt")
    CameraRegistry(r1, one).add(CameraConfig(name="door", url="test://x", external=True))
    r1.set(checkpoint_key(one, "door"), '{"v":1}')
    r1.xadd(StreamNames.of(one).frames("door"), {"m": b"in flight"})
    r1.set(lease_key(one, "door"), "1:gone:x")

    rc = connect(cluster_settings)
    res = migrate(r1, rc, prefix)
    assert res["copied"] > 5 and res["skipped"] >= 2
    assert migrate(r1, rc, prefix)["already_there"] == res["copied"], "a re-run copies nothing twice"
    rep = GalleryReplica(rc, cluster_settings).start()
    assert rep.search(v[None, :], 1)[0][0].identity_id == iid
    got = EventStore(rc, cluster_settings).query(camera="door").events
    assert [e.type for e in got] == ["identity.matched", "track.ended"]
    names = StreamNames.of(cluster_settings)
    assert rc.xlen(names.events) == 2
    assert [g["name"] for g in rc.xinfo_groups(names.events)] == [b"sink-mqtt"]
    assert CameraRegistry(rc, cluster_settings).names() == ["door"]
    assert rc.get(checkpoint_key(cluster_settings, "door")) == b'{"v":1}'
    assert not rc.exists(names.frames("door")) and not rc.exists(lease_key(cluster_settings, "door"))


def test_frames_to_events_with_kill9_of_workers_on_cluster(cluster_settings, faces_dir, tmp_path):
    """Real `facetrail worker` processes on the cluster (2 detectors, 2 embedders, 1 matcher); one detector and
    one embedder are SIGKILLed while they hold entries. Every frame reaches embeddings:{cam} exactly once, the
    matcher finishes the stream, and each event is in the store and in the events stream exactly once."""
    from pipeline.cameras import CameraRegistry
    from pipeline.config import CameraConfig
    from test_streaming import _pending_of, _wait, _worker

    s = with_workers(cluster_settings, reclaim_idle_ms=800)
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp_path / "data"), FACETRAIL_MODELS_DIR=str(s.models.dir),
               FACETRAIL_REDIS_URL=s.redis.url, FACETRAIL_REDIS__KEY_PREFIX=s.redis.key_prefix,
               FACETRAIL_WORKERS__RECLAIM_IDLE_MS="800", FACETRAIL_WORKERS__BATCH_MAX="3",
               FACETRAIL_WORKERS__BATCH_WAIT_MS="5")
    env.pop("FACETRAIL_CONFIG", None)
    r = connect(s)
    names = StreamNames.of(s)
    cam = "lobby"
    CameraRegistry(r, s).add(CameraConfig(name=cam, url="test://pushed", external=True))
    roles = {"det-1": "detector", "det-2": "detector", "emb-1": "embedder", "emb-2": "embedder",
             "match-1": "matcher"}
    procs = {c: _worker(role, env, c) for c, role in roles.items()}
    faces = names.faces_for(cam)
    try:
        _wait(lambda: all(r.exists(key(s, "hb", role, c)) for c, role in roles.items()), 90, "worker heartbeats",
              procs.values())
        seqs, eos = push(r, s, cam, clip_frames(faces_dir, 24))
        _wait(lambda: _pending_of(r, names.frames(cam), "detectors", "det-1") > 0, 60, "det-1 holding frames",
              procs.values())
        procs["det-1"].send_signal(signal.SIGKILL)
        _wait(lambda: _pending_of(r, faces, "embedders", "emb-1") > 0, 60, "emb-1 holding faces", procs.values())
        procs["emb-1"].send_signal(signal.SIGKILL)
        _wait(lambda: int(r.get(progress_key(s, cam)) or -1) == eos, 120, "the matcher at the EOS",
              [procs["det-2"], procs["emb-2"], procs["match-1"]])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except Exception:
                p.kill()
    got = [m.frame.seq for m in read_all(r, names.embeddings(cam), EmbeddingsMsg)]
    assert sorted(got) == seqs + [eos], "every frame embedded exactly once (no gap, no duplicate)"
    assert _pending_of(r, names.frames(cam), "detectors", "det-1") == 0
    assert _pending_of(r, faces, "embedders", "emb-1") == 0
    store = EventStore(r, s)
    events = store.query(camera=cam, limit=10_000).events
    assert events and any(e.type == "track.started" for e in events)
    streamed = [json.loads(f[b"m"])["id"] for _, f in r.xrange(names.events)]
    assert sorted(streamed) == sorted(e.id for e in events), "each event once in the stream, none lost"
    assert r.xlen(names.outbox(cam)) == 0


def test_pipeline_rides_out_a_primary_failover(cluster_settings, redis_cluster):
    """A non-transactional pipeline sent right after a primary is SIGKILLed waits for its replica's promotion
    (FailoverCluster.pipeline, pipeline/clusterpipe.py) instead of failing, and a command of it that reached a
    live primary is not sent twice."""
    s = cluster_settings
    r = connect(s)
    names = StreamNames.of(s)
    k1 = names.frames("door")
    victim = redis_cluster.port_of_slot(r.keyslot(k1))
    k2 = next(names.seq(f"cam{i}") for i in range(100)
              if redis_cluster.port_of_slot(r.keyslot(names.seq(f"cam{i}"))) != victim)
    r.set(k1, "before")
    try:
        redis_cluster.kill(victim)
        pipe = r.pipeline(transaction=False)
        pipe.set(k1, "after")
        pipe.incr(k2)
        pipe.get(k1)
        assert pipe.execute() == [True, 1, b"after"]
        assert redis_cluster.port_of_slot(r.keyslot(k1)) != victim, "the replica was promoted"
        assert r.get(k2) == b"1", "the command on the live primary ran once"
    finally:
        redis_cluster.restart(victim)
        redis_cluster.wait_ok(60)


def test_outbox_commit_survives_a_lost_outbox_entry(cluster_settings):
    """The camera's primary acknowledges step 1 (checkpoint, acks, outbox entry) and dies before its replica has
    it: the promoted replica has no outbox entry. The events must still be written, from the batch the matcher
    holds, and exactly once when a later relay runs."""
    from test_events_store import ev

    r = connect(cluster_settings)
    store = EventStore(r, cluster_settings)
    names = StreamNames.of(cluster_settings)
    outbox = names.outbox("door")
    real = store._outbox

    def step1_then_lost(keys, args):  # what a promoted replica that missed step 1 looks like
        mid = real(keys=keys, args=args)
        r.xdel(outbox, mid)
        return mid

    store._outbox = step1_then_lost
    evs = [ev("identity.matched", "door", "door:1:0", "ann"), ev("track.ended", "door", "door:1:0")]
    assert store.commit_outbox(outbox, evs) == 2
    assert store.relay_outbox(outbox) == 0
    assert sorted(e.type for e in store.query(camera="door").events) == ["identity.matched", "track.ended"]
    assert r.xlen(names.events) == 2 and r.xlen(outbox) == 0
