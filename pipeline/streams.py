"""Redis Streams plumbing shared by every worker: names, consumer groups, batch reads, reclaim, and the
effectively-once emit: outputs are written and the input acked in one Lua call, guarded by a done-marker
derived from the input key, so a redelivered message never produces a second output."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import redis

log = logging.getLogger("facetrail.streams")


@dataclass(frozen=True)
class StreamNames:
    prefix: str = "ft"

    def frames(self, camera: str) -> str:
        return f"{self.prefix}:frames:{camera}"

    @property
    def faces(self) -> str:
        return f"{self.prefix}:faces"

    def embeddings(self, camera: str) -> str:
        return f"{self.prefix}:embeddings:{camera}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def done(self, stage: str, key: str) -> str:
        return f"{self.prefix}:done:{stage}:{key}"

    def counter(self, name: str) -> str:
        return f"{self.prefix}:metrics:{name}"


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


# KEYS[1] done-marker, KEYS[2] input stream, then one output stream key per output.
# ARGV: group, input id, marker ttl, n_outputs, then for each output: maxlen, payload.
_EMIT_ONCE = """
local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3]))
if fresh then
  local n = tonumber(ARGV[4])
  for i = 1, n do
    local maxlen = tonumber(ARGV[3 + 2 * i])
    local payload = ARGV[4 + 2 * i]
    if maxlen > 0 then
      redis.call('XADD', KEYS[2 + i], 'MAXLEN', '~', maxlen, '*', 'm', payload)
    else
      redis.call('XADD', KEYS[2 + i], '*', 'm', payload)
    end
  end
end
if ARGV[2] ~= '' then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) end
if fresh then return 1 else return 0 end
"""


class Emitter:
    def __init__(self, r: redis.Redis, marker_ttl_s: int = 3600):
        self.r = r
        self.ttl = marker_ttl_s
        self._script = r.register_script(_EMIT_ONCE)

    def emit_and_ack(self, marker: str, in_stream: str, group: str, in_id: str | bytes,
                     outputs: Sequence[tuple[str, bytes, int]]) -> bool:
        """outputs: (stream, payload, maxlen or 0). Returns False when this input was already emitted."""
        keys = [marker, in_stream] + [o[0] for o in outputs]
        args: list = [group, in_id.decode() if isinstance(in_id, bytes) else in_id, self.ttl, len(outputs)]
        for _, payload, maxlen in outputs:
            args += [maxlen, payload]
        return bool(self._script(keys=keys, args=args))


def read_batch(r: redis.Redis, group: str, consumer: str, streams: Sequence[str], count: int,
               block_ms: int) -> list[tuple[str, str, bytes]]:
    """New messages for this consumer across several streams: (stream, id, payload)."""
    if not streams:
        return []
    resp = r.xreadgroup(group, consumer, {s: ">" for s in streams}, count=count, block=block_ms)
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
