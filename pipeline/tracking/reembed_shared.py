"""SharedReembedGate: the ReembedGate's per-camera slots kept in Redis, so every detector judges a face against
the same memory.

With N detector workers each per-process gate sees about 1/N of a camera's frames: a face it follows was, for
the gate, last seen and embedded N frames ago, and every worker starts its own slot for each new face, so up to
N times as many faces are embedded as one gate would pick (issue 5's notes; bench/eval_reembed_shared.py measures
it). Here one Lua call per batch runs ReembedGate.plan's rules on every frame of the batch, in the order given,
against slots stored per camera (<prefix>:reembed:{camera}, a line of exact numbers per slot, expiring after a
minute without faces), so the state is shared and updated atomically. Same rules, same parameters
(workers.reembed_*); switched on by workers.reembed_shared. If Redis fails the batch falls back to the process's
own gate: embedding more is safe."""
from __future__ import annotations

import json
import logging
from typing import Sequence

import redis

from .reembed import ReembedGate

log = logging.getLogger("facetrail.reembed")

# KEYS: one slot key per camera of the batch. ARGV[1]: JSON list of frames {k: key index (1-based), t: stream
# time, f: [[x, y, w, h, quality], ...]}; ARGV[2..9]: every_s, settle_n, settled_s, iou, quality_gain, follow_s,
# restart_s, per_camera; ARGV[10]: ttl ms. Returns one string per frame, '1' (embed) or '0' per face.
_PLAN = r"""
local frames = cjson.decode(ARGV[1])
local every, settle_n, settled = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local min_iou, gain, follow = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local restart, per_camera, ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local function iou(a, b)
  local iw = math.max(0, math.min(a[1] + a[3], b[1] + b[3]) - math.max(a[1], b[1]))
  local ih = math.max(0, math.min(a[2] + a[4], b[2] + b[4]) - math.max(a[2], b[2]))
  local inter = iw * ih
  local union = a[3] * a[4] + b[3] * b[4] - inter
  if union > 0 then return inter / union end
  return 0
end
local state, dirty = {}, {}
local out = {}
for fi, fr in ipairs(frames) do
  local k, t = fr.k, fr.t
  local slots = state[k]
  if slots == nil then
    local raw = redis.call('GET', KEYS[k])
    slots = {}
    if raw then  -- one slot a line: x y w h seen embedded best n (17 digits: exact doubles, unlike cjson's 14)
      for line in string.gmatch(raw, '[^\n]+') do
        local v = {}
        for x in string.gmatch(line, '%S+') do v[#v + 1] = tonumber(x) end
        slots[#slots + 1] = {b = {v[1], v[2], v[3], v[4]}, s = v[5], e = v[6], q = v[7], n = v[8]}
      end
    end
    state[k] = slots
  end
  if #slots > 0 then
    local top = slots[1].s
    for _, s in ipairs(slots) do if s.s > top then top = s.s end end
    if t < top - restart then slots = {}; state[k] = slots end
  end
  local live = {}
  for _, s in ipairs(slots) do
    if math.abs(t - s.s) <= follow then live[#live + 1] = s end
  end
  local pairs_ = {}
  for i, f in ipairs(fr.f) do
    for j, s in ipairs(live) do
      pairs_[#pairs_ + 1] = {iou(f, s.b), i, j}
    end
  end
  table.sort(pairs_, function(x, y)
    if x[1] ~= y[1] then return x[1] > y[1] end
    if x[2] ~= y[2] then return x[2] > y[2] end
    return x[3] > y[3]
  end)
  local taken, used = {}, {}
  for _, p in ipairs(pairs_) do
    if p[1] < min_iou then break end
    if taken[p[2]] == nil and used[p[3]] == nil then
      taken[p[2]] = live[p[3]]
      used[p[3]] = true
    end
  end
  local res = {}
  for i, f in ipairs(fr.f) do
    local box, q = {f[1], f[2], f[3], f[4]}, f[5]
    local slot = taken[i]
    if slot == nil then
      slots[#slots + 1] = {b = box, s = t, e = t, q = q, n = 1}
      res[#res + 1] = '1'
    else
      local window = every
      if slot.n >= settle_n then window = settled end
      local embed = math.abs(t - slot.e) >= window or q >= slot.q + gain
      slot.b = box
      if t > slot.s then slot.s = t end
      if embed then
        slot.e = t
        if q > slot.q then slot.q = q end
        slot.n = slot.n + 1
        res[#res + 1] = '1'
      else
        res[#res + 1] = '0'
      end
    end
  end
  if #slots > per_camera then
    table.sort(slots, function(x, y) return x.s < y.s end)
    local keep = {}
    for i = #slots - per_camera + 1, #slots do keep[#keep + 1] = slots[i] end
    slots = keep
    state[k] = slots
  end
  if #fr.f > 0 then dirty[k] = true end
  out[fi] = table.concat(res)
end
for k, _ in pairs(dirty) do
  local slots = state[k]
  if #slots == 0 then
    redis.call('DEL', KEYS[k])
  else
    local lines = {}
    for i, sl in ipairs(slots) do
      lines[i] = string.format('%.17g %.17g %.17g %.17g %.17g %.17g %.17g %d', sl.b[1], sl.b[2], sl.b[3], sl.b[4],
                               sl.s, sl.e, sl.q, sl.n)
    end
    redis.call('SET', KEYS[k], table.concat(lines, '\n'), 'PX', ttl)
  end
end
return out
"""


class SharedReembedGate(ReembedGate):
    """ReembedGate whose memory is in Redis. plan_many() is the batch call (one round trip); plan() is one frame."""

    TTL_MS = 60_000

    def __init__(self, r: redis.Redis, prefix: str, every_s: float = 0.1, **kw):
        super().__init__(every_s, **kw)
        self.r = r
        self.prefix = prefix
        self._script = r.register_script(_PLAN)
        self.fallbacks = 0  # batches judged by the local gate because Redis failed

    @classmethod
    def from_settings(cls, r: redis.Redis, settings) -> "SharedReembedGate":
        w = settings.workers
        return cls(r, settings.redis.key_prefix, w.reembed_s, settle_n=w.reembed_settle_n,
                   settled_s=w.reembed_settled_s)

    def key(self, camera: str) -> str:
        return f"{self.prefix}:reembed:{camera}"

    def plan(self, camera: str, t: float, faces: Sequence[tuple[Sequence[float], float]]) -> list[bool]:
        return self.plan_many([(camera, t, faces)])[0]

    def plan_many(self, frames: Sequence[tuple[str, float, Sequence[tuple[Sequence[float], float]]]]
                  ) -> list[list[bool]]:
        if not self.enabled:
            return [[True] * len(f) for _, _, f in frames]
        if not any(f for _, _, f in frames):
            return [[] for _ in frames]
        cams = {c for c, _, _ in frames}
        if len(cams) > 1 and _is_cluster(self.r):
            # Redis Cluster: one call per camera (each camera's key is in its own slot)
            out: list[list[bool]] = [[] for _ in frames]
            for cam in cams:
                idx = [i for i, f in enumerate(frames) if f[0] == cam]
                for i, res in zip(idx, self.plan_many([frames[i] for i in idx])):
                    out[i] = res
            return out
        keys: list[str] = []
        index: dict[str, int] = {}
        items = []
        for camera, t, faces in frames:
            if camera not in index:
                keys.append(self.key(camera))
                index[camera] = len(keys)
            items.append({"k": index[camera], "t": float(t),
                          "f": [[float(v) for v in box] + [float(q)] for box, q in faces]})
        try:
            res = self._script(keys=keys, args=[json.dumps(items), self.every_s, self.settle_n, self.settled_s,
                                                self.iou, self.quality_gain, self.follow_s, self.RESTART_S,
                                                self.PER_CAMERA, self.TTL_MS])
        except redis.RedisError as e:
            self.fallbacks += 1
            log.warning("shared reembed gate unavailable (%s): this batch is judged by the process's own gate", e)
            return [super(SharedReembedGate, self).plan(c, t, f) for c, t, f in frames]
        return [[c == "1" for c in (s.decode() if isinstance(s, bytes) else s)] for s in res]


def _is_cluster(r) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(r, RedisCluster)
