"""Which cameras have an embeddings stream, without a SCAN of the keyspace: an index kept beside the streams.

`<p>:idx:streams` (`{<p>}:idx:streams` on a cluster; on the transient server, where the streams are) is a sorted
set camera -> when an embedder last wrote the camera's embeddings stream (unix s). The embedder notes a camera
after its emit (StreamIndex.note; again at most every NOTE_EVERY_S per camera, so an index lost with a restarted
transient server comes back). The matcher reads it (stream_cameras) to find cameras with work left that are not
registered. A member is dropped only when its stream is gone and it was not noted again meanwhile (a conditional
ZREM on the index key alone, so it stays one-slot on a cluster).
"""
from __future__ import annotations

import time

import redis

from .config import Settings
from .keys import StreamNames, index_key

NOTE_EVERY_S = 30.0
GONE_AFTER_S = 2 * NOTE_EVERY_S  # a member whose stream is gone is dropped once it has not been noted this long

# KEYS[1] the index. ARGV: cutoff, cameras. A camera noted after the cutoff (by an emit racing this) stays.
_DROP_STALE = """
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= tonumber(ARGV[1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n
"""


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


class StreamIndex:
    """The embedder's side: note the cameras whose embeddings stream it just wrote (one ZADD per camera at most
    every NOTE_EVERY_S)."""

    def __init__(self, r: redis.Redis, settings: Settings):
        self.r = r  # the server of the embeddings streams (transient)
        self.key = index_key(settings, "streams")
        self._noted: dict[str, float] = {}

    def note(self, cameras) -> None:
        now = time.monotonic()
        due = sorted({c for c in cameras if now - self._noted.get(c, -NOTE_EVERY_S) >= NOTE_EVERY_S})
        if not due:
            return
        try:
            self.r.zadd(self.key, dict.fromkeys(due, round(time.time(), 3)))
        except redis.RedisError:
            return  # retried with the next emit
        for c in due:
            self._noted[c] = now


def stream_cameras(r: redis.Redis, settings: Settings) -> set[str]:
    """Cameras with a non-empty embeddings stream among those the index names (r: the transient server)."""
    idx = index_key(settings, "streams")
    names = StreamNames.of(settings)
    members = [(_s(m), float(sc)) for m, sc in r.zrange(idx, 0, -1, withscores=True)]
    if not members:
        return set()
    pipe = r.pipeline(transaction=False)
    for cam, _ in members:
        pipe.xlen(names.embeddings(cam))
        pipe.exists(names.embeddings(cam))
    res = pipe.execute()
    found, stale = set(), []
    cutoff = time.time() - GONE_AFTER_S
    for (cam, score), n, there in zip(members, res[0::2], res[1::2]):
        if int(n) > 0:
            found.add(cam)
        elif not int(there) and score <= cutoff:
            stale.append(cam)
    if stale:
        r.eval(_DROP_STALE, 1, idx, cutoff, *stale)
    return found
