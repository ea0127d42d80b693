"""The gallery's Lua (keys: index/store.py). Each mutation is one script that writes the truth AND appends its
change-log entry, so the two cannot diverge; the others scrub a removed person from the log and the snapshot, and
switch snapshots atomically."""

ENROLL = """
redis.replicate_commands()
local P, iid, name, meta, created, create = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = tonumber(ARGV[7])
local owner = redis.call('HGET', P .. ':names', name)
if owner then
  iid = owner
elseif redis.call('EXISTS', P .. ':ident:' .. iid) == 1 then
  return redis.error_reply('ID_TAKEN')
end
local ikey = P .. ':ident:' .. iid
if not owner then
  if create ~= '1' then return redis.error_reply('NO_IDENTITY') end
  redis.call('HSET', ikey, 'id', iid, 'name', name, 'metadata', meta, 'created', created)
  redis.call('HSET', P .. ':names', name, iid)
elseif meta ~= '' and meta ~= '{}' then
  local old = cjson.decode(redis.call('HGET', ikey, 'metadata') or '{}')
  for k, v in pairs(cjson.decode(meta)) do old[k] = v end
  redis.call('HSET', ikey, 'metadata', cjson.encode(old))
end
local added, embs = {}, {}
for i = 0, n - 1 do
  local b = 8 + i * 5
  local emb, sha, q, thumb, src = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if src == '' or redis.call('HEXISTS', ikey .. ':src', src) == 0 then
    local tid = redis.call('INCR', P .. ':seq:tpl')
    redis.call('HSET', P .. ':tpl:' .. tid, 'id', tid, 'identity', iid, 'embedding', emb, 'sha256', sha,
               'quality', q, 'thumbnail', thumb, 'created', created)
    redis.call('SADD', ikey .. ':tpls', tid)
    if src ~= '' then redis.call('HSET', ikey .. ':src', src, tid) end
    added[#added + 1] = tostring(tid)
    embs[#embs + 1] = emb
  end
end
if #added == 0 then return {iid, ''} end
local cur = redis.call('HGET', ikey, 'name')
local id = redis.call('XADD', P .. ':log', '*', 'op', 'enroll', 'identity', iid, 'name', cur,
                      'tids', table.concat(added, ','), 'emb', table.concat(embs))
redis.call('INCR', P .. ':changes')
return {iid, table.concat(added, ','), id}
"""

REMOVE = """
redis.replicate_commands()
local P, iid = ARGV[1], ARGV[2]
local ikey = P .. ':ident:' .. iid
local name = redis.call('HGET', ikey, 'name')
if not name then return redis.error_reply('NO_IDENTITY') end
local tids = redis.call('SMEMBERS', ikey .. ':tpls')
for _, t in ipairs(tids) do redis.call('DEL', P .. ':tpl:' .. t) end
redis.call('DEL', ikey, ikey .. ':tpls', ikey .. ':src')
if redis.call('HGET', P .. ':names', name) == iid then redis.call('HDEL', P .. ':names', name) end
local id = redis.call('XADD', P .. ':log', '*', 'op', 'remove', 'identity', iid)
redis.call('SET', P .. ':snap_floor', id)
redis.call('HSET', P .. ':forget', iid, id)
redis.call('INCR', P .. ':changes')
return {name, table.concat(tids, ','), id}
"""

# XDEL one chunk of a removed person's log entries older than the removal; returns the last id read ('' at the end).
FORGET_LOG = """
local P, iid, after, upto, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local rows = redis.call('XRANGE', P .. ':log', '(' .. after, '(' .. upto, 'COUNT', count)
for _, row in ipairs(rows) do
  local f = row[2]
  for i = 1, #f, 2 do
    if f[i] == 'identity' then
      if f[i + 1] == iid then redis.call('XDEL', P .. ':log', row[1]) end
      break
    end
  end
end
if #rows < count then return '' end
return rows[#rows][1]
"""

# Switch the snapshot (still generation ARGV[2]) to generation ARGV[3], whose rewritten chunks exist already: the
# untouched chunks are renamed over, the replaced ones deleted. 0 when the snapshot changed meanwhile.
SCRUB_SNAP = """
local P, gen, new, chunks = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HGET', P .. ':snap', 'gen') ~= gen then return 0 end
for c = 0, chunks - 1 do
  local old, nk = P .. ':snap:' .. gen .. ':' .. c, P .. ':snap:' .. new .. ':' .. c
  if redis.call('EXISTS', nk) == 1 then redis.call('DEL', old) else redis.call('RENAME', old, nk) end
end
redis.call('HSET', P .. ':snap', 'gen', new, 'count', ARGV[5], 'identities', ARGV[6])
return 1
"""

RENAME = """
redis.replicate_commands()
local P, iid, new = ARGV[1], ARGV[2], ARGV[3]
local ikey = P .. ':ident:' .. iid
local old = redis.call('HGET', ikey, 'name')
if not old then return redis.error_reply('NO_IDENTITY') end
local other = redis.call('HGET', P .. ':names', new)
if other and other ~= iid then return redis.error_reply('NAME_TAKEN ' .. other) end
if old == new then return {old, ''} end
redis.call('HSET', ikey, 'name', new)
redis.call('HDEL', P .. ':names', old)
redis.call('HSET', P .. ':names', new, iid)
local id = redis.call('XADD', P .. ':log', '*', 'op', 'rename', 'identity', iid, 'name', new, 'old', old)
redis.call('INCR', P .. ':changes')
return {old, id}
"""

# Replace the snapshot only with a newer one; returns the generation to delete and its chunk count: the old one, or
# the new one if stale (its chunks are deleted by name, no SCAN).
PUT_SNAP = """
local P, logid, gen = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', P .. ':snap', 'log_id')
local floor = redis.call('GET', P .. ':snap_floor')
local function parse(s) local a, b = string.match(s, '(%d+)-(%d+)'); return tonumber(a), tonumber(b) end
local a2, b2 = parse(logid)
if cur then
  local a1, b1 = parse(cur)
  if a2 < a1 or (a2 == a1 and b2 <= b1) then return {0, gen, ARGV[4]} end
end
if floor then
  local a1, b1 = parse(floor)
  if a2 < a1 or (a2 == a1 and b2 < b1) then return {0, gen, ARGV[4]} end
end
local old = redis.call('HGET', P .. ':snap', 'gen') or ''
local old_chunks = redis.call('HGET', P .. ':snap', 'chunks') or '0'
redis.call('HSET', P .. ':snap', 'log_id', logid, 'gen', gen, 'chunks', ARGV[4], 'count', ARGV[5],
           'identities', ARGV[6], 'dim', ARGV[7], 'created', ARGV[8])
redis.call('SET', P .. ':changes', 0)
return {1, old, old_chunks}
"""

