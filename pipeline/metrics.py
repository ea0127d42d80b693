"""Per-stage metrics and worker heartbeats, kept in Redis so any process (the API's /metrics, /healthz) reads them.

Keys (prefix = redis.key_prefix):
  <p>:metrics:{stage}:{consumer}   hash: frames, batches, batch_size_avg, errors, drops, reclaimed, skipped, late,
                                   fps, lag, latency_ms (capture -> this stage's output, last batch), updated_at;
                                   TTL 1 h
  <p>:metrics:drops                total frames dropped at the source (all cameras)
  <p>:hb:{role}:{consumer}         heartbeat JSON {role, consumer, pid, host, started_at}; TTL 3 x heartbeat_s
  <p>:idx:hb                       sorted set role:consumer -> the heartbeat's expiry (unix s): which heartbeat keys
                                   to read (a member whose key has expired is a dead worker; GC'd a minute later)
  <p>:idx:metrics                  set of {stage}:{consumer} with a metrics hash (dropped on read once it is gone)
No reader scans the keyspace (SCAN/KEYS): they read the two indexes, then the keys they name.
Stages: grabber, detector, embedder (matcher and others may write the same shape).
"""
from __future__ import annotations

import json
import os
import socket
import time

import redis

from .backbone import key
from .config import Settings
from .keys import index_key

METRICS_TTL_S = 3600
HB_INDEX_GRACE_S = 60.0  # a heartbeat index entry stays this long past its key's expiry (clock skew between hosts)


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


def metrics_key(settings: Settings, stage: str, consumer: str) -> str:
    return key(settings, "metrics", stage, consumer)


def drops_key(settings: Settings) -> str:
    return key(settings, "metrics", "drops")


def heartbeat_key(settings: Settings, role: str, consumer: str) -> str:
    return key(settings, "hb", role, consumer)


class StageMetrics:
    """Counters kept in memory and flushed to Redis at most once a second (one HSET)."""

    def __init__(self, r: redis.Redis, settings: Settings, stage: str, consumer: str, flush_s: float = 1.0):
        self.r = r
        self.key = metrics_key(settings, stage, consumer)
        self.index, self.name = index_key(settings, "metrics"), f"{stage}:{consumer}"
        self.flush_s = flush_s
        self.frames = self.batches = self.errors = self.drops = self.reclaimed = 0
        self.skipped = 0  # items passed over on purpose (detector: faces tracked without a new embedding;
        # matcher: missing seqs skipped by the reorder buffer, e.g. frames dropped at the source)
        self.motion_skipped = 0  # detector: frames passed on without a detector pass (no motion); grabber: frames
        # sent without pixels by its motion gate (motion.at = grabber)
        self.late = 0  # matcher: frames that arrived after their seq was skipped, so never applied (lost work)
        self.batch_items = 0
        self.lag = 0
        self.latency_ms = 0.0
        self._win_start = time.monotonic()
        self._win_frames = 0
        self._fps = 0.0
        self._last_flush = 0.0

    def batch(self, n: int, *, latency_ms: float | None = None) -> None:
        self.batches += 1
        self.batch_items += n
        self.frames += n
        self._win_frames += n
        if latency_ms is not None:
            self.latency_ms = latency_ms
        self.maybe_flush()

    def count(self, field: str, n: int = 1) -> None:
        setattr(self, field, getattr(self, field) + n)
        self.maybe_flush()

    def maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_s:
            return
        win = now - self._win_start
        if win >= 1.0 or force:
            self._fps = self._win_frames / win if win > 0 else 0.0
            self._win_start, self._win_frames = now, 0
        self._last_flush = now
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(self.key, mapping={
                "frames": self.frames, "batches": self.batches, "errors": self.errors, "drops": self.drops,
                "reclaimed": self.reclaimed, "skipped": self.skipped, "motion_skipped": self.motion_skipped,
                "late": self.late,
                "fps": round(self._fps, 2), "lag": self.lag,
                "batch_size_avg": round(self.batch_items / self.batches, 2) if self.batches else 0,
                "latency_ms": round(self.latency_ms, 1), "updated_at": round(time.time(), 3)})
            pipe.expire(self.key, METRICS_TTL_S)
            pipe.sadd(self.index, self.name)  # every flush: the reader drops a member once its hash has expired
            pipe.execute()
        except redis.RedisError:
            pass  # metrics never take a worker down


class Heartbeat:
    def __init__(self, r: redis.Redis, settings: Settings, role: str, consumer: str):
        self.r = r
        self.key = heartbeat_key(settings, role, consumer)
        self.index, self.member = index_key(settings, "hb"), f"{role}:{consumer}"
        self.every = settings.workers.heartbeat_s
        self.body = json.dumps({"role": role, "consumer": consumer, "pid": os.getpid(),
                                "host": socket.gethostname(), "started_at": round(time.time(), 3)})
        self._last = 0.0

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            ttl = max(2, int(self.every * 3 + 0.999))
            try:
                pipe = self.r.pipeline(transaction=False)
                pipe.set(self.key, self.body, ex=ttl)
                pipe.zadd(self.index, {self.member: round(time.time() + ttl, 3)})
                pipe.execute()
            except redis.RedisError:
                pass

    def clear(self) -> None:
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(self.key)
            pipe.zrem(self.index, self.member)
            pipe.execute()
        except redis.RedisError:
            pass


def _heartbeats(r: redis.Redis, settings: Settings, role: str | None) -> list:
    """The raw heartbeat values of the workers the index names (of one role, or all); None where expired."""
    idx = index_key(settings, "hb")
    r.zremrangebyscore(idx, "-inf", f"({time.time() - HB_INDEX_GRACE_S}")
    members = [_s(m).split(":", 1) for m in r.zrange(idx, 0, -1)]
    keys = [heartbeat_key(settings, m[0], m[1]) for m in members if len(m) == 2 and (role is None or m[0] == role)]
    return list(r.mget(keys)) if keys else []  # one slot on a cluster: {<p>}


def alive_count(r: redis.Redis, settings: Settings, role: str) -> int:
    """How many workers of `role` have a live heartbeat."""
    return sum(1 for v in _heartbeats(r, settings, role) if v)


def alive_workers(r: redis.Redis, settings: Settings, role: str | None = None) -> list[dict]:
    out = []
    for v in _heartbeats(r, settings, role):
        if v:
            try:
                out.append(json.loads(v))
            except ValueError:
                continue
    return sorted(out, key=lambda d: (d.get("role", ""), d.get("consumer", "")))


# KEYS[1] the metrics index, KEYS[1 + i] the hash of member ARGV[i] (all on the {<p>} tag on a cluster)
_DROP_GONE = """
for i, name in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('SREM', KEYS[1], name) end
end
return 0
"""


def _metric_hashes(r: redis.Redis, settings: Settings) -> list[tuple[str, dict]]:
    """(stage:consumer, its hash) for every metrics hash the index names, sorted; members whose hash has expired
    are dropped from the index here."""
    idx = index_key(settings, "metrics")
    names = sorted(_s(m) for m in r.smembers(idx))
    if not names:
        return []
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.hgetall(key(settings, "metrics", n))
    raws = pipe.execute()
    gone = [n for n, raw in zip(names, raws) if not raw]
    if gone:  # atomically, only those still without a hash (a worker may have flushed since)
        r.eval(_DROP_GONE, 1 + len(gone), idx, *(key(settings, "metrics", n) for n in gone), *gone)
    return [(n, raw) for n, raw in zip(names, raws) if raw]


def read_metrics(r: redis.Redis, settings: Settings) -> dict:
    """Everything /metrics needs, as plain data:
    {"stages": {stage: {"consumers": {consumer: {...}},
                        "total": {frames, batches, errors, drops, reclaimed, skipped, motion_skipped, fps}}},
     "queues": {stream: {length, pending, consumers}}, "cameras": {name: status}, "drops_total": int,
     "workers": [heartbeats]}"""
    from .cameras import CameraRegistry
    from .streams import StreamNames, stream_backlog

    stages: dict = {}
    workers = alive_workers(r, settings)
    live = {(w.get("role"), w.get("consumer")) for w in workers}
    registered: set[str] = set(CameraRegistry(r, settings).names())
    for name, raw in _metric_hashes(r, settings):
        stage, _, consumer = name.partition(":")
        # only live workers (a heartbeat) and registered cameras: a crashed worker's or a removed camera's
        # counters would otherwise stay in /metrics for the hash's TTL (an hour) as if they were current
        base, _, cam = consumer.partition(":")  # grabbers report per camera as <consumer>:<camera>
        if (stage, base) not in live or (cam and cam not in registered):
            continue
        vals: dict[str, float | str] = {}
        for f, v in raw.items():
            try:
                vals[_s(f)] = float(v)
            except ValueError:
                vals[_s(f)] = _s(v)
        st = stages.setdefault(stage, {"consumers": {}, "total": {}})
        st["consumers"][consumer] = vals
        tot = st["total"]
        for f in ("frames", "batches", "errors", "drops", "reclaimed", "skipped", "motion_skipped", "fps"):
            tot[f] = tot.get(f, 0) + float(vals.get(f, 0) or 0)
    from .backbone import transient_client

    names = StreamNames.of(settings)
    reg = CameraRegistry(r, settings)
    cams = reg.names()
    rt = transient_client(settings, r)  # frames and faces in flight live there
    queues = {names.frames(c): stream_backlog(rt, names.frames(c), "detectors") for c in cams}
    for fs in names.all_faces:
        queues[fs] = stream_backlog(rt, fs, "embedders")
    for c in cams:
        queues[names.embeddings(c)] = {"length": int(rt.xlen(names.embeddings(c)))}
    return {"stages": stages, "queues": queues, "cameras": reg.all_status(),
            "drops_total": int(r.get(drops_key(settings)) or 0), "workers": workers}
