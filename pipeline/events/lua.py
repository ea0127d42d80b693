"""The event store's Lua (pipeline/events/store.py runs it): the atomic commit, the Redis Cluster outbox step, and
the chunked scrub of a purged person's entries from the events stream."""

# ARGV[1]: JSON op. Returns the number of events newly written, or -1 when the fence (lease) does not match.
COMMIT = r"""
local op = cjson.decode(ARGV[1])
if op.fence and op.fence ~= cjson.null then
  if redis.call('GET', op.fence[1]) ~= op.fence[2] then return -1 end
end
local n = 0
for _, ev in ipairs(op.events) do
  if redis.call('SET', ev.done, '1', 'NX', 'EX', op.done_ttl) then
    n = n + 1
    redis.call('HSET', ev.key, 'j', ev.json, 'camera', ev.camera, 'type', ev.type, 'identity_id', ev.identity_id,
               'name', ev.name, 'track', ev.track, 'snap', ev.snap, 'ts', ev.ts)
    redis.call('EXPIRE', ev.key, op.retention_s)
    for _, z in ipairs(ev.zsets) do redis.call('ZADD', z, ev.ts, ev.id) end
    redis.call('SADD', ev.track_key, ev.id)
    redis.call('EXPIRE', ev.track_key, op.retention_s)
    if ev.snap_key ~= '' then redis.call('EXPIRE', ev.snap_key, op.retention_s) end
    if op.maxlen > 0 then
      redis.call('XADD', op.stream, 'MAXLEN', '~', op.maxlen, '*', 'm', ev.json)
    else
      redis.call('XADD', op.stream, '*', 'm', ev.json)
    end
    if op.channel ~= '' then redis.call('PUBLISH', op.channel, ev.json) end
  end
end
for _, kv in ipairs(op.sets) do
  if kv[3] then redis.call('SET', kv[1], kv[2], 'EX', kv[3]) else redis.call('SET', kv[1], kv[2]) end
end
if op.xadds then
  for _, xa in ipairs(op.xadds) do redis.call('XADD', xa[1], '*', xa[2], xa[3]) end
end
if op.ack and op.ack ~= cjson.null and #op.ack.ids > 0 then
  redis.call('XACK', op.ack.stream, op.ack.group, unpack(op.ack.ids))
  if op.ack.delete then redis.call('XDEL', op.ack.stream, unpack(op.ack.ids)) end
end
return n
"""


# Redis Cluster, step 1 of a matcher commit, in the CAMERA's slot (KEYS[1] = its outbox stream): only if the lease
# (op.fence, camera slot) is still ours, write the checkpoint/progress (op.sets), ack (and XDEL) the applied input
# entries, and append the events' commit op (op.entry, a JSON string: what _COMMIT takes) to the outbox.
# Returns the outbox entry id ('' when there was nothing to append), or -1 when fenced off (nothing written).
OUTBOX = r"""
local op = cjson.decode(ARGV[1])
if op.fence and op.fence ~= cjson.null then
  if redis.call('GET', op.fence[1]) ~= op.fence[2] then return -1 end
end
for _, kv in ipairs(op.sets) do
  if kv[3] then redis.call('SET', kv[1], kv[2], 'EX', kv[3]) else redis.call('SET', kv[1], kv[2]) end
end
if op.ack and op.ack ~= cjson.null and #op.ack.ids > 0 then
  redis.call('XACK', op.ack.stream, op.ack.group, unpack(op.ack.ids))
  if op.ack.delete then redis.call('XDEL', op.ack.stream, unpack(op.ack.ids)) end
end
if op.entry ~= '' then return redis.call('XADD', KEYS[1], '*', 'op', op.entry) end
return ''
"""


# XDEL one chunk of events-stream entries of a purged person (KEYS[1] = the stream; ARGV: after (exclusive),
# count, JSON {identity_id, ids, tracks}). Matched here so the events never travel; returns {last id read or '', n}.
PURGE_STREAM = r"""
local after, count, who = ARGV[1], tonumber(ARGV[2]), cjson.decode(ARGV[3])
local ids, tracks = {}, {}
for _, x in ipairs(who.ids) do ids[x] = true end
for _, x in ipairs(who.tracks) do tracks[x] = true end
local rows = redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', count)
local n = 0
for _, row in ipairs(rows) do
  local f = row[2]
  for i = 1, #f, 2 do
    if f[i] == 'm' then
      local ok, ev = pcall(cjson.decode, f[i + 1])
      if ok and type(ev) == 'table' and (ids[ev.id] or tracks[ev.track_id]
          or (who.identity_id ~= '' and ev.identity_id == who.identity_id)) then
        n = n + redis.call('XDEL', KEYS[1], row[1])
      end
      break
    end
  end
end
if #rows < count then return {'', n} end
return {rows[#rows][1], n}
"""
