//! Lua scripts: each write runs as one script, so compare-and-set, the
//! version counter, the TTL and the two indexes change together.
//!
//! Every key a script touches is passed in KEYS and shares the namespace's
//! hash tag, so the scripts also run on Redis Cluster.

/// KEYS: data, idx, exp, ver. ARGV: member, value, ttl_ms (0: none),
/// expire_at_ms, if_version ('' for none).
/// Returns {1, version} on success, {0, current_version} on conflict.
pub(crate) const PUT: &str = r"
if ARGV[5] ~= '' then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
  if cur ~= tonumber(ARGV[5]) then return {0, cur} end
end
local v = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', v)
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  redis.call('PERSIST', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {1, v}
";

/// KEYS: data, idx, exp. ARGV: member, if_version ('' for none).
/// Returns {1, previous_version} (0: did not exist) or {0, current} on
/// conflict.
pub(crate) const DELETE: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[2] ~= '' and cur ~= tonumber(ARGV[2]) then return {0, cur} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {1, cur}
";

/// KEYS: idx, exp, ver, data_1..data_n. ARGV: per item member, value,
/// ttl_ms, expire_at_ms. Returns the versions in order.
pub(crate) const BATCH_PUT: &str = r"
local versions = {}
for i = 4, #KEYS do
  local a = (i - 4) * 4
  local member, value, ttl, at = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  local v = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[i], 'd', value, 'v', v)
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
    redis.call('ZADD', KEYS[2], at, member)
  else
    redis.call('PERSIST', KEYS[i])
    redis.call('ZREM', KEYS[2], member)
  end
  redis.call('ZADD', KEYS[1], 0, member)
  versions[#versions + 1] = v
end
return versions
";

/// Removes index entries whose value is gone (expired).
/// KEYS: idx, exp, data_1..data_n. ARGV: member_1..member_n.
pub(crate) const FORGET: &str = r"
local n = 0
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i - 2])
    redis.call('ZREM', KEYS[2], ARGV[i - 2])
    n = n + 1
  end
end
return n
";
