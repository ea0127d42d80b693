"""The grabber's side of the frames stream: a bounded, lease-fenced push (oldest dropped and recorded gone), and
the lease mirror that lets a transient server check the fence without a cross-server call."""
from __future__ import annotations

import time

import redis

from .streams import StreamNames, _s

_PUSH_FRAME = """
if ARGV[5] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[5] then return -2 end
local maxlen = tonumber(ARGV[1])
local n = redis.call('XLEN', KEYS[1])
local dropped = 0
if n >= maxlen then
  if ARGV[4] == 'wait' then return -1 end
  local from = '-'
  if redis.call('EXISTS', KEYS[1]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[6] then from = '(' .. info['last-delivered-id'] end
    end
  end
  local old = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', n - maxlen + 1)
  for _, e in ipairs(old) do
    redis.call('XDEL', KEYS[1], e[1])
    dropped = dropped + 1
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 's' then redis.call('ZADD', KEYS[6], tonumber(f[i + 1]), f[i + 1]) end
    end
  end
  if dropped > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -20001)
  end
end
redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 's', ARGV[7])
redis.call('SET', KEYS[2], ARGV[3])
return dropped
"""


class FramePusher:
    """Bounded XADD to frames:{camera}: at most maxlen entries (backlog not yet finished by a detector).

    mode 'drop' (live sources): when full, the oldest frames no detector has taken yet are deleted and every one
    is counted (camera status `drops` and the global drops counter). mode 'wait' (files): returns -1 and the
    caller waits."""

    def __init__(self, r: redis.Redis, durable: redis.Redis | None = None):
        """r: the server of the frames stream (transient); durable: where drops are counted (default: r)."""
        self.r = r
        self.durable = durable if durable is not None else r
        self._script = r.register_script(_PUSH_FRAME)

    def push(self, *, stream: str, seq_key: str, status_key: str, lease_key: str, drops_key: str, maxlen: int,
             payload: bytes, next_seq: int, mode: str = "drop", token: str = "", group: str = "detectors",
             gone_key: str = "", seq: int | None = None) -> int:
        """gone_key/seq: where a dropped frame's seq is recorded (default: <stream prefix>:gone:<camera>)."""
        if not gone_key:
            prefix, _, camera = stream.partition(":frames:")
            gone_key = StreamNames(prefix).gone(camera)
        # KEYS[3] and KEYS[5] are unused by the script: the stream stands in for them, so every key is in the
        # camera's slot on a Redis Cluster (status and drops are counted on the durable server below)
        res = int(self._script(keys=[stream, seq_key, stream, lease_key, stream, gone_key],
                               args=[maxlen, payload, next_seq, mode, token, group,
                                     next_seq - 1 if seq is None else seq]))
        if res > 0:
            pipe = self.durable.pipeline(transaction=False)
            pipe.hincrby(status_key, "drops", res)
            pipe.incrby(drops_key, res)
            pipe.execute()
        return res


# KEYS[1] the lease mirror on the transient server. ARGV: token "<fence>:<owner>:<id>", its fence, ttl ms.
# A lower fence never overwrites a higher one: an old owner that has not noticed the takeover cannot fence
# the new owner out.
_MIRROR_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local f = tonumber(string.match(cur, '^(%d+):'))
  if f and f > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[3]))
return 1
"""


class LeaseMirror:
    """The grabber lease lives on the durable server; the frame push (on the transient one) is fenced by a
    copy of its token there, refreshed about once a second after checking the real lease."""

    def __init__(self, durable: redis.Redis, transient: redis.Redis, lease_key: str, ttl_ms: int,
                 mirror_key: str | None = None):
        self.durable, self.transient = durable, transient
        self.lease_key = lease_key
        self.key = mirror_key or lease_key + ":mirror"
        self.ttl_ms = ttl_ms
        self._script = transient.register_script(_MIRROR_LEASE)
        self._at = 0.0

    def refresh(self, token: str, force: bool = False) -> bool:
        """False when the real lease is no longer `token` (then the push will be refused too)."""

        now = time.monotonic()
        if not force and now - self._at < 1.0:
            return True
        held = self.durable.get(self.lease_key)
        if held is None or _s(held) != token:
            return False
        self._at = now
        fence = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 0
        return bool(self._script(keys=[self.key], args=[token, fence, self.ttl_ms]))
