"""The queue's state changes, each one Lua script so that Redis runs it atomically.

Every key a script touches shares the queue's hash tag (`TaskKeys`), so the
scripts also run on a Redis Cluster. A task moves queued -> running ->
completed | failed, or queued -> cancelled; each script refuses a move from any
other state, which is what makes a redelivered task complete once.
"""

from __future__ import annotations

# KEYS: task, its level's stream, the key's active count, the total active count,
#       the Idempotency-Key record (or any key when there is none), the index of
#       tasks by submission time, then the streams of its level and every level
#       above it (the queue ahead of it).
# ARGV: task id, max per key, max in total, ttl, idempotency record ("" for none),
#       consumer group, now (unix ms), then the task's field/value pairs.
# -> {"existing", record} | {"full"} | {"key_full"} | {"queued", tasks ahead}
SUBMIT = """
if ARGV[5] ~= '' then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {'existing', existing} end
end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[3]) then return {'full'} end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[2]) then return {'key_full'} end
local ahead = 0
for i = 7, #KEYS do
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[6])
  if ok then
    -- entries still in the stream that no worker has taken yet
    ahead = ahead + redis.call('XLEN', KEYS[i]) - pending[1]
  else
    redis.call('XGROUP', 'CREATE', KEYS[i], ARGV[6], '0', 'MKSTREAM')
  end
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local entry = redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', entry)
redis.call('INCR', KEYS[3])
redis.call('INCR', KEYS[4])
if ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[4]) end
-- The index outlives no task by much: entries older than the TTL are dropped here.
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[7]) - 1000 * tonumber(ARGV[4]))
return {'queued', tostring(ahead)}
"""

# KEYS: task. ARGV: consumer, now (ISO), most deliveries.
# -> {"run"} | {"exhausted"} | {"done", status} | {"gone"}
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone'} end
if status ~= 'queued' and status ~= 'running' then return {'done', status} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'consumer', ARGV[1], 'started_at', ARGV[2])
if attempts > tonumber(ARGV[3]) then return {'exhausted'} end
return {'run'}
"""

# KEYS: task, its stream, the key's active count, the total active count, this
#       second's completion counter.
# ARGV: consumer, final status, field, value (JSON), now (ISO), ttl, entry id, group.
# -> 1 when this consumer finished the task, 0 when it was not (or no longer) its own.
FINISH = """
redis.call('XACK', KEYS[2], ARGV[8], ARGV[7])
redis.call('XDEL', KEYS[2], ARGV[7])
local state = redis.call('HMGET', KEYS[1], 'status', 'consumer')
if state[1] ~= 'running' or state[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4], 'completed_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if tonumber(redis.call('DECR', KEYS[3])) <= 0 then redis.call('DEL', KEYS[3]) end
if tonumber(redis.call('DECR', KEYS[4])) < 0 then redis.call('SET', KEYS[4], 0) end
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 120)
return 1
"""

# KEYS: task, its stream, the key's active count, the total active count.
# ARGV: now (ISO), ttl.
# -> "cancelled", or the status that prevents it (false: no such task)
CANCEL = """
local state = redis.call('HMGET', KEYS[1], 'status', 'entry')
if state[1] ~= 'queued' then return state[1] end
-- Not taken yet: gone from the stream. Taken but not started: START sees the status.
redis.call('XDEL', KEYS[2], state[2])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if tonumber(redis.call('DECR', KEYS[3])) <= 0 then redis.call('DEL', KEYS[3]) end
if tonumber(redis.call('DECR', KEYS[4])) < 0 then redis.call('SET', KEYS[4], 0) end
return 'cancelled'
"""

# KEYS: task. ARGV: field, value. Sets the field only on a task that still exists.
RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
