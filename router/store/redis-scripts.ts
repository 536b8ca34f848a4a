/**
 * Lua scripts shared by every Redis backend (ioredis on Node, Upstash on Workers). Each runs
 * atomically on the server, which is what makes capacity, quotas and rate limits safe across router
 * replicas.
 */

/**
 * Reserve a slot (global and per owner) and write a new session.
 * KEYS[1] active set (ids holding a slot)   KEYS[2] session hash   KEYS[3] index zset (lexicographic)
 * KEYS[4] the owner's active set            KEYS[5] the owner's index zset
 * KEYS[6] fleet counters hash (`created:<cluster>`, `failed:<cluster>`: every router's /metrics reads it)
 * ARGV[1] session id   ARGV[2] session JSON   ARGV[3] max sessions   ARGV[4] index member
 * ARGV[5] max sessions of one owner (0: no quota)   ARGV[6] the session's cluster
 * Returns {1, active} created, {0, active} capacity exhausted, {-1, 0} id exists, {-2, owner's active} quota exceeded.
 */
export const CREATE_SESSION = `
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
local active = redis.call('SCARD', KEYS[1])
if active >= tonumber(ARGV[3]) then return {0, active} end
local quota = tonumber(ARGV[5])
if quota > 0 then
  local mine = redis.call('SCARD', KEYS[4])
  if mine >= quota then return {-2, mine} end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[2], 'rev', 1, 'data', ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[4])
redis.call('ZADD', KEYS[5], 0, ARGV[4])
redis.call('HINCRBY', KEYS[6], 'created:' .. ARGV[6], 1)
return {1, active + 1}
`;

/**
 * Compare-and-set a session's data by revision; a terminal status releases the slots and sets the TTL.
 * KEYS[1] session hash   KEYS[2] active set   KEYS[3] the owner's active set   KEYS[4] fleet counters hash
 * ARGV[1] expected rev   ARGV[2] new JSON   ARGV[3] session id   ARGV[4] '1' if terminal   ARGV[5] retention seconds
 * ARGV[6] a fleet counter to add one to with this write ('' none: `failed:<cluster>` when it fails)
 * Returns 1 written, 0 revision moved on (caller re-reads and retries), -1 session gone.
 */
export const UPDATE_SESSION = `
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', tonumber(rev) + 1, 'data', ARGV[2])
if ARGV[4] == '1' then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[6], 1) end
return 1
`;

/**
 * GCRA over several buckets at once, all or nothing: the request passes only if every bucket has room,
 * and only then is every bucket charged. A bucket is one key holding its theoretical arrival time (TAT).
 * Times are whole microseconds (exact in Lua's doubles, unlike fractions of a millisecond).
 * KEYS[i]    bucket i
 * ARGV[1]    now, µs (the caller's clock, so tests can drive it)
 * ARGV[3i-1] bucket i's emission interval, µs (period / rate)
 * ARGV[3i]   bucket i's burst (requests allowed at once)
 * ARGV[3i+1] how many requests to charge bucket i for (a replica may take a small batch at once)
 * Returns {allowed (1|0), then per bucket: remaining, µs until full, µs until the next request passes}.
 * On a refusal nothing is charged, so `remaining` is what each bucket has now.
 */
export const RATE_LIMIT = `
local now = tonumber(ARGV[1])
local allowed = 1
local tats = {}
local out = {0}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local nextTat = tat + interval * cost
  local allowAt = nextTat - burst * interval
  if allowAt > now then
    allowed = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = allowAt - now
  else
    out[#out + 1] = math.floor((now - allowAt) / interval)
    out[#out + 1] = nextTat - now
    out[#out + 1] = 0
  end
  tats[i] = nextTat
end
for i, key in ipairs(KEYS) do
  if allowed == 1 then
    redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
  elseif out[3 * i + 1] == 0 then
    out[3 * i - 1] = out[3 * i - 1] + tonumber(ARGV[3 * i + 1])
    out[3 * i] = out[3 * i] - tonumber(ARGV[3 * i - 1]) * tonumber(ARGV[3 * i + 1])
  end
end
out[1] = allowed
return out
`;

/**
 * A router replica's lease: join or refresh (lease > 0) or leave (lease 0), then read who is live.
 * Expiry is judged on Redis's own clock, so replicas' clocks need not agree.
 * KEYS[1] replicas zset (member: replica id, score: lease expiry, ms)
 * ARGV[1] replica id   ARGV[2] lease ms (0: leave)   ARGV[3] most ids returned
 * Returns the live replica ids, oldest lease first.
 */
export const REPLICA_LEASE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if lease > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
`;
