"""Event store on a real Redis: filters, paging, write-once ids, fencing, retention, purge on gallery remove."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis

from pipeline.events import Event, EventStore, FencedError
from pipeline.streams import StreamNames


def ev(type_, cam, track, ident=None, score=0.5, t=1000.0, snap=None):
    return Event.make(type_, cam, track, ident if type_ == "identity.matched" else None, identity=ident,
                      score=score, first_seen=t - 1, last_seen=t, frames=3, seq=int(t), snapshot_id=snap,
                      created_at=t)


@pytest.fixture
def store(settings):
    r = redis.Redis.from_url(settings.redis.url)
    return EventStore(r, settings)


def fill(store):
    evs = []
    for i in range(30):
        cam = "door" if i % 2 else "yard"
        ident = ["ann", "bob", None][i % 3]
        track = f"{cam}:{i}:0"
        evs.append(ev("track.started", cam, track, t=1000.0 + i))
        if ident:
            e = ev("identity.matched", cam, track, ident, score=0.4 + i / 100, t=1000.0 + i)
            e.identity_id = "id-" + ident
            evs.append(e)
        e = ev("track.ended", cam, track, ident, score=0.3 + i / 100, t=1000.5 + i)
        e.identity_id = "id-" + ident if ident else None
        evs.append(e)
    assert store.add(evs) == len(evs)
    return evs


def test_filters(store):
    evs = fill(store)
    assert store.add(evs) == 0  # write-once: a replay adds nothing (and nothing to the events stream)
    assert store.r.xlen(StreamNames(store.settings.redis.key_prefix).events) == len(evs)
    door = store.query(camera="door", limit=1000).events
    assert door and all(e.camera == "door" for e in door)
    ann = store.query(identity="ANN", limit=1000).events
    assert {e.identity for e in ann} == {"ann"} and {e.type for e in ann} == {"identity.matched", "track.ended"}
    assert store.query(identity_id="id-bob", limit=1000).events == \
        [e for e in store.query(identity="bob", limit=1000).events]
    unk = store.query(unknown=True, limit=1000).events
    assert len(unk) == 10 and all(e.identity is None and e.type == "track.ended" for e in unk)
    window = store.query(since=1010.0, until=1012.0, limit=1000).events
    assert window and all(1010.0 <= e.last_seen <= 1012.0 for e in window)
    hi = store.query(min_score=0.6, limit=1000).events
    assert hi and all(e.score >= 0.6 for e in hi)
    both = store.query(camera="yard", identity="ann", types=["track.ended"], limit=1000).events
    assert both and all(e.camera == "yard" and e.identity == "ann" and e.type == "track.ended" for e in both)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_paging_visits_every_event_once(store, order):
    evs = fill(store)
    # equal timestamps on purpose: the cursor must break ties by id
    extra = [ev("track.started", "yard", f"yard:tie:{i}", t=2000.0) for i in range(7)]
    store.add(extra)
    seen, cursor, pages = [], None, 0
    while True:
        page = store.query(limit=4, cursor=cursor, order=order)
        seen += [e.id for e in page.events]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == sorted(e.id for e in evs + extra) and len(seen) == len(set(seen))
    ts = [store.get(i).last_seen for i in seen]
    assert ts == sorted(ts, reverse=(order == "desc"))
    with pytest.raises(ValueError):
        store.query(cursor="garbage!")


def test_fenced_commit_writes_nothing(store):
    r = store.r
    r.set("lease", "mine")
    e = ev("track.started", "cam", "cam:1:0")
    assert store.commit([e], fence=("lease", "mine"), sets=[("ckpt", "1")]) == 1
    r.set("lease", "someone-else")
    e2 = ev("track.started", "cam", "cam:2:0")
    with pytest.raises(FencedError):
        store.commit([e2], fence=("lease", "mine"), sets=[("ckpt", "2")])
    assert store.get(e2.id) is None and r.get("ckpt") == b"1"


def test_retention_sweep_removes_old_events_and_snapshots(store):
    store.settings.events.retention_days = 1.0
    now = 1_000_000.0
    old = ev("track.ended", "cam", "cam:1:0", t=now - 2 * 86400, snap="cam:1:0")
    new = ev("track.ended", "cam", "cam:2:0", t=now - 3600, snap="cam:2:0")
    store.put_snapshot("cam:1:0", b"old-jpeg")
    store.put_snapshot("cam:2:0", b"new-jpeg")
    store.add([old, new])
    assert store.snapshot("cam:1:0") == b"old-jpeg"
    assert store.r.ttl(store.snapshot_key("cam:2:0")) > 3600  # referenced: kept for the retention period
    assert store.sweep(now=now) == 1
    assert store.get(old.id) is None and store.snapshot("cam:1:0") is None
    assert store.get(new.id) is not None and store.snapshot("cam:2:0") == b"new-jpeg"
    assert [e.id for e in store.query(camera="cam").events] == [new.id]


def test_gallery_remove_purges_events_and_snapshots(store, settings):
    from index.store import GalleryStore, NewTemplate

    r = store.r
    gal = GalleryStore(r, settings)
    vec = np.ones(128, np.float32)
    iid, _ = gal.enroll("ann", [NewTemplate(embedding=vec, sha256="x", quality=0.9, thumbnail=b"", source="s1")])
    track = "door:5:0"
    started = ev("track.started", "door", track, t=1000.0, snap="door:5:0")
    matched = ev("identity.matched", "door", track, "ann", t=1001.0, snap="door:5:0")
    matched.identity_id = iid
    other = ev("track.ended", "door", "door:9:0", None, t=1002.0)
    store.put_snapshot("door:5:0", b"ann-face")
    store.add([started, matched, other])
    gal.remove("ann")  # runs index.hooks.on_remove -> purge_identity
    assert store.get(matched.id) is None and store.get(started.id) is None  # the whole track goes
    assert store.snapshot("door:5:0") is None
    assert [e.id for e in store.query(limit=100).events] == [other.id]
    stream = StreamNames(settings.redis.key_prefix).events
    assert [json.loads(f[b"m"])["id"] for _, f in r.xrange(stream)] == [other.id]  # the stream forgets too


def test_purge_deletes_the_persons_entries_from_the_events_stream(store, monkeypatch):
    monkeypatch.setattr("pipeline.events.store.STREAM_SCAN_CHUNK", 7)  # several scan steps
    r = store.r
    stream = StreamNames(store.settings.redis.key_prefix).events
    evs = fill(store)
    old = ev("identity.matched", "yard", "yard:old:0", "ann", t=500.0)
    old.identity_id = "id-ann"
    r.xadd(stream, {"m": old.encode()})  # its stored copy is gone (retention), the stream entry is not
    r.xgroup_create(stream, "sink:test", id="0")
    r.xreadgroup("sink:test", "c1", {stream: ">"}, count=5)  # some entries pending in a sink's group
    ann_tracks = {e.track_id for e in evs if e.identity == "ann"}
    store.purge_identity("id-ann", "ann")
    left = [json.loads(f[b"m"]) for _, f in r.xrange(stream)]
    assert left and not any(b"ann" in f[b"m"] for _, f in r.xrange(stream))  # name and id ("id-ann")
    assert not any(e["track_id"] in ann_tracks for e in left)
    assert len(left) == len([e for e in evs if e.track_id not in ann_tracks])
    pending = r.xreadgroup("sink:test", "c1", {stream: "0"}, count=10)[0][1]
    assert len(pending) == 5 and all(not f or b"ann" not in f[b"m"] for _, f in pending)
    assert any(not f for _, f in pending)  # a deleted entry still pending in a group reads back empty


def test_retention_sweep_trims_the_events_stream(store):
    stream = StreamNames(store.settings.redis.key_prefix).events
    store.settings.events.retention_days = 1.0
    store.r.xadd(stream, {"m": ev("track.started", "cam", "cam:0:0", t=1.0).encode()}, id="1000-0")  # long ago
    store.add([ev("track.started", "cam", "cam:1:0", t=time.time())])
    store.sweep()
    assert [json.loads(f[b"m"])["track_id"] for _, f in store.r.xrange(stream)] == ["cam:1:0"]


def test_purge_by_name_spares_another_person_with_a_case_variant_name(store):
    """Gallery names are case-sensitive ("Ann" and "ann" are two people) while the name index is case-folded:
    removing one must not take the other's events."""
    evs = []
    for i, (name, iid) in enumerate((("Ann", "id-Ann"), ("ann", "id-ann"))):
        track = f"door:{i}:0"
        for type_ in ("identity.matched", "track.ended"):
            e = ev(type_, "door", track, name, t=1000.0 + i)
            e.identity_id = iid
            evs.append(e)
    store.add(evs)
    store.purge_identity("id-Ann", "Ann")
    left = store.query(limit=100).events
    assert sorted(e.id for e in left) == sorted(e.id for e in evs if e.identity_id == "id-ann")
    assert {e.id for e in store.query(identity="ann", limit=100).events} == {e.id for e in left}
