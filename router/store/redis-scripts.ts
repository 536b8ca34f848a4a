/**
 * Lua scripts shared by every Redis backend (ioredis now, Upstash later). Each runs atomically on the
 * server, which is what makes capacity safe across router replicas.
 */

/**
 * Reserve a slot and write a new session.
 * KEYS[1] active set (ids holding a slot)   KEYS[2] session hash   KEYS[3] index zset (lexicographic)
 * ARGV[1] session id   ARGV[2] session JSON   ARGV[3] max sessions   ARGV[4] index member
 * Returns 1 created, 0 capacity exhausted (as {0, active}), -1 id exists.
 */
export const CREATE_SESSION = `
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
local active = redis.call('SCARD', KEYS[1])
if active >= tonumber(ARGV[3]) then return {0, active} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'rev', 1, 'data', ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[4])
return {1, active + 1}
`;

/**
 * Compare-and-set a session's data by revision; a terminal status releases the slot and sets the TTL.
 * KEYS[1] session hash   KEYS[2] active set
 * ARGV[1] expected rev   ARGV[2] new JSON   ARGV[3] session id   ARGV[4] '1' if terminal   ARGV[5] retention seconds
 * Returns 1 written, 0 revision moved on (caller re-reads and retries), -1 session gone.
 */
export const UPDATE_SESSION = `
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', tonumber(rev) + 1, 'data', ARGV[2])
if ARGV[4] == '1' then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return 1
`;
