"""The Lua scripts: each write of a run, and its index entries, in one atomic step.

They mirror :mod:`outlast.transitions` (the run record's state machine) rule
for rule; the conformance suite checks that they agree. Scripts are sent
once (SCRIPT LOAD) and then called by SHA (EVALSHA); redis-py's Script object
reloads a script when the server answers NOSCRIPT (after a restart, a
failover or SCRIPT FLUSH). Times come from the server's ``TIME`` inside the
scripts, so lease expiry never depends on a worker's clock.

The run's record is a hash (``meta``) with the fields:

    v            format version (outlast's codec.FORMAT_VERSION)
    run_id, namespace, kind, owner
    status       running, waiting, completed or failed
    input        the input as JSON text
    epoch, attempts
    crashes      claims of a lease that expired without a release
    lease        the lease length in seconds, as the caller gave it
    expires_ms   lease expiry in server ms, "" when released or finished;
                 of a waiting run, when its wait times out ("" : never)
    created_ms, updated_ms
    seg          the segment the ``msgs`` list holds (== number of phases)
    incarnation  random token drawn by begin: a writer of a deleted run is
                 fenced from a new run of the same id, even at the same epoch
    op           token of the last claim/renew/release/complete/fail/cancel,
                 so a call redis-py retried after its reply was lost (the
                 write landed) answers ``ok`` again instead of failing
    cancel_requested  1 once a cancel asked the owner to stop (absent: 0)
    wait         JSON text: what a waiting run waits for (kept after it)
    delivery     JSON text: the input a send delivered (absent: none)
    usage        JSON text: the token usage a completed run reported
    result       JSON text, once completed
    error        text, once failed

``wait``, ``delivery`` and ``usage`` are absent from records written before
waiting runs existed, and read as None then (as absent ``result`` is).

Every run script takes ``KEYS = meta, phases, msgs, damaged, runs, leases``
(one slot: see keys.py; SAVE only the four it touches) and ``ARGV[1] = run
id``, and keeps the indexes exact in the same step: ``runs`` holds every
run, ``leases`` every running run scored by when it is (or became)
claimable, its lease's expiry or, once
released (or submitted, or sent its input), its last write, and every
waiting run whose wait has a timeout, scored by that timeout
(``RunRecord.interrupted_since``); a waiting run without one is not in it.
Run scripts answer a list whose first element says what happened (``ok``,
or why nothing was written), never an error reply, so the caller maps each
outcome to an outlast error.

``CLAIM_NEXT`` is the one script that is not given every key it touches: it
finds runs in the lease index and builds their keys from the namespace's key
base (``run_keys``), all on the namespace's slot, so it runs on Cluster too.
It walks at most a budget of index entries per call and answers where it
stopped, so no call blocks the server for long, however long the index.

The scripts that make a run claimable (submit, release, send, a claim handed
back) or finished (complete, fail, cancel, quarantine) announce it with PUBLISH
(``notify``): the channel ``<prefix>:changes``, the namespace's tag as the
message. Classic pub/sub, so on Cluster it reaches subscribers on every node.
"""

from __future__ import annotations

_HELPERS = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lease_ms(seconds)
  -- as outlast_redis.store.lease_ms: whole milliseconds, never 0
  return math.max(1, math.ceil(tonumber(seconds) * 1000))
end
local function notify(key)
  -- A run of the namespace of ``key`` may have become claimable or finished:
  -- PUBLISH <prefix>:changes <namespace tag> (keys.py; the prefix has no braces).
  local prefix, tag = string.match(key, '^([^{]*):{([^}]*)}')
  redis.call('PUBLISH', prefix .. ':changes', tag)
end
local function run_keys(base, run_id)
  -- keys.NamespaceKeys.run: the id percent-encoded as urllib.parse.quote(id, safe='')
  local part = string.gsub(run_id, '[^A-Za-z0-9_.~%-]', function(c)
    return string.format('%%%02X', string.byte(c))
  end)
  local run = base .. ':run:' .. part
  return run .. ':meta', run .. ':phases', run .. ':msgs'
end
local function progress(phases, msgs, inline)
  -- A claimed run's saved progress, {phases, messages}, when it holds at most
  -- ``inline`` entries; else 0, and the caller reads it with LRANGE (a
  -- script's reply copies every entry through Lua, ~4 us per KiB; LRANGE
  -- sends it straight from the list).
  if redis.call('LLEN', phases) + redis.call('LLEN', msgs) > tonumber(inline) then return 0 end
  return {redis.call('LRANGE', phases, 0, -1), redis.call('LRANGE', msgs, 0, -1)}
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
local function not_after(a, b)
  -- a <= b byte by byte, as Redis orders members (Lua's own < follows the locale)
  if a == b then return true end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function page(leases, score, member, max, count)
  -- The next entries of a lease index after the cursor (score, member; an
  -- empty score: from the start) in index order (score, then member bytes)
  -- whose score is at most ``max``; at most ``count``, as {member, score, ...}.
  -- Starts at the cursor's score: only its ties are skipped one by one.
  if score == '' then
    return redis.call('ZRANGEBYSCORE', leases, '-inf', max, 'WITHSCORES', 'LIMIT', 0, count)
  end
  local skip = 0
  for _, tied in ipairs(redis.call('ZRANGEBYSCORE', leases, score, score)) do
    if not not_after(tied, member) then break end
    skip = skip + 1
  end
  return redis.call('ZRANGEBYSCORE', leases, score, max, 'WITHSCORES', 'LIMIT', skip, count)
end
"""

_PRELUDE = (
    _HELPERS
    + """
local META, PHASES, MSGS, DAMAGED, RUNS, LEASES =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local RUN_ID = ARGV[1]
local function refused(epoch, incarnation)
  -- transitions.owned: nil when the writer at (epoch, incarnation) may
  -- write; else why not, in transitions' order.
  if redis.call('EXISTS', META) == 0 then return {'deleted'} end
  local cur = redis.call('HMGET', META, 'incarnation', 'epoch', 'status')
  if (cur[1] or '') ~= incarnation then return {'reborn'} end
  if cur[2] ~= epoch then return {'epoch', cur[2] or '?'} end
  if cur[3] ~= 'running' then return {'ended', cur[3] or '?'} end
  return nil
end
local function replayed(token)
  -- This very call already wrote (redis-py retried it after losing the reply).
  return redis.call('HGET', META, 'op') == token
end
local function cancel_requested()
  return redis.call('HGET', META, 'cancel_requested') or '0'
end
local function restore(first)
  -- Hand back a claim: the fields CLAIM changed as they were before it
  -- (its 'before', ARGV[first..]).
  redis.call('HDEL', META, 'status', 'epoch', 'attempts', 'crashes', 'owner', 'lease',
    'expires_ms', 'updated_ms', 'op')
  redis.call('HSET', META, unpack(ARGV, first, #ARGV))
end
"""
)

_TAKE = """
local function take(meta, phases, msgs, leases, run_id, owner, lease, token, version, now,
    inline)
  -- transitions.claim of the run at these keys. Answers {'ok', before,
  -- record, progress}: 'before' holds the fields the claim changed as they
  -- were (field, value, ...), so a run whose progress does not decode can
  -- be handed back (UNCLAIM); 'progress' as progress() answers it (at most
  -- ``inline`` entries, else 0: read it with LRANGE); {'none'} when the run is absent,
  -- finished, its lease live or its wait not timed out; {'corrupt', what}
  -- or {'version', v} when the record cannot be judged.
  local cur = redis.call('HMGET', meta, 'status', 'expires_ms', 'v')
  if cur[1] == 'completed' or cur[1] == 'failed' or redis.call('EXISTS', meta) == 0 then
    return {'none'}
  end
  local waiting = cur[1] == 'waiting'
  if cur[1] ~= 'running' and not waiting then return {'corrupt', 'status'} end
  if cur[3] ~= version then return {'version', cur[3] or ''} end
  local crashed = 0
  if cur[2] ~= '' then
    local expires = tonumber(cur[2])
    if expires == nil then return {'corrupt', 'lease expiry'} end
    if expires > now then return {'none'} end
    -- expired, never released: its owner died; a wait that timed out is no crash
    if not waiting then crashed = 1 end
  elseif waiting then
    return {'none'}  -- a wait without a timeout: only a send makes it claimable
  end
  local before = {}
  for _, field in ipairs({'status', 'epoch', 'attempts', 'crashes', 'owner', 'lease',
      'expires_ms', 'updated_ms', 'op'}) do
    local value = redis.call('HGET', meta, field)
    if value then table.insert(before, field); table.insert(before, value) end
  end
  local counts = redis.call('HMGET', meta, 'epoch', 'attempts', 'crashes')
  local epoch, attempts = tonumber(counts[1]), tonumber(counts[2])
  local crashes = tonumber(counts[3] or '0')  -- absent reads as 0, as in RunRecord
  if epoch == nil or attempts == nil or crashes == nil then return {'corrupt', 'epoch'} end
  local expires = now + lease_ms(lease)
  redis.call('HSET', meta, 'status', 'running', 'epoch', epoch + 1, 'attempts', attempts + 1,
    'crashes', crashes + crashed, 'owner', owner, 'lease', lease,
    'expires_ms', expires, 'updated_ms', now, 'op', token)
  redis.call('ZADD', leases, expires, run_id)
  return {'ok', before, redis.call('HGETALL', meta), progress(phases, msgs, inline)}
end
"""

CREATE = (
    _PRELUDE
    + """
-- transitions.begin or, when ARGV[9] is 'submit', transitions.submit.
-- ARGV: run_id, version, namespace, kind, input, owner, lease (seconds),
-- incarnation, 'begin' or 'submit'.
if redis.call('EXISTS', META) == 1 then
  -- the same incarnation: this very call landed and redis-py retried it
  if redis.call('HGET', META, 'incarnation') == ARGV[8] then return {'ok'} end
  return {'exists'}
end
redis.call('DEL', PHASES, MSGS, DAMAGED)
local now = now_ms()
local epoch, owner, expires, claimable = 1, ARGV[6], now + lease_ms(ARGV[7]), nil
if ARGV[9] == 'submit' then
  -- nobody owns it yet: claimable at once, since its submit (updated_ms)
  epoch, owner, expires, claimable = 0, '', '', now
end
redis.call('HSET', META, 'v', ARGV[2], 'run_id', RUN_ID, 'namespace', ARGV[3],
  'kind', ARGV[4], 'input', ARGV[5], 'owner', owner, 'status', 'running',
  'epoch', epoch, 'attempts', epoch, 'crashes', 0, 'lease', ARGV[7], 'expires_ms', expires,
  'created_ms', now, 'updated_ms', now, 'seg', 0, 'incarnation', ARGV[8],
  'cancel_requested', 0)
redis.call('ZADD', RUNS, 0, RUN_ID)
redis.call('ZADD', LEASES, claimable or expires, RUN_ID)
if claimable then notify(META) end
return {'ok'}
"""
)

SAVE = (
    _HELPERS
    + """
-- transitions.save, plus the delta. KEYS: meta, phases, msgs, leases (only
-- the four it touches: RunKeys.saved). ARGV: run_id, epoch, incarnation,
-- first_phase, segment, first_message, n_phases, phases..., messages...
-- Answers {'ok', cancel_requested}. The hot path, kept short: one HMGET
-- reads every field it judges (refused()'s checks in refused()'s order; a
-- save changes none of them but seg), so a save is six commands.
local META, PHASES, MSGS, LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local RUN_ID = ARGV[1]
local cur = redis.call('HMGET', META, 'incarnation', 'epoch', 'status', 'seg', 'expires_ms',
  'cancel_requested')
if not cur[3] and redis.call('EXISTS', META) == 0 then return {'deleted'} end
if (cur[1] or '') ~= ARGV[3] then return {'reborn'} end
if cur[2] ~= ARGV[2] then return {'epoch', cur[2] or '?'} end
if cur[3] ~= 'running' then return {'ended', cur[3] or '?'} end
local first_phase = tonumber(ARGV[4])
local segment = tonumber(ARGV[5])
local first_message = tonumber(ARGV[6])
local n_phases = tonumber(ARGV[7])
local stored_phases = redis.call('LLEN', PHASES)
if first_phase > stored_phases then return {'state', 'phases', stored_phases} end
local stored_segment = tonumber(cur[4] or '0')
if segment < stored_segment then return {'state', 'segment', stored_segment} end
local stored_messages = 0
if segment == stored_segment then stored_messages = redis.call('LLEN', MSGS) end
if first_message > stored_messages then return {'state', 'messages', stored_messages} end
-- A retried save (its reply was lost) rewrites the same tail: idempotent.
if first_phase < stored_phases then truncate(PHASES, first_phase) end
push(PHASES, 8, 7 + n_phases)
if segment > stored_segment then
  redis.call('DEL', MSGS)
  redis.call('HSET', META, 'seg', segment)
elseif first_message < stored_messages then
  truncate(MSGS, first_message)
end
push(MSGS, 8 + n_phases, #ARGV)
local now = now_ms()
redis.call('HSET', META, 'updated_ms', now)
-- A released run is claimable since its last write.
if cur[5] == '' then redis.call('ZADD', LEASES, now, RUN_ID) end
return {'ok', cur[6] or '0'}
"""
)

COMPLETE = (
    _PRELUDE
    + """
-- transitions.complete. ARGV: run_id, epoch, incarnation, result JSON,
-- ttl_ms (0: keep the terminal record until purged), token, usage JSON
if replayed(ARGV[6]) then return {'ok'} end
local bad = refused(ARGV[2], ARGV[3])
if bad then return bad end
redis.call('DEL', PHASES, MSGS)
redis.call('HSET', META, 'status', 'completed', 'result', ARGV[4], 'usage', ARGV[7],
  'expires_ms', '', 'seg', 0, 'updated_ms', now_ms(), 'op', ARGV[6])
redis.call('ZREM', LEASES, RUN_ID)
local ttl = tonumber(ARGV[5])
if ttl > 0 then redis.call('PEXPIRE', META, ttl) end
notify(META)
return {'ok'}
"""
)

FAIL = (
    _PRELUDE
    + """
-- transitions.fail. ARGV: run_id, epoch, incarnation, error text, token
if replayed(ARGV[5]) then return {'ok'} end
local bad = refused(ARGV[2], ARGV[3])
if bad then return bad end
redis.call('HSET', META, 'status', 'failed', 'error', ARGV[4], 'expires_ms', '',
  'updated_ms', now_ms(), 'op', ARGV[5])
redis.call('ZREM', LEASES, RUN_ID)
notify(META)
return {'ok'}
"""
)

RELEASE = (
    _PRELUDE
    + """
-- transitions.release. ARGV: run_id, epoch, incarnation, token
if replayed(ARGV[4]) then return {'ok'} end
local bad = refused(ARGV[2], ARGV[3])
if bad then return bad end
local now = now_ms()
redis.call('HSET', META, 'expires_ms', '', 'updated_ms', now, 'op', ARGV[4])
redis.call('ZADD', LEASES, now, RUN_ID)
notify(META)
return {'ok'}
"""
)

RENEW = (
    _PRELUDE
    + """
-- transitions.renew. ARGV: run_id, epoch, incarnation, token
-- Answers {'ok', cancel_requested}.
if replayed(ARGV[4]) then return {'ok', cancel_requested()} end
local bad = refused(ARGV[2], ARGV[3])
if bad then return bad end
local now = now_ms()
local expires = now + lease_ms(redis.call('HGET', META, 'lease'))
redis.call('HSET', META, 'expires_ms', expires, 'updated_ms', now, 'op', ARGV[4])
redis.call('ZADD', LEASES, expires, RUN_ID)
return {'ok', cancel_requested()}
"""
)

WAIT = (
    _PRELUDE
    + """
-- transitions.wait. ARGV: run_id, epoch, incarnation, request JSON, the wait's
-- timeout in ms ('' for none), token. The wait's timeout is the lease index
-- score (claimable then, no crash); a wait without one leaves the index.
if replayed(ARGV[6]) then return {'ok'} end
local bad = refused(ARGV[2], ARGV[3])
if bad then return bad end
local now = now_ms()
local expires = ''
if ARGV[5] ~= '' then expires = now + tonumber(ARGV[5]) end
redis.call('HDEL', META, 'delivery')
redis.call('HSET', META, 'status', 'waiting', 'wait', ARGV[4], 'expires_ms', expires,
  'updated_ms', now, 'op', ARGV[6])
if expires == '' then
  redis.call('ZREM', LEASES, RUN_ID)
else
  redis.call('ZADD', LEASES, expires, RUN_ID)
end
return {'ok'}
"""
)

SEND = (
    _PRELUDE
    + """
-- transitions.send. ARGV: run_id, version, delivery JSON, token
-- Answers {'ok', record after}, or why not: {'absent'}, {'not waiting', status},
-- {'version', v}. The run becomes running with its lease released, scored
-- and announced as a release is.
if replayed(ARGV[4]) then return {'ok', redis.call('HGETALL', META)} end
if redis.call('EXISTS', META) == 0 then return {'absent'} end
local cur = redis.call('HMGET', META, 'status', 'v')
if cur[2] ~= ARGV[2] then return {'version', cur[2] or ''} end
if cur[1] ~= 'waiting' then return {'not waiting', cur[1] or ''} end
local now = now_ms()
redis.call('HSET', META, 'status', 'running', 'delivery', ARGV[3], 'expires_ms', '',
  'updated_ms', now, 'op', ARGV[4])
redis.call('ZADD', LEASES, now, RUN_ID)
notify(META)
return {'ok', redis.call('HGETALL', META)}
"""
)

CANCEL = (
    _PRELUDE
    + """
-- transitions.cancel. ARGV: run_id, version, error text (transitions.CANCELLED), token
-- Answers {'ok', record after}, or why not: {'absent'}, {'finished', status},
-- {'corrupt', what}, {'version', v}.
if replayed(ARGV[4]) then return {'ok', redis.call('HGETALL', META)} end
if redis.call('EXISTS', META) == 0 then return {'absent'} end
local cur = redis.call('HMGET', META, 'status', 'expires_ms', 'epoch', 'v')
if cur[4] ~= ARGV[2] then return {'version', cur[4] or ''} end
if cur[1] == 'completed' or cur[1] == 'failed' then return {'finished', cur[1]} end
if cur[1] ~= 'running' and cur[1] ~= 'waiting' then return {'corrupt', 'status'} end
local now = now_ms()
local expires = nil
if cur[2] ~= '' then
  expires = tonumber(cur[2])
  if expires == nil then return {'corrupt', 'lease expiry'} end
end
if cur[1] == 'waiting' or expires == nil or expires <= now then
  -- nobody owns it (waiting, queued, released, expired): failed at once, at
  -- the next epoch (fencing a late writer)
  local epoch = tonumber(cur[3])
  if epoch == nil then return {'corrupt', 'epoch'} end
  redis.call('HSET', META, 'status', 'failed', 'error', ARGV[3], 'epoch', epoch + 1,
    'expires_ms', '', 'cancel_requested', 1, 'updated_ms', now, 'op', ARGV[4])
  redis.call('ZREM', LEASES, RUN_ID)
  notify(META)
else
  -- its owner sees the request at its next save or renewal
  redis.call('HSET', META, 'cancel_requested', 1, 'updated_ms', now, 'op', ARGV[4])
end
return {'ok', redis.call('HGETALL', META)}
"""
)

CLAIM = (
    _PRELUDE
    + _TAKE
    + """
-- transitions.claim. ARGV: run_id, owner, lease (seconds), token, version,
-- inline (the most entries of progress answered inline). Answers as take();
-- {'again', {}, record, progress} when this very claim landed and redis-py
-- retried it.
if replayed(ARGV[4]) then
  return {'again', {}, redis.call('HGETALL', META), progress(PHASES, MSGS, ARGV[6])}
end
return take(META, PHASES, MSGS, LEASES, RUN_ID, ARGV[2], ARGV[3], ARGV[4], ARGV[5], now_ms(),
  ARGV[6])
"""
)

CLAIM_NEXT = (
    _HELPERS
    + _TAKE
    + """
-- The claim of the oldest claimable run of some kinds (transitions.claim),
-- walking the lease index in order from a cursor, at most ``budget`` entries.
-- KEYS: leases, claimed (NamespaceKeys.claimed of this call's token).
-- ARGV: the namespace's key base, owner, lease (seconds), token, version,
-- budget, inline (as CLAIM's), the cursor (score, run id; '' '' for the
-- start), the kinds... The runs' keys are built from the base (run_keys):
-- same tag, same slot. Answers {'ok' or 'again', run_id, score, before,
-- record, progress} (as take(); 'again': this very call landed and redis-py
-- retried it);
-- {'judge', run_id, score, record} for a run of those kinds whose record
-- this script cannot judge (the caller quarantines it and calls again from
-- there); {'more', score, run_id} when the budget ran out; {'none'} when
-- nothing is claimable. A run of another format version is skipped (left
-- to the outlast that wrote it), as interrupted() skips it.
local LEASES, CLAIMED = KEYS[1], KEYS[2]
local base, owner, lease, token, version = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local budget, inline = tonumber(ARGV[6]), ARGV[7]
local taken_before = redis.call('GET', CLAIMED)
if taken_before then
  local meta, phases, msgs = run_keys(base, taken_before)
  if redis.call('HGET', meta, 'op') == token then
    return {'again', taken_before, '', {}, redis.call('HGETALL', meta),
      progress(phases, msgs, inline)}
  end
end
local wanted = {}
for i = 10, #ARGV do wanted[ARGV[i]] = true end
local now = now_ms()
local entries = page(LEASES, ARGV[8], ARGV[9], now, budget)
for i = 1, #entries, 2 do
  local run_id, score = entries[i], entries[i + 1]
  local meta, phases, msgs = run_keys(base, run_id)
  if wanted[redis.call('HGET', meta, 'kind')] then
    local taken = take(meta, phases, msgs, LEASES, run_id, owner, lease, token, version, now,
      inline)
    if taken[1] == 'ok' then
      redis.call('SET', CLAIMED, run_id, 'PX', 60000)
      return {'ok', run_id, score, taken[2], taken[3], taken[4]}
    end
    local other_version = taken[1] == 'version' and tonumber(taken[2]) ~= nil
    if taken[1] ~= 'none' and not other_version then
      return {'judge', run_id, score, redis.call('HGETALL', meta)}
    end
  end
end
if #entries < 2 * budget then return {'none'} end
return {'more', entries[#entries], entries[#entries - 1]}
"""
)

UNCLAIM = (
    _PRELUDE
    + """
-- Undo a claim whose run does not decode. ARGV: run_id, the claimed epoch,
-- then the 'before' of CLAIM (field, value, ...). Only while nobody wrote since.
if redis.call('HGET', META, 'epoch') ~= ARGV[2] then return {'lost'} end
restore(3)
local since = redis.call('HMGET', META, 'expires_ms', 'updated_ms')
if since[1] and since[1] ~= '' then
  redis.call('ZADD', LEASES, since[1], RUN_ID)
else
  redis.call('ZADD', LEASES, since[2], RUN_ID)
end
notify(META)
return {'ok'}
"""
)

QUARANTINE_CLAIMED = (
    _PRELUDE
    + """
-- claim_next took a run whose record or progress does not decode: hand the
-- claim back (as UNCLAIM) and quarantine the run (transitions.quarantine),
-- in one step. ARGV: run_id, the claimed epoch, reason, then the claim's
-- 'before' (none for a replayed claim). Answers 1 when quarantined.
if redis.call('HGET', META, 'epoch') ~= ARGV[2] then return 0 end
if #ARGV > 3 then restore(4) end
local epoch = tonumber(redis.call('HGET', META, 'epoch'))
redis.call('HSET', META, 'status', 'failed', 'error', ARGV[3], 'epoch', epoch + 1,
  'expires_ms', '', 'updated_ms', now_ms())
redis.call('ZREM', LEASES, RUN_ID)
notify(META)
return 1
"""
)

QUARANTINE = (
    _PRELUDE
    + """
-- transitions.quarantine. ARGV: run_id, reason, version, namespace
-- Answers 1 when the run was quarantined, 0 when it was left alone.
if redis.call('EXISTS', META) == 0 then return 0 end
local now = now_ms()
local cur = redis.call('HMGET', META, 'v', 'status', 'expires_ms', 'epoch')
local version = tonumber(cur[1] or '')
if version ~= nil and version ~= tonumber(ARGV[3]) then
  return 0  -- another format version: a newer outlast's to judge
end
local unfinished = cur[2] == 'running' or cur[2] == 'waiting'
local known = unfinished or cur[2] == 'completed' or cur[2] == 'failed'
local lease = cur[3] == '' or tonumber(cur[3] or '') ~= nil
if version ~= nil and known and lease and tonumber(cur[4] or '') ~= nil then
  -- transitions.is_interrupted: running and released or expired, or waiting
  -- with a timeout that passed
  if not unfinished then return 0 end
  if cur[3] == '' and cur[2] == 'waiting' then return 0 end
  if cur[3] ~= '' and tonumber(cur[3]) > now then return 0 end
  redis.call('HSET', META, 'status', 'failed', 'error', ARGV[2], 'epoch', tonumber(cur[4]) + 1,
    'expires_ms', '', 'updated_ms', now)
  redis.call('ZREM', LEASES, RUN_ID)
  notify(META)
  return 1
end
-- Too damaged to say whether it is interrupted: its lease index entry,
-- which every write keeps exact, says. The damaged record is kept beside
-- the failed stub (transitions.quarantined_stub) that replaces it.
local since = redis.call('ZSCORE', LEASES, RUN_ID)
if not since or tonumber(since) > now then return 0 end
redis.call('RENAME', META, DAMAGED)
redis.call('HSET', META, 'v', ARGV[3], 'run_id', RUN_ID, 'namespace', ARGV[4], 'kind', '',
  'input', 'null', 'owner', '', 'status', 'failed', 'epoch', 0, 'attempts', 0, 'crashes', 0,
  'lease', 0, 'expires_ms', '', 'created_ms', now, 'updated_ms', now, 'seg', 0,
  'incarnation', '', 'error', ARGV[2])
redis.call('ZREM', LEASES, RUN_ID)
notify(META)
return 1
"""
)

LOAD = """
-- Answers {record, phases, messages}; an empty record when the run is absent.
-- Used only where the client cannot send MULTI/EXEC (Redis Cluster with a
-- redis-py older than its cluster transactions): otherwise load reads the
-- same three in one transaction, which spares the copy through Lua.
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1)}
"""

DELETE = (
    _PRELUDE
    + """
-- ARGV: run_id. Removes the run and its index entries; answers 1 if it existed.
local existed = redis.call('EXISTS', META)
redis.call('DEL', META, PHASES, MSGS, DAMAGED)
redis.call('ZREM', RUNS, RUN_ID)
redis.call('ZREM', LEASES, RUN_ID)
return existed
"""
)

FORGET = (
    _PRELUDE
    + """
-- ARGV: run_id. Drops the index entries of a run whose record is gone (a
-- completed record that completed_ttl expired); a run that exists stays.
if redis.call('EXISTS', META) == 1 then return 0 end
redis.call('DEL', PHASES, MSGS, DAMAGED)
redis.call('ZREM', RUNS, RUN_ID)
redis.call('ZREM', LEASES, RUN_ID)
return 1
"""
)

PURGE = (
    _HELPERS
    + """
-- Retention (transitions.purgeable) of a batch of runs of one namespace.
-- KEYS: runs, leases, then meta, phases, msgs, damaged of each run.
-- ARGV: older_than_ms, then the run ids. Answers how many were deleted.
local cutoff = now_ms() - tonumber(ARGV[1])
local deleted = 0
for i = 2, #ARGV do
  local first = 3 + (i - 2) * 4
  local meta = KEYS[first]
  local cur = redis.call('HMGET', meta, 'status', 'updated_ms')
  local gone = redis.call('EXISTS', meta) == 0
  local finished = cur[1] == 'completed' or cur[1] == 'failed'
  local updated = tonumber(cur[2] or '')
  if gone or (finished and updated ~= nil and updated < cutoff) then
    if not gone then deleted = deleted + 1 end
    redis.call('DEL', meta, KEYS[first + 1], KEYS[first + 2], KEYS[first + 3])
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
  end
end
return deleted
"""
)

CANDIDATES = (
    _HELPERS
    + """
-- The next entries of the lease index whose time has come, in index order
-- (score, then run id bytes), after the cursor (ARGV: score, run_id; '' for
-- the start) and at most ARGV[3] of them. KEYS: leases.
-- Answers {server now in ms, {run_id, score, ...}}.
local now = now_ms()
return {now, page(KEYS[1], ARGV[1], ARGV[2], now, tonumber(ARGV[3]))}
"""
)
