"""A stream's state changes, each one Lua script so that Redis runs it atomically.

Every key a script touches shares the streams' hash tag (`StreamKeys`), so the
scripts also run on a Redis Cluster. Rows move buffer (`rows`) -> a batch taken
by one replica (`batch:<token>`, claimed in `claims` until a deadline) ->
`results`; only the `take` below moves them out of the buffer, which is what
keeps two replicas from ever sending the same rows to Triton. A batch whose
replica stopped before storing its results goes back to the buffer (RECLAIM),
and a late STORE of a reclaimed batch changes nothing.
"""

from __future__ import annotations

# Shared by SEND, TAKE_DUE and CLOSE: every buffered row into the batch `batch`,
# claimed until `claim_until`. -> the taken seq/row pairs (empty when none).
_TAKE = """
local function take(session, rows, batch, claims, due, sid, member, claim_until, ttl)
  local flat = redis.call('HGETALL', rows)
  redis.call('ZREM', due, sid)
  if #flat == 0 then return {} end
  for i = 1, #flat, 2 do redis.call('HSET', batch, flat[i], flat[i + 1]) end
  redis.call('EXPIRE', batch, ttl)
  redis.call('DEL', rows)
  redis.call('ZADD', claims, claim_until, member)
  redis.call('HINCRBY', session, 'inflight', #flat / 2)
  return flat
end
"""

# Every key of an open session gets the idle TTL again; its entry in the key's
# open streams is kept until then.
_TOUCH = """
local function touch(ttl, owned, stream_id, until_ms, session, rows, seqs, results)
  for _, key in ipairs({session, rows, seqs, results}) do redis.call('EXPIRE', key, ttl) end
  redis.call('ZADD', owned, 'XX', until_ms, stream_id)
  redis.call('EXPIRE', owned, ttl)
end
"""

# KEYS: session, the key's open streams. ARGV: stream id, now (ms), ttl, most open
# streams per key, then the session's field/value pairs.
# -> "started" | "exists" | "key_full"
START = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'key_full' end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + 1000 * tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 'started'
"""

# KEYS: session, rows, seqs, results, the key's open streams, due, batch, claims.
# ARGV: now (ms), ttl, first sequence id, most rows pending, stream id, sid, claim
#       member, claim deadline (ms), the session's created_at (another session of
#       the same id is "gone"), then one row (JSON) per sequence id.
# -> {"gone"} | {"closed"} | {"duplicate", seq} | {"full", pending}
#    | {"buffered", pending} | {"taken", pending, seq, row, seq, row, ...}
SEND = (
    _TAKE
    + _TOUCH
    + """
local state = redis.call(
  'HMGET', KEYS[1], 'closed', 'buffer_size', 'batch_timeout_ms', 'inflight', 'created_at')
if not state[2] or state[5] ~= ARGV[9] then return {'gone'} end
if state[1] == '1' then return {'closed'} end
local now, first, n = tonumber(ARGV[1]), tonumber(ARGV[3]), #ARGV - 9
for i = 0, n - 1 do
  if redis.call('ZSCORE', KEYS[3], first + i) then return {'duplicate', tostring(first + i)} end
end
local buffered = redis.call('HLEN', KEYS[2])
local pending = buffered + tonumber(state[4] or '0')
if pending + n > tonumber(ARGV[4]) then return {'full', tostring(pending)} end
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], first + i, ARGV[10 + i])
  redis.call('ZADD', KEYS[3], first + i, first + i)
end
-- The oldest buffered row sets the deadline of the timeout flush.
if buffered == 0 then redis.call('ZADD', KEYS[6], now + tonumber(state[3]), ARGV[6]) end
redis.call('HSET', KEYS[1], 'last_activity_ms', ARGV[1])
touch(ARGV[2], KEYS[5], ARGV[5], now + 1000 * tonumber(ARGV[2]), KEYS[1], KEYS[2], KEYS[3], KEYS[4])
pending = pending + n
if buffered + n < tonumber(state[2]) then return {'buffered', tostring(pending)} end
local taken = take(KEYS[1], KEYS[2], KEYS[7], KEYS[8], KEYS[6], ARGV[6], ARGV[7], ARGV[8], ARGV[2])
local answer = {'taken', tostring(pending)}
for i = 1, #taken do answer[#answer + 1] = taken[i] end
return answer
"""
)

# KEYS: session, rows, batch, claims, due. ARGV: sid, claim member, claim deadline
# (ms), ttl, now (ms). Takes the buffer only if its deadline has passed (another
# replica may have taken it, and new rows set a later one).
# -> the taken seq/row pairs (empty when nothing was due)
TAKE_DUE = (
    _TAKE
    + """
local deadline = redis.call('ZSCORE', KEYS[5], ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[5]) then return {} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[5], ARGV[1])
  return {}
end
return take(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# KEYS: session, batch, results, seqs, claims. ARGV: claim member, most results
# kept, channel, then seq/result (JSON) pairs.
# -> 1 when stored; 0 when the batch was reclaimed or the session expired meanwhile
STORE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local n = redis.call('HLEN', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[5], ARGV[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', KEYS[1], 'inflight', -n)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[4], ttl)
-- Beyond the bound the oldest results go, and their sequence ids with them.
local excess = redis.call('HLEN', KEYS[3]) - tonumber(ARGV[2])
if excess > 0 then
  for _, seq in ipairs(redis.call('ZRANGE', KEYS[4], 0, excess - 1)) do
    if redis.call('HDEL', KEYS[3], seq) == 1 then redis.call('ZREM', KEYS[4], seq) end
  end
end
redis.call('PUBLISH', ARGV[3], 'results')
return 1
"""

# KEYS: session, batch, rows, due, claims. ARGV: claim member, now (ms), sid.
# A batch whose claim passed goes back to the buffer, due at once.
# -> the rows returned to the buffer (0: the claim was renewed, stored or is gone)
RECLAIM = """
local claimed = redis.call('ZSCORE', KEYS[5], ARGV[1])
if not claimed or tonumber(claimed) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[5], ARGV[1])
local flat = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
local ttl = redis.call('TTL', KEYS[1])
if #flat == 0 or ttl < 0 then return 0 end
for i = 1, #flat, 2 do redis.call('HSET', KEYS[3], flat[i], flat[i + 1]) end
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('HINCRBY', KEYS[1], 'inflight', -#flat / 2)
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
return #flat / 2
"""

# KEYS: session, rows, batch, claims, due, the key's open streams. ARGV: sid, claim
# member, claim deadline (ms), ttl, now (ISO), stream id, channel.
# -> {"gone"} | {"already"} | {"closed", seq, row, ...} (what was still buffered)
CLOSE = (
    _TAKE
    + """
local closed = redis.call('HGET', KEYS[1], 'closed')
if not closed then return {'gone'} end
if closed == '1' then return {'already'} end
redis.call('HSET', KEYS[1], 'closed', '1', 'closed_at', ARGV[5])
redis.call('ZREM', KEYS[6], ARGV[6])
local taken = take(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[7], 'closed')
local answer = {'closed'}
for i = 1, #taken do answer[#answer + 1] = taken[i] end
return answer
"""
)

# KEYS: session, rows, seqs, results, the key's open streams. ARGV: cursor, limit,
# ttl, now (ms), stream id, touch ("1": a read of an open stream is activity).
# -> false (no session) | {closed, pending, seq, result, seq, result, ...}: the
#    computed results from the cursor on, in sequence order, up to the first
#    sequence id still without one
READ = (
    _TOUCH
    + """
local state = redis.call('HMGET', KEYS[1], 'closed', 'inflight')
if not state[1] then return false end
local answer = {state[1], tostring(redis.call('HLEN', KEYS[2]) + tonumber(state[2] or '0'))}
local seqs = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
if #seqs > 0 then
  local found = redis.call('HMGET', KEYS[4], unpack(seqs))
  for i = 1, #seqs do
    if not found[i] then break end
    answer[#answer + 1] = seqs[i]
    answer[#answer + 1] = found[i]
  end
end
if ARGV[6] == '1' and state[1] == '0' then
  local now = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'last_activity_ms', ARGV[4])
  touch(ARGV[3], KEYS[5], ARGV[5], now + 1000 * tonumber(ARGV[3]), KEYS[1], KEYS[2], KEYS[3],
    KEYS[4])
end
return answer
"""
)
