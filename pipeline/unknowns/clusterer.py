"""Clustering of the queued unknown tracks (keys: pipeline/unknowns/keys.py); UnknownStore
(pipeline/unknowns/store.py) adds the reads and the user's actions on top.

One process clusters at a time (`<p>:unk:lock`); every change bumps `<p>:unk:ver`, and a process whose
in-memory index is older rebuilds it from `<p>:unk:means` before it assigns anything. Ingesting a track is
idempotent (a track that already has a cluster is skipped), so the ingest stream's at-least-once delivery
never puts a track in two clusters."""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from contextlib import contextmanager

import numpy as np
import redis

from ..config import Settings
from ..events.store import EventStore
from ..messages import MessageVersionError
from . import keys as K
from .cluster import ClusterIndex
from .errors import UnknownsError
from .model import TrackFaces

log = logging.getLogger("facetrail.unknowns")

GROUP = "clusterer"
LOCK_TTL_MS = 30_000

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


def cluster_id(track_id: str) -> str:
    """A cluster is named after its founding track: deterministic, so a replayed ingest founds the same one."""
    return "u-" + hashlib.sha1(track_id.encode()).hexdigest()[:12]


class Clusterer:
    """Puts ended unknown tracks into clusters, under the lock, with an in-memory index of the track means."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r
        self.settings = settings
        self.cfg = settings.unknowns
        self.events = EventStore(r, settings)
        self._unlock = r.register_script(_UNLOCK)
        self._index: ClusterIndex | None = None
        self._ver: int | None = None

    # ---- keys ---------------------------------------------------------------------------------------
    def k(self, *parts) -> str:
        return K.unk(self.settings, *parts)

    @property
    def retention_s(self) -> int:
        return max(1, int(self.cfg.retention_days * 86400))

    # ---- locking and the in-memory index --------------------------------------------------------------
    @contextmanager
    def _locked(self, wait_s: float = 15.0):
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while not self.r.set(self.k("lock"), token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() >= deadline:
                raise UnknownsError("the unknown-visitor store is busy (another process holds its lock); "
                                    "try again")
            time.sleep(0.02)
        try:
            self._sync_index()
            yield
        finally:
            self._unlock(keys=[self.k("lock")], args=[token])

    def _bump(self) -> None:
        self._ver = int(self.r.incr(self.k("ver")))

    def _sync_index(self) -> ClusterIndex:
        ver = int(self.r.get(self.k("ver")) or 0)
        if self._index is None or ver != self._ver:
            self._index = self._build_index()
            self._ver = ver
        return self._index

    def _build_index(self) -> ClusterIndex:
        idx = ClusterIndex(link=self.cfg.link_threshold, join=self.cfg.cluster_threshold)
        means = self.r.hgetall(self.k("means"))
        labels = self.r.hgetall(self.k("trackcl"))
        tids, vecs, cls = [], [], []
        for t, b in means.items():
            c = labels.get(t)
            if c is None or len(b) != 512:
                continue
            tids.append(_s(t))
            vecs.append(np.frombuffer(b, dtype="<f4"))
            cls.append(_s(c))
        if tids:
            idx.add_many(tids, np.stack(vecs).astype(np.float32), cls)
        return idx

    # ---- clustering ---------------------------------------------------------------------------------
    def pending(self) -> int:
        try:
            return int(self.r.xlen(self.k("ingest")))
        except redis.ResponseError:
            return 0

    def drain(self, max_n: int = 10_000, wait_s: float = 0.0) -> int:
        """Cluster the queued unknown tracks. Returns how many were taken; 0 when another process holds the
        lock (it is clustering them) and wait_s is 0."""
        if not self.pending():
            return 0
        try:
            with self._locked(wait_s):
                n = self._drain_locked(max_n)
        except UnknownsError:
            return 0  # another process holds the lock: it is clustering them
        if n:
            log.info("unknowns: clustered %d track(s)", n)
        return n

    def _drain_locked(self, max_n: int) -> int:
        n = 0
        stream = self.k("ingest")
        try:
            self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        consumer = "clusterer"  # one at a time (the lock): entries a crashed holder left are ours at once
        for start in ("0", ">"):
            while n < max_n:
                resp = self.r.xreadgroup(GROUP, consumer, {stream: start}, count=200)
                rows = resp[0][1] if resp else []
                if not rows:
                    break
                for mid, fields in rows:
                    tid = _s((fields or {}).get(b"t"))
                    if tid:
                        try:
                            self._ingest(tid)
                        except (MessageVersionError, ValueError):
                            log.exception("unknowns: track %s cannot be clustered; dropped", tid)
                    self.r.xack(stream, GROUP, mid)
                    self.r.xdel(stream, mid)
                    n += 1
        return n

    def _record(self, track_id: str) -> TrackFaces | None:
        raw = self.r.get(K.track_faces(self.settings, track_id))
        return TrackFaces.decode(raw) if raw else None

    def _ingest(self, track_id: str, rec: TrackFaces | None = None) -> str | None:
        """Put one ended unknown track into its cluster (the lock is held). Returns the cluster id."""
        have = self.r.hget(self.k("trackcl"), track_id)
        if have is not None:
            return _s(have)
        rec = rec or self._record(track_id)
        if rec is None or rec.identity_id is not None:
            return None  # expired, or the track was named meanwhile
        if max((f.q for f in rec.faces), default=0.0) < self.cfg.min_quality:
            log.info("unknowns: track %s camera=%s not clustered: best face quality below %.2f", track_id,
                     rec.camera, self.cfg.min_quality)
            return None
        idx = self._index
        assert idx is not None, "the caller syncs the cluster index (_sync_index) under the lock first"
        mean = rec.mean_vector()
        found, score = idx.assign(mean)
        new = found is None
        cid = cluster_id(track_id) if found is None else found
        ttl = self.retention_s
        snaps = [f.id for f in rec.faces]
        pipe = self.r.pipeline(transaction=False)
        for sid in snaps:
            pipe.exists(self.events.snapshot_key(sid))
        jpegs = [bool(x) for x in pipe.execute()] if snaps else []  # crops still there (not below min_quality)
        ckey = self.k("cl", cid)
        h = {_s(a): _s(b) for a, b in self.r.hgetall(ckey).items()}
        faces = json.loads(h.get("faces") or "[]")
        faces += [{"id": f.id, "q": f.q, "k": f.k, "track_id": track_id}
                  for f, j in zip(rec.faces, jpegs) if j]
        faces.sort(key=lambda f: -f["k"])
        cams = sorted(set(json.loads(h.get("cameras") or "[]")) | {rec.camera})
        first = min(float(h.get("first_seen") or rec.first_seen), rec.first_seen)
        last = max(float(h.get("last_seen") or rec.last_seen), rec.last_seen)
        pipe = self.r.pipeline(transaction=True)
        for f, j in zip(rec.faces, jpegs):  # server-side moves: the JPEG bytes never travel (nor hit the AOF)
            if j:
                if f.id == rec.snapshot_id:  # the event keeps its own snapshot
                    pipe.copy(self.events.snapshot_key(f.id), self.k("face", f.id), replace=True)
                else:
                    pipe.rename(self.events.snapshot_key(f.id), self.k("face", f.id))
                pipe.expire(self.k("face", f.id), ttl)
        pipe.hset(ckey, mapping={"id": cid, "n": int(h.get("n") or 0) + 1, "first_seen": repr(first),
                                 "last_seen": repr(last), "cameras": json.dumps(cams),
                                 "faces": json.dumps(faces[:self.cfg.faces_per_cluster]),
                                 "ignored": h.get("ignored") or "0", "created": h.get("created") or repr(time.time())})
        pipe.sadd(self.k("cl", cid, "tracks"), track_id)
        pipe.hset(self.k("means"), track_id, np.ascontiguousarray(mean, "<f4").tobytes())
        pipe.hset(self.k("trackcl"), track_id, cid)
        pipe.zadd(self.k("tracks"), {track_id: rec.last_seen})
        pipe.zadd(self.k("clusters"), {cid: last})
        pipe.expire(K.track_faces(self.settings, track_id), max(ttl, self.events.retention_s))
        pipe.incr(self.k("ver"))
        res = pipe.execute()
        self._ver = int(res[-1])
        idx.add(track_id, mean, cid)
        log.info("unknowns: track %s camera=%s -> cluster %s (%s, cosine %.3f)", track_id, rec.camera, cid,
                 "new" if new else "joined", score)
        return cid

