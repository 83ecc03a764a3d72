"""The Lua scripts: every write of a run is one atomic script on the run's slot.

Scripts are sent once (SCRIPT LOAD) and then called by SHA (EVALSHA);
redis-py's Script object reloads a script when the server answers NOSCRIPT
(after a restart, a failover or SCRIPT FLUSH). Times come from the server's
``TIME`` inside the scripts, so lease expiry never depends on a worker's clock.

The run's record is a hash (``meta``) with the fields:

    v            format version (outlast.codec.FORMAT_VERSION)
    run_id, namespace, kind, owner, status
    input        the input as JSON text
    epoch, attempts
    lease_ms     the lease length, for renew
    expires_ms   lease expiry in server ms, "" when released or finished
    created_ms, updated_ms
    seg          the segment the ``msgs`` list holds (== number of phases)
    op           token of the last begin/claim/renew/release/complete/fail, so
                 a call redis-py retried after its reply was lost (the write
                 landed) answers ``ok`` again instead of failing
    result       JSON text, once completed
    error        text, once failed

Run scripts take ``KEYS = meta, phases, msgs`` and answer a list whose first
element says what happened (``ok``, or why nothing was written), never an
error reply, so the caller maps each outcome to an outlast error.
"""

from __future__ import annotations

_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owned(epoch)
  local cur = redis.call('HMGET', KEYS[1], 'epoch', 'status')
  if not cur[1] then return 'gone' end
  if cur[1] ~= epoch then return 'lost' end
  if cur[2] ~= 'running' then return cur[2] end
  return nil
end
local function replayed(token)
  -- This very call already wrote (redis-py retried it after losing the reply).
  return redis.call('HGET', KEYS[1], 'op') == token
end
local function push(key, first, last)
  -- unpack in chunks: Lua's stack is limited to a few thousand values
  local i = first
  while i <= last do
    local j = math.min(i + 999, last)
    redis.call('RPUSH', key, unpack(ARGV, i, j))
    i = j + 1
  end
end
local function truncate(key, length)
  if length == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, 0, length - 1) end
end
"""

BEGIN = (
    _PRELUDE
    + """
-- ARGV: version, run_id, namespace, kind, input, owner, lease_ms, token
if redis.call('EXISTS', KEYS[1]) == 1 then
  if replayed(ARGV[8]) then return {'ok', tonumber(redis.call('HGET', KEYS[1], 'expires_ms'))} end
  return {'exists'}
end
redis.call('DEL', KEYS[2], KEYS[3])
local now = now_ms()
local expires = now + tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'run_id', ARGV[2], 'namespace', ARGV[3],
  'kind', ARGV[4], 'input', ARGV[5], 'owner', ARGV[6], 'status', 'running',
  'epoch', 1, 'attempts', 1, 'lease_ms', ARGV[7], 'expires_ms', expires,
  'created_ms', now, 'updated_ms', now, 'seg', 0, 'op', ARGV[8])
return {'ok', expires}
"""
)

SAVE = (
    _PRELUDE
    + """
-- ARGV: epoch, first_phase, segment, first_message, n_phases, phases..., messages...
local bad = owned(ARGV[1])
if bad then return {bad} end
local first_phase = tonumber(ARGV[2])
local segment = tonumber(ARGV[3])
local first_message = tonumber(ARGV[4])
local n_phases = tonumber(ARGV[5])
local stored_phases = redis.call('LLEN', KEYS[2])
if first_phase > stored_phases then return {'state', 'phases', stored_phases} end
local stored_segment = tonumber(redis.call('HGET', KEYS[1], 'seg') or '0')
if segment < stored_segment then return {'state', 'segment', stored_segment} end
local stored_messages = 0
if segment == stored_segment then stored_messages = redis.call('LLEN', KEYS[3]) end
if first_message > stored_messages then return {'state', 'messages', stored_messages} end
-- A retried save (its reply was lost) rewrites the same tail: idempotent.
if first_phase < stored_phases then truncate(KEYS[2], first_phase) end
push(KEYS[2], 6, 5 + n_phases)
if segment > stored_segment then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[1], 'seg', segment)
elseif first_message < stored_messages then
  truncate(KEYS[3], first_message)
end
push(KEYS[3], 6 + n_phases, #ARGV)
redis.call('HSET', KEYS[1], 'updated_ms', now_ms())
return {'ok'}
"""
)

COMPLETE = (
    _PRELUDE
    + """
-- ARGV: epoch, result JSON, ttl_ms (0: keep the terminal record until purged), token
if replayed(ARGV[4]) then return {'ok'} end
local bad = owned(ARGV[1])
if bad then return {bad} end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'status', 'completed', 'result', ARGV[2], 'expires_ms', '',
  'seg', 0, 'updated_ms', now_ms(), 'op', ARGV[4])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {'ok'}
"""
)

FAIL = (
    _PRELUDE
    + """
-- ARGV: epoch, error text, token
if replayed(ARGV[3]) then return {'ok'} end
local bad = owned(ARGV[1])
if bad then return {bad} end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2], 'expires_ms', '',
  'updated_ms', now_ms(), 'op', ARGV[3])
return {'ok'}
"""
)

RELEASE = (
    _PRELUDE
    + """
-- ARGV: epoch, token
if replayed(ARGV[2]) then return {'ok'} end
local bad = owned(ARGV[1])
if bad then return {bad} end
redis.call('HSET', KEYS[1], 'expires_ms', '', 'updated_ms', now_ms(), 'op', ARGV[2])
return {'ok'}
"""
)

RENEW = (
    _PRELUDE
    + """
-- ARGV: epoch, token
if replayed(ARGV[2]) then
  return {'ok', tonumber(redis.call('HGET', KEYS[1], 'expires_ms'))}
end
local bad = owned(ARGV[1])
if bad then return {bad} end
local now = now_ms()
local expires = now + tonumber(redis.call('HGET', KEYS[1], 'lease_ms'))
redis.call('HSET', KEYS[1], 'expires_ms', expires, 'updated_ms', now, 'op', ARGV[2])
return {'ok', expires}
"""
)

CLAIM = (
    _PRELUDE
    + """
-- ARGV: owner, lease_ms, token
-- Answers {'ok', before, record, phases, messages}: 'before' holds the fields
-- the claim changed, so an undecodable run can be handed back untouched.
if replayed(ARGV[3]) then
  return {'again', {}, redis.call('HGETALL', KEYS[1]),
    redis.call('LRANGE', KEYS[2], 0, -1), redis.call('LRANGE', KEYS[3], 0, -1)}
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
if cur[1] ~= 'running' then return {'none'} end
local now = now_ms()
if cur[2] and cur[2] ~= '' then
  local expires = tonumber(cur[2])
  if expires == nil then return {'corrupt', 'expires_ms'} end
  if expires > now then return {'none'} end
end
local fields = {'epoch', 'attempts', 'owner', 'lease_ms', 'expires_ms', 'updated_ms'}
local before = redis.call('HMGET', KEYS[1], unpack(fields))
for i = 1, #before do if not before[i] then before[i] = '' end end
if tonumber(before[1]) == nil or tonumber(before[2]) == nil then
  return {'corrupt', 'epoch'}
end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_ms', ARGV[2],
  'expires_ms', now + tonumber(ARGV[2]), 'updated_ms', now, 'op', ARGV[3])
return {'ok', before, redis.call('HGETALL', KEYS[1]),
  redis.call('LRANGE', KEYS[2], 0, -1), redis.call('LRANGE', KEYS[3], 0, -1)}
"""
)

UNCLAIM = (
    _PRELUDE
    + """
-- ARGV: the claimed epoch, then epoch, attempts, owner, lease_ms, expires_ms,
-- updated_ms as they were before the claim. Only while nobody wrote since.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return {'lost'} end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'attempts', ARGV[3], 'owner', ARGV[4],
  'lease_ms', ARGV[5], 'expires_ms', ARGV[6], 'updated_ms', ARGV[7])
return {'ok'}
"""
)

LOAD = """
-- Answers {record, phases, messages}; an empty record when the run is absent.
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1)}
"""

RECORD = (
    _PRELUDE
    + """
-- Answers {server now in ms, record}: to judge a lease by the run's own server.
return {now_ms(), redis.call('HGETALL', KEYS[1])}
"""
)

PURGE = (
    _PRELUDE
    + """
-- ARGV: older_than_ms. Deletes the run if terminal and last updated before then.
local cur = redis.call('HMGET', KEYS[1], 'status', 'updated_ms')
if not cur[1] then return {'gone'} end
if cur[1] == 'running' then return {'kept'} end
local updated = tonumber(cur[2])
if updated ~= nil and updated >= now_ms() - tonumber(ARGV[1]) then return {'kept'} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {'deleted'}
"""
)

# Index scripts take KEYS = runs, leases (one namespace's slot).

INDEX_RESERVE = """
-- ARGV: run_id. Before a run is created, so a crash after creating it never
-- leaves it out of the indexes; score 0 makes interrupted() look at it.
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[1])
return 1
"""

INDEX_CONFIRM = """
-- ARGV: run_id, expires_ms. After begin: the true lease expiry.
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

INDEX_HEAL = """
-- ARGV: run_id, score seen, true expiry. Raise a stale score, unless the entry
-- changed since it was read (a release lowered it meanwhile).
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
return 0
"""

INDEX_FORGET = """
-- ARGV: run_id. The run is gone: drop it from both indexes.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

INDEX_CANDIDATES = (
    _PRELUDE
    + """
-- ARGV: offset, count. Answers {now in ms, [run_id, score, ...]}: the runs
-- whose indexed lease expired by this server's clock.
local now = now_ms()
return {now, redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES',
  'LIMIT', ARGV[1], ARGV[2])}
"""
)
