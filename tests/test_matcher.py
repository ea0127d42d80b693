"""Matcher worker on a real Redis: frames written out of order to embeddings:{camera}, matchers run as
subprocesses; the lease owner is killed with SIGKILL mid-stream, the other matcher takes the lease over, and
the events in the store are exactly those an uninterrupted in-process run produces: none lost, none twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import redis

from index.replica import GalleryReplica
from index.store import GalleryStore, NewTemplate
from pipeline.events import EventStore
from pipeline.messages import EmbeddedFace, EmbeddingsMsg, FrameRef
from pipeline.streams import StreamNames
from pipeline.stages import MatcherStage
from workers.matcher import lease_key, progress_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAM = "cam1"
N = 240  # frames; EOS at seq N


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def world(settings):
    return make_world(redis.Redis.from_url(settings.redis.url), settings)


def make_world(r, settings) -> list:
    """ann and bob enrolled; a camera's embeddings messages: ann, then a stranger overlapping her, then bob."""
    rng = np.random.default_rng(11)
    people = {n: unit(rng.normal(size=128)) for n in ("ann", "bob", "stranger")}
    gal = GalleryStore(r, settings)
    for n in ("ann", "bob"):
        gal.enroll(n, [NewTemplate(embedding=people[n], sha256=n, quality=0.9, source=n)])

    def face(i, who, x):
        e = unit(people[who] + 0.35 * unit(rng.normal(size=128)))
        return EmbeddedFace(index=i, box=[x, 80.0, 70.0, 70.0], landmarks=[0.0] * 10, score=0.9, quality=0.8,
                            thumb_jpeg=b"\xff\xd8thumb", embedding=e.astype("<f4").tobytes())

    msgs = []
    for s in range(N + 1):
        faces = []
        if s < 100:
            faces.append(face(len(faces), "ann", 100.0 + s))
        if 60 <= s < 150:
            faces.append(face(len(faces), "stranger", 400.0))
        if 170 <= s < 230:
            faces.append(face(len(faces), "bob", 200.0))
        ref = FrameRef(camera=CAM, seq=s, captured_at=5000.0 + s / 30, pts=s / 30, width=640, height=360,
                       eos=(s == N))
        msgs.append(EmbeddingsMsg(frame=ref, faces=[] if s == N else faces))
    return msgs


def reference_events(r, settings, msgs):
    rep = GalleryReplica(r, settings).start()
    st = MatcherStage.from_settings(CAM, lambda v: rep.search(v, 5), settings)
    out = []
    for m in msgs:
        out += st.update(m).events
    return out


def key_of(e):
    return (e.id, e.type, e.track_id, e.identity, e.frames, e.first_seen, e.last_seen, e.snapshot_id)


def shuffled(msgs, rng, window=6):
    out = []
    for i in range(0, len(msgs), window):
        chunk = list(msgs[i:i + window])
        rng.shuffle(chunk)
        out += chunk
    return out


def noted(r, settings, cam=CAM) -> str:
    """The camera's embeddings stream, noted in the streams index as the embedder notes what it writes (these
    tests write the stream themselves): how a matcher finds a camera that is not registered."""
    from pipeline.discovery import StreamIndex

    StreamIndex(r, settings).note([cam])
    return StreamNames.of(settings).embeddings(cam)


def spawn(env, name):
    return subprocess.Popen([sys.executable, "-m", "workers.matcher", "--consumer", name, "-v"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(env["FACETRAIL_DATA_DIR"],
                                                                                f"{name}.log"), "w"))


@pytest.mark.parametrize("transient", [False, True], ids=["one-redis", "transient-redis"])
def test_kill9_failover_no_event_lost_or_duplicated(settings, cli_env, world, tmp_path, transient, request):
    """transient-redis: embeddings on a second server (redis.transient_url), so the owner's events and checkpoint
    (durable) and its acks (transient) are two writes: a takeover must still lose and repeat nothing."""
    r = redis.Redis.from_url(settings.redis.url)
    rs, tproc = r, None
    if transient:
        from conftest import RedisProc

        (tmp_path / "t").mkdir()
        tproc = RedisProc(tmp_path / "t").start()
        request.addfinalizer(tproc.stop)
        rs = redis.Redis.from_url(tproc.url)
        cli_env = dict(cli_env, FACETRAIL_REDIS__TRANSIENT_URL=tproc.url)
    settings.tracking.lease_ttl_s = 1.0
    expected = reference_events(r, settings, world)
    kinds = {(e.type, e.identity) for e in expected}
    assert ("identity.matched", "ann") in kinds and ("identity.matched", "bob") in kinds
    assert ("track.ended", None) in kinds  # the stranger's track

    # a long reorder timeout: the gap we leave below is waited for, never skipped
    env = dict(cli_env, FACETRAIL_TRACKING__LEASE_TTL_S="1.0", FACETRAIL_TRACKING__REORDER_TIMEOUT_MS="600000",
               PYTHONPATH=REPO)
    os.makedirs(env["FACETRAIL_DATA_DIR"], exist_ok=True)
    names = StreamNames(settings.redis.key_prefix)
    stream = noted(rs, settings)
    rng = np.random.default_rng(3)
    order = shuffled(world, rng)
    half = 130
    gap = 100  # withheld until after the kill: frames after it wait (unacked) in the owner's reorder buffer
    first = [m for m in order[:half] if m.frame.seq != gap]
    rest = [world[gap]] + [m for m in order[half:] if m.frame.seq != gap]
    for m in first:
        rs.xadd(stream, {"m": m.encode()})

    procs = {n: spawn(env, n) for n in ("mA", "mB")}
    try:
        prog = lambda: int(r.get(progress_key(settings, CAM)) or -1)  # noqa: E731
        assert wait_until(lambda: prog() == gap - 1), "no matcher made progress"
        held = rs.xpending(stream, "matchers")["pending"]
        assert wait_until(lambda: rs.xpending(stream, "matchers")["pending"] == len(first) - gap)

        holder = r.get(lease_key(settings, CAM)).decode()
        fence1, owner = int(holder.split(":")[0]), holder.split(":")[1]
        os.kill(procs[owner].pid, signal.SIGKILL)
        procs[owner].wait()
        assert prog() == gap - 1 and held > 0  # mid-stream, with frames in flight
        for m in rest:
            rs.xadd(stream, {"m": m.encode()})
        other = "mB" if owner == "mA" else "mA"
        assert wait_until(lambda: prog() == N, 90), f"stuck at {prog()}"
        holder2 = r.get(lease_key(settings, CAM)).decode()
        assert holder2.split(":")[1] == other and int(holder2.split(":")[0]) > fence1  # the lease moved
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
    if transient:
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(
            update={"transient_url": tproc.url})})

    store = EventStore(r, settings)
    got = store.query(camera=CAM, limit=10_000).events
    assert sorted(map(key_of, got)) == sorted(map(key_of, expected))
    streamed = [EventStore(r, settings).get(f[b"m"] and __import__("json").loads(f[b"m"])["id"]).id
                for _, f in r.xrange(names.events)]
    assert sorted(streamed) == sorted(e.id for e in expected)  # published once each, none lost
    assert rs.xpending(stream, "matchers")["pending"] == 0  # every input applied and acked
    from workers.matcher import CameraMatcher
    rs.xadd(stream, {"m": b"not yet read"})
    CameraMatcher(r, settings, CAM, "t", None, store).trim(keep_s=0)
    assert [f[b"m"] for _, f in rs.xrange(stream)] == [b"not yet read"]  # applied entries trimmed, unread kept
    if transient:
        assert not r.exists(stream), "the embeddings stream never touched the durable server"
    for e in got:
        if e.snapshot_id:
            assert store.snapshot(e.snapshot_id) == b"\xff\xd8thumb"


def test_bad_messages_are_dead_lettered_and_the_camera_goes_on(settings, world):
    """In-process worker: garbage and a future schema version are kept in the dead-letter stream with the
    reason; every good frame is applied; a clean stop releases the lease at once."""
    import threading

    from workers.base import deadletter_key
    from workers.matcher import run

    r = redis.Redis.from_url(settings.redis.url)
    stream = noted(r, settings)
    r.xadd(stream, {"m": b"not json"})
    future = json.loads(world[0].encode())
    future["v"] = 2
    r.xadd(stream, {"m": json.dumps(future).encode()})
    for m in world:
        r.xadd(stream, {"m": m.encode()})
    rep = GalleryReplica(r, settings).start()
    stop = threading.Event()
    t = threading.Thread(target=run, args=(settings,), kwargs=dict(consumer="m1", stop=stop,
                                                                   search=lambda v: rep.search(v, 5)))
    t.start()
    try:
        assert wait_until(lambda: int(r.get(progress_key(settings, CAM)) or -1) == N)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert r.get(lease_key(settings, CAM)) is None  # released on a clean stop
    dead = r.xrange(deadletter_key(settings))
    assert len(dead) == 2 and all(f[b"stage"] == b"matcher" for _, f in dead)
    assert b"version" in dead[1][1][b"error"]
    assert r.xpending(stream, "matchers")["pending"] == 0
    names = {e.identity for e in EventStore(r, settings).query(camera=CAM, limit=1000).events}
    assert names == {"ann", "bob", None}


def test_unregistered_camera_without_eos_gets_its_tracks_ended(settings, world, monkeypatch):
    """A live camera that went away (no EOS, not registered any more): once idle, its open tracks end."""
    import threading

    import workers.matcher as wm

    monkeypatch.setattr(wm, "IDLE_RELEASE_S", 0.5)
    r = redis.Redis.from_url(settings.redis.url)
    stream = noted(r, settings)
    for m in world[:50]:  # ann's track is open at seq 49; no EOS ever comes
        r.xadd(stream, {"m": m.encode()})
    rep = GalleryReplica(r, settings).start()
    stop = threading.Event()
    t = threading.Thread(target=wm.run, args=(settings,), kwargs=dict(consumer="m1", stop=stop,
                                                                      search=lambda v: rep.search(v, 5)))
    t.start()
    store = EventStore(r, settings)
    try:
        assert wait_until(lambda: [e.identity for e in store.query(camera=CAM, types=["track.ended"]).events]
                          == ["ann"])
    finally:
        stop.set()
        t.join(30)
    assert [e.type for e in store.query(camera=CAM).events] == ["track.started", "identity.matched",
                                                                 "track.ended"]


def test_entries_left_pending_by_a_stale_reader_are_taken_over(settings, world):
    """A matcher that lost the camera may read a few entries before it notices; they stay pending under its
    name. The owner takes them over after lease_ttl_s instead of skipping those frames."""
    import threading

    from workers.matcher import run

    settings.tracking.lease_ttl_s = 1.0
    settings.tracking.reorder_timeout_ms = 600_000  # a skipped frame would change the events: never skip here
    r = redis.Redis.from_url(settings.redis.url)
    stream = noted(r, settings)
    for m in world[:50]:
        r.xadd(stream, {"m": m.encode()})
    rep = GalleryReplica(r, settings).start()
    expected = reference_events(r, settings, world)
    stop = threading.Event()
    t = threading.Thread(target=run, args=(settings,), kwargs=dict(consumer="owner", stop=stop,
                                                                   search=lambda v: rep.search(v, 5)))
    t.start()
    try:
        assert wait_until(lambda: int(r.get(progress_key(settings, CAM)) or -1) == 49)
        pipe = r.pipeline(transaction=True)  # frames 50..79 land straight in the stale reader's hands
        for m in world[50:80]:
            pipe.xadd(stream, {"m": m.encode()})
        pipe.xreadgroup("matchers", "stale", {stream: ">"}, count=100)
        stale = pipe.execute()[-1]
        assert len(stale[0][1]) == 30
        for m in world[80:]:
            r.xadd(stream, {"m": m.encode()})
        assert wait_until(lambda: int(r.get(progress_key(settings, CAM)) or -1) == N)
    finally:
        stop.set()
        t.join(30)
    got = EventStore(r, settings).query(camera=CAM, limit=10_000).events
    assert sorted(map(key_of, got)) == sorted(map(key_of, expected))
    assert r.xpending(stream, "matchers")["pending"] == 0


def test_matcher_restarting_on_a_v1_checkpoint_resumes_from_it(settings):
    """A matcher of this version taking over a camera whose checkpoint the v1 code wrote (track state as a free
    dict): it resumes at the checkpoint's next seq with the old tracks and makes exactly the events the old code
    made after that point (tests/data/matcher_checkpoint_v1.json), then checkpoints in v2."""
    import pathlib
    import threading

    from ckpt_world import CAM as CKCAM
    from ckpt_world import CUT, N as CKN, STAGE_KW, event_key, world
    from workers.matcher import CHECKPOINT_VERSION, checkpoint_key, run

    kw = dict(STAGE_KW)
    settings.thresholds.match, settings.thresholds.margin = kw.pop("match"), kw.pop("margin")
    settings.unknowns.faces_per_track = kw.pop("faces_per_track")
    for k, v in kw.items():
        setattr(settings.tracking, {"consistent_match": "track_consistent_match",
                                    "consistent_margin": "track_consistent_margin",
                                    "consistent_share": "track_consistent_share"}.get(k, k), v)
    fixture = json.loads((pathlib.Path(__file__).parent / "data" / "matcher_checkpoint_v1.json").read_text())
    msgs, search = world()
    r = redis.Redis.from_url(settings.redis.url)
    r.set(checkpoint_key(settings, CKCAM), fixture["checkpoint"])
    stream = noted(r, settings, CKCAM)
    for m in msgs[CUT:]:
        r.xadd(stream, {"m": m.encode()})
    stop = threading.Event()
    t = threading.Thread(target=run, args=(settings,), kwargs=dict(consumer="m1", stop=stop, search=search))
    t.start()
    try:
        assert wait_until(lambda: int(r.get(progress_key(settings, CKCAM)) or -1) == CKN)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    got = sorted(EventStore(r, settings).query(camera=CKCAM, limit=1000).events, key=lambda e: (e.seq, e.id))
    old = fixture["events"]
    n_head = len(old) - len(got)
    assert 0 < n_head < len(old)
    keys = json.loads(json.dumps([event_key(e) for e in got]))
    assert sorted(keys, key=json.dumps) == sorted(old[n_head:], key=json.dumps)
    assert json.loads(r.get(checkpoint_key(settings, CKCAM)))["v"] == CHECKPOINT_VERSION == 2
