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

# Several tasks taken together, started in one call.
# KEYS: per task, its hash and its level's stream.
# ARGV: consumer, now (ISO), most deliveries, consumer group, then each task's entry id.
# -> per task {"run", its fields} | {"exhausted", its fields} | {"done", status} | {"gone"};
#    a "done" or "gone" task's entry is acknowledged here (nothing is left to run).
START = """
local answers = {}
for i = 1, #KEYS, 2 do
  local task, stream, entry = KEYS[i], KEYS[i + 1], ARGV[4 + (i + 1) / 2]
  local status = redis.call('HGET', task, 'status')
  if not status or (status ~= 'queued' and status ~= 'running') then
    redis.call('XACK', stream, ARGV[4], entry)
    redis.call('XDEL', stream, entry)
    answers[#answers + 1] = status and {'done', status} or {'gone'}
  else
    local attempts = redis.call('HINCRBY', task, 'attempts', 1)
    redis.call('HSET', task, 'status', 'running', 'consumer', ARGV[1], 'started_at', ARGV[2])
    local outcome = attempts > tonumber(ARGV[3]) and 'exhausted' or 'run'
    answers[#answers + 1] = {outcome, redis.call('HGETALL', task)}
  end
end
return answers
"""

# Tasks that finished together, recorded in one call; each only if it is still this
# consumer's (a task taken over by another replica is that replica's to record).
# KEYS: the total active count, this second's completion counter, then per task its
#       hash, its level's stream and its key's active count.
# ARGV: consumer, now (ISO), ttl, consumer group, the completion channel, then per
#       task its entry id, final status, field and value (JSON).
# -> per task 1 when this consumer finished it, 0 when not. The ids finished are
#    published on the channel, space-separated (waiting polls wake on them).
FINISH = """
local finished, ids = {}, {}
for i = 3, #KEYS, 3 do
  local task, stream, active = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local at = 6 + 4 * (i - 3) / 3
  redis.call('XACK', stream, ARGV[4], ARGV[at])
  redis.call('XDEL', stream, ARGV[at])
  local state = redis.call('HMGET', task, 'status', 'consumer', 'task_id')
  if state[1] ~= 'running' or state[2] ~= ARGV[1] then
    finished[#finished + 1] = 0
  else
    redis.call('HSET', task, 'status', ARGV[at + 1], ARGV[at + 2], ARGV[at + 3],
      'completed_at', ARGV[2])
    redis.call('EXPIRE', task, ARGV[3])
    if tonumber(redis.call('DECR', active)) <= 0 then redis.call('DEL', active) end
    if tonumber(redis.call('DECR', KEYS[1])) < 0 then redis.call('SET', KEYS[1], 0) end
    finished[#finished + 1] = 1
    ids[#ids + 1] = state[3]
  end
end
if #ids > 0 then
  redis.call('INCRBY', KEYS[2], #ids)
  redis.call('EXPIRE', KEYS[2], 120)
  redis.call('PUBLISH', ARGV[5], table.concat(ids, ' '))
end
return finished
"""

# KEYS: task, its stream, the key's active count, the total active count.
# ARGV: now (ISO), ttl, the completion channel.
# -> "cancelled", or the status that prevents it (false: no such task)
CANCEL = """
local state = redis.call('HMGET', KEYS[1], 'status', 'entry', 'task_id')
if state[1] ~= 'queued' then return state[1] end
-- Not taken yet: gone from the stream. Taken but not started: START sees the status.
redis.call('XDEL', KEYS[2], state[2])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'completed_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if tonumber(redis.call('DECR', KEYS[3])) <= 0 then redis.call('DEL', KEYS[3]) end
if tonumber(redis.call('DECR', KEYS[4])) < 0 then redis.call('SET', KEYS[4], 0) end
redis.call('PUBLISH', ARGV[3], state[3])
return 'cancelled'
"""

# KEYS: task. ARGV: field, value. Sets the field only on a task that still exists.
RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
