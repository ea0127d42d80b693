"""Redis Streams plumbing shared by every worker: names, consumer groups, batch reads, reclaim, and the
effectively-once emit: outputs are written and the input acked in one Lua call, guarded by a done-marker
derived from the input key, so a redelivered message never produces a second output."""
from __future__ import annotations

import logging
import time
from typing import Sequence

import redis
from redis.cluster import RedisCluster

from .keys import StreamNames, hash_tag  # noqa: F401 - StreamNames is re-exported (its historical home)

log = logging.getLogger("facetrail.streams")


GONE_KEEP = 20_000  # seqs kept per camera in the gone set (oldest trimmed): far more than any reorder window


def mark_gone(r: redis.Redis, names: StreamNames, camera: str, seqs) -> None:
    """Record seqs that will never reach embeddings:{camera} (see StreamNames.gone)."""
    seqs = [int(q) for q in seqs]
    if not seqs:
        return
    pipe = r.pipeline(transaction=False)
    pipe.zadd(names.gone(camera), {str(q): q for q in seqs})
    pipe.zremrangebyrank(names.gone(camera), 0, -GONE_KEEP - 1)
    pipe.execute()


def all_gone(r: redis.Redis, names: StreamNames, camera: str, lo: int, hi: int) -> bool:
    """True when every seq in [lo, hi) is recorded as gone."""
    if hi <= lo:
        return True
    return int(r.zcount(names.gone(camera), lo, hi - 1)) >= hi - lo


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


# The output loop both emits share: n = ARGV[a0] outputs, output i to KEYS[k0 + i] with maxlen ARGV[a0 - 1 + 2i]
# (0 = unbounded) and payload ARGV[a0 + 2i].
_XADD_OUTPUTS = """
local function xadd_outputs(k0, a0)
  for i = 1, tonumber(ARGV[a0]) do
    local maxlen = tonumber(ARGV[a0 - 1 + 2 * i])
    if maxlen > 0 then
      redis.call('XADD', KEYS[k0 + i], 'MAXLEN', '~', maxlen, '*', 'm', ARGV[a0 + 2 * i])
    else
      redis.call('XADD', KEYS[k0 + i], '*', 'm', ARGV[a0 + 2 * i])
    end
  end
end
"""
# KEYS[1] done-marker, KEYS[2] input stream, then one output stream key per output.
# ARGV: group, input id, marker ttl, n_outputs, then for each output: maxlen, payload.
_EMIT_ONCE = _XADD_OUTPUTS + """
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3]))
if fresh then xadd_outputs(2, 4) end
if ARGV[2] ~= '' then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) end
if fresh then return 1 else return 0 end
"""


# Redis is (briefly) unavailable: a worker waits and retries; its unacked entries stay pending. On a Redis Cluster
# this includes a failover in progress (CLUSTERDOWN, TRYAGAIN, a slot without a primary for a moment).
UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError,
                                            redis.exceptions.ClusterError, redis.exceptions.TryAgainError,
                                            redis.exceptions.SlotNotCoveredError)


def is_cluster_client(r) -> bool:
    return isinstance(r, RedisCluster)


# Redis Cluster: the same emit in two single-slot steps. (a) In the OUTPUT's slot, SET NX the done-marker (named
# near the output, StreamNames.done(near=...)) and XADD the outputs, atomically; (b) XACK (+ XDEL) the input in
# its own slot. A crash between (a) and (b) leaves the input pending; its redelivery finds the marker, writes
# nothing and only acks: still effectively-once. KEYS[1] marker, KEYS[2..] outputs (one slot).
# ARGV: marker ttl, n_outputs, then per output: maxlen, payload.
_EMIT_ONLY = _XADD_OUTPUTS + """
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1]))
if not fresh then return 0 end
xadd_outputs(1, 2)
return 1
"""


def _output_args(outputs: Sequence[tuple[str, bytes, int]]) -> list:
    """ARGV tail of _XADD_OUTPUTS: the count, then maxlen and payload per output."""
    args: list = [len(outputs)]
    for _, payload, maxlen in outputs:
        args += [maxlen, payload]
    return args


class Emitter:
    delete_input = False

    def __init__(self, r: redis.Redis, marker_ttl_s: int = 3600):
        self.r = r
        self.ttl = marker_ttl_s
        self.cluster = is_cluster_client(r)
        self._script = r.register_script(_EMIT_ONCE)

    def emit_and_ack(self, marker: str, in_stream: str, group: str, in_id: str | bytes,
                     outputs: Sequence[tuple[str, bytes, int]]) -> bool:
        """outputs: (stream, payload, maxlen or 0). Returns False when this input was already emitted."""
        if self.cluster:
            return self._emit_cluster([(marker, in_stream, group, in_id, outputs)])[0]
        keys, args = self._once_call(marker, in_stream, group, in_id, outputs)
        return bool(self._script(keys=keys, args=args))

    def _once_call(self, marker: str, in_stream: str, group: str, in_id: str | bytes,
                   outputs: Sequence[tuple[str, bytes, int]]) -> tuple[list, list]:
        """KEYS and ARGV of the single-node emit (_EMIT_ONCE's layout)."""
        keys = [marker, in_stream] + [o[0] for o in outputs]
        args = [group, in_id.decode() if isinstance(in_id, bytes) else in_id, self.ttl] + _output_args(outputs)
        return keys, args

    def _emit_cluster(self, items) -> list[bool]:
        """Step (a) for every item in one pipeline (routed per slot), then step (b), the acks."""
        pipe = self.r.pipeline(transaction=False)
        for marker, _in_stream, _group, _in_id, outputs in items:
            if outputs:
                args = [self.ttl] + _output_args(outputs)
                pipe.execute_command("EVAL", _EMIT_ONLY, 1 + len(outputs), marker, *[o[0] for o in outputs], *args)
            else:
                pipe.set(marker, "1", nx=True, ex=self.ttl)
        fresh = [bool(x) for x in pipe.execute()]
        pipe = self.r.pipeline(transaction=False)
        for _marker, in_stream, group, in_id, _outputs in items:
            if in_id:
                pipe.xack(in_stream, group, in_id)
                if self.delete_input:
                    pipe.xdel(in_stream, in_id)
        if len(pipe):
            pipe.execute()
        return fresh


def xreadgroup_many(r, group: str, consumer: str, streams: dict, count: int, block_ms: int | None):
    """XREADGROUP over several streams. On a Redis Cluster one call may only name keys of one slot: the streams
    are read per slot in one pipeline without BLOCK, and when all are empty we sleep (at most 50 ms of the block
    time) instead of blocking on one of them. Same reply shape as redis-py's xreadgroup."""
    if not streams:
        return []
    if not is_cluster_client(r):
        return r.xreadgroup(group, consumer, streams, count=count, block=block_ms)
    by_slot: dict[int, dict] = {}
    for s, i in streams.items():
        by_slot.setdefault(r.keyslot(s), {})[s] = i
    if len(by_slot) == 1:
        return r.xreadgroup(group, consumer, streams, count=count, block=block_ms)
    pipe = r.pipeline(transaction=False)
    for part in by_slot.values():
        pipe.xreadgroup(group, consumer, part, count=count)
    out: list = []
    for res in pipe.execute(raise_on_error=False):
        if isinstance(res, Exception):
            if "NOGROUP" in str(res):
                continue
            raise res
        out.extend(res or [])
    if not out and block_ms:
        time.sleep(min(block_ms, 50) / 1000.0)
    return out


def read_batch(r: redis.Redis, group: str, consumer: str, streams: Sequence[str], count: int,
               block_ms: int) -> list[tuple[str, str, bytes]]:
    """New messages for this consumer across several streams: (stream, id, payload)."""
    if not streams:
        return []
    resp = xreadgroup_many(r, group, consumer, {s: ">" for s in streams}, count=count, block_ms=block_ms)
    return _flatten(resp)


def reclaim(r: redis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int,
            count: int) -> list[tuple[str, str, bytes]]:
    """Take over messages a crashed consumer left pending for longer than min_idle_ms (XAUTOCLAIM)."""
    try:
        resp = r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count)
    except redis.ResponseError as e:
        if "NOGROUP" in str(e):
            return []
        raise
    entries = resp[1] if len(resp) > 1 else []
    return [(stream, _s(i), f[b"m"] if b"m" in f else f.get("m")) for i, f in entries if f]


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _flatten(resp) -> list[tuple[str, str, bytes]]:
    out = []
    for stream, entries in resp or []:
        for msg_id, fields in entries:
            if not fields:
                continue
            out.append((_s(stream), _s(msg_id), fields.get(b"m", fields.get("m"))))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Streaming-pipeline helpers (workers/): consume-and-delete emit, bounded per-camera frame push, reclaim that
# also clears pending entries whose message is gone (dropped at the source while a crashed worker held it).

_ACK_LINE = "if ARGV[2] ~= '' then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) end"
assert _ACK_LINE in _EMIT_ONCE
# Same as _EMIT_ONCE, and the input entry is deleted once acked: frames live in Redis only while in flight, and
# XLEN of an input stream is exactly its not-yet-finished backlog (what the grabber bounds and counts drops on).
_EMIT_ONCE_CONSUME = _EMIT_ONCE.replace(
    _ACK_LINE, "if ARGV[2] ~= '' then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]); "
               "redis.call('XDEL', KEYS[2], ARGV[2]) end")


class ConsumingEmitter(Emitter):
    """emit_and_ack that also XDELs the input entry (single consumer group per input stream)."""

    delete_input = True

    def __init__(self, r: redis.Redis, marker_ttl_s: int = 3600):
        super().__init__(r, marker_ttl_s)
        self._script = r.register_script(_EMIT_ONCE_CONSUME)

    def emit_many(self, items: Sequence[tuple[str, str, str, str | bytes, Sequence[tuple[str, bytes, int]]]]
                  ) -> list[bool]:
        """Several (marker, in_stream, group, in_id, outputs) in one round trip; each stays atomic on its own."""
        if not items:
            return []
        if self.cluster:
            return self._emit_cluster(items)
        pipe = self.r.pipeline(transaction=False)
        for marker, in_stream, group, in_id, outputs in items:
            keys, args = self._once_call(marker, in_stream, group, in_id, outputs)
            self._script(keys=keys, args=args, client=pipe)
        return [bool(x) for x in pipe.execute()]


# KEYS: 1 frames stream, 2 seq counter, 3 (unused), 4 grabber lease key (or its mirror on a transient server),
#       5 (unused), 6 the camera's gone set (dropped seqs, see StreamNames.gone)
# ARGV: 1 maxlen, 2 payload, 3 next seq (stored after the add), 4 mode ('drop' | 'wait'), 5 lease token ('' = none),
#       6 consumer group of the stream, 7 this frame's seq (an entry field 's', so a drop knows which seq it drops)
# Returns: >= 0 number of frames dropped (oldest first) to make room; -1 full in 'wait' mode (nothing written);
#          -2 the lease is held by someone else (fenced off, nothing written).
# Only frames no detector has taken yet (after the group's last-delivered-id) are dropped, so every counted drop
# is a frame that is never processed; frames in flight are left alone (the stream may then exceed maxlen by the
# in-flight count, itself bounded by batch_max x detectors). The caller counts the drops on the durable server
# (camera status `drops`, global drops counter): this script may run on the transient one.
def reclaim_entries(r: redis.Redis, stream: str, group: str, consumer: str, min_idle_ms: int,
                    count: int) -> list[tuple[str, str, bytes]]:
    """streams.reclaim, plus: pending entries whose message was deleted (trimmed at the source while their
    consumer was dead) are acked away, so they do not come back forever (Redis 6.2 keeps them in the PEL)."""
    try:
        resp = r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count)
    except redis.ResponseError as e:
        if "NOGROUP" in str(e):
            return []
        raise
    entries = resp[1] if len(resp) > 1 else []
    out, gone = [], False
    for msg_id, fields in entries:
        if msg_id is None or not fields:
            gone = True
            continue
        out.append((stream, _s(msg_id), fields.get(b"m", fields.get("m"))))
    if gone:
        # the claimed-but-deleted ids now belong to `consumer`; ack the ones XRANGE can no longer find
        mine = r.xpending_range(stream, group, min="-", max="+", count=max(count, 100), consumername=consumer)
        have = {e[1] for e in out}
        for p in mine:
            pid = _s(p["message_id"])
            if pid not in have and not r.xrange(stream, min=pid, max=pid, count=1):
                r.xack(stream, group, pid)
                log.info("acked pending entry %s on %s: its message was dropped at the source", pid, stream)
    return out


def stream_backlog(r: redis.Redis, stream: str, group: str) -> dict:
    """length (entries not yet finished) and pending (delivered, not acked) of one input stream."""
    try:
        length = r.xlen(stream)
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return {"length": 0, "pending": 0, "consumers": 0}
    for g in groups:
        if _s(g["name"]) == group:
            return {"length": int(length), "pending": int(g["pending"]), "consumers": int(g["consumers"])}
    return {"length": int(length), "pending": 0, "consumers": 0}
