/**
 * Lua scripts shared by every Redis backend (ioredis on Node, Upstash on Workers). Each runs
 * atomically on the server, which is what makes capacity, quotas and rate limits safe across router
 * replicas.
 */

/**
 * The fair queue's shared helpers (prepended to the scripts that use them). The queue: a rotation of
 * owners with waiters (`<p>q:owners`, a list), each owner's tickets in arrival order (`<p>q:o:<owner>`,
 * a list) and a hash per ticket (`<p>q:t:<ticket>`: owner, seen = when its waiter last polled, ms,
 * served = the session it got). The head of the queue is the first ticket of the first owner; once it
 * is served its owner goes to the back of the rotation, so keys take turns. A ticket whose waiter
 * stopped polling (a router that died, a client that left) is dropped when it reaches the head. Keys
 * are built from the prefix (ARGV), which carries the store's hash tag, so they share one slot.
 */
const QUEUE_HELPERS = `
local function queue_prune(p, now, stale)
  for _ = 1, 1000 do
    local owner = redis.call('LINDEX', p .. 'q:owners', 0)
    if not owner then return end
    local tickets = p .. 'q:o:' .. owner
    local head = redis.call('LINDEX', tickets, 0)
    if not head then
      redis.call('LPOP', p .. 'q:owners')
    else
      local seen = tonumber(redis.call('HGET', p .. 'q:t:' .. head, 'seen') or '0')
      if seen >= now - stale then return end
      redis.call('LPOP', tickets)
      redis.call('DEL', p .. 'q:t:' .. head)
      if redis.call('LLEN', tickets) == 0 then redis.call('LPOP', p .. 'q:owners') end
    end
  end
end
local function queue_position(p, owner, ticket)
  local mine = redis.call('LPOS', p .. 'q:o:' .. owner, ticket)
  if not mine then return nil end
  local position = 1
  local before = true
  for _, other in ipairs(redis.call('LRANGE', p .. 'q:owners', 0, -1)) do
    if other == owner then
      before = false
      position = position + mine
    else
      local round = mine
      if before then round = mine + 1 end
      position = position + math.min(redis.call('LLEN', p .. 'q:o:' .. other), round)
    end
  end
  return position
end
`;

/**
 * Reserve a slot (global and per owner) and write a new session; with waiters in the queue, only the
 * head's ticket may take a slot.
 * KEYS[1] active set (ids holding a slot)   KEYS[2] session hash   KEYS[3] index zset (lexicographic)
 * KEYS[4] the owner's active set            KEYS[5] the owner's index zset
 * KEYS[6] fleet counters hash (`created:<cluster>`, `failed:<cluster>`: every router's /metrics reads it)
 * ARGV[1] session id   ARGV[2] session JSON   ARGV[3] max sessions   ARGV[4] index member
 * ARGV[5] max sessions of one owner (0: no quota)   ARGV[6] the session's cluster
 * ARGV[7] the queue ticket this create is for ('' none)   ARGV[8] key prefix (queue keys)   ARGV[9] now, ms
 * ARGV[10] ms after which a silent waiter is dropped   ARGV[11] seconds a served ticket is remembered
 * Returns {1, active} created, {0, active} no slot (full, or the slot is the queue's), {-1, 0} id exists,
 * {-2, owner's active} quota exceeded, {-3, position} the ticket is not at the head (or is gone: 0).
 */
export const CREATE_SESSION =
  QUEUE_HELPERS +
  `
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
local p, ticket = ARGV[8], ARGV[7]
queue_prune(p, tonumber(ARGV[9]), tonumber(ARGV[10]))
local head_owner = redis.call('LINDEX', p .. 'q:owners', 0)
local active = redis.call('SCARD', KEYS[1])
if ticket == '' then
  if head_owner then return {0, active} end
else
  local owner = redis.call('HGET', p .. 'q:t:' .. ticket, 'owner')
  if not owner then return {-3, 0} end
  if owner ~= head_owner or redis.call('LINDEX', p .. 'q:o:' .. owner, 0) ~= ticket then
    return {-3, queue_position(p, owner, ticket) or 0}
  end
end
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
if ticket ~= '' then
  local tickets = p .. 'q:o:' .. head_owner
  redis.call('LPOP', tickets)
  redis.call('LPOP', p .. 'q:owners')
  if redis.call('LLEN', tickets) > 0 then redis.call('RPUSH', p .. 'q:owners', head_owner) end
  redis.call('HSET', p .. 'q:t:' .. ticket, 'served', ARGV[1])
  redis.call('EXPIRE', p .. 'q:t:' .. ticket, tonumber(ARGV[11]))
end
return {1, active + 1}
`;

/**
 * Join the queue, or (the same ticket again: a waiter polling, or one whose router died asking again)
 * say where it stands. A join refreshes nothing but `seen`; a ticket's place is kept while it is polled.
 * KEYS: none (every key is built from the prefix)
 * ARGV[1] key prefix   ARGV[2] ticket   ARGV[3] owner ('' : poll only, never join)   ARGV[4] now, ms
 * ARGV[5] ms after which a silent waiter is dropped   ARGV[6] seconds the ticket is kept at most
 * Returns {1, position} waiting, {2, session id} served, {0, 0} not in the queue (poll only).
 */
export const QUEUE_JOIN =
  QUEUE_HELPERS +
  `
local p, ticket, joining, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
queue_prune(p, now, tonumber(ARGV[5]))
local t = p .. 'q:t:' .. ticket
local served = redis.call('HGET', t, 'served')
if served then return {2, served} end
local owner = redis.call('HGET', t, 'owner')
if not owner then
  if joining == '' then return {0, 0} end
  owner = joining
  local tickets = p .. 'q:o:' .. owner
  redis.call('RPUSH', tickets, ticket)
  if redis.call('LLEN', tickets) == 1 then redis.call('RPUSH', p .. 'q:owners', owner) end
  redis.call('HSET', t, 'owner', owner)
end
redis.call('HSET', t, 'seen', now)
redis.call('EXPIRE', t, tonumber(ARGV[6]))
local position = queue_position(p, owner, ticket)
if not position then
  redis.call('DEL', t)
  return {0, 0}
end
return {1, position}
`;

/**
 * Leave the queue (deadline passed, client gone); a served ticket is left as it is.
 * ARGV[1] key prefix   ARGV[2] ticket
 * Returns 1 left, 0 not waiting.
 */
export const QUEUE_LEAVE = `
local p, ticket = ARGV[1], ARGV[2]
local t = p .. 'q:t:' .. ticket
if redis.call('HEXISTS', t, 'served') == 1 then return 0 end
local owner = redis.call('HGET', t, 'owner')
if not owner then return 0 end
redis.call('DEL', t)
local tickets = p .. 'q:o:' .. owner
redis.call('LREM', tickets, 1, ticket)
if redis.call('LLEN', tickets) == 0 then redis.call('LREM', p .. 'q:owners', 1, owner) end
return 1
`;

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
