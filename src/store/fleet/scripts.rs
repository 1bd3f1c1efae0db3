//! The Lua scripts that make each fleet operation one atomic step in Redis. `redis::Script`
//! sends `EVALSHA` and loads the script again after a Redis restart emptied its cache.

use redis::Script;

pub(super) struct Scripts {
    /// KEYS: lease, fence counter. ARGV: owner (unique per attempt to take the lease), ttl in
    /// ms. The fencing value, or nil when another replica holds the lease. Repeating it with the
    /// same owner (an answer lost on the way) returns the same value.
    pub acquire: Script,
    /// KEYS: lease. ARGV: lease value, ttl in ms. 1 when the lease was still this one and now
    /// lasts `ttl` more, else 0.
    pub extend: Script,
    /// KEYS: record, index, fence counter, lease. ARGV: lease value ('' for an unleased write),
    /// its fence, sealed record, token id ('' for none), record name, channel. A leased write
    /// happens only while the lease is still the writer's and no unleased write (a new
    /// connection, an operator reset) came after the lease was taken. 1 when written, else 0.
    pub save: Script,
    /// KEYS: lease. ARGV: lease value. Deletes the lease only if it is still this one.
    pub release: Script,
    /// KEYS: record. ARGV: token id. Marks the stored access token refused only if it is the
    /// one that was refused.
    pub invalidate: Script,
    /// KEYS: record, index. ARGV: record name, channel. 1 when a record was deleted.
    pub delete: Script,
}

const ACQUIRE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local owner, fence = string.match(held, '^(.*) (%d+)$')
  if owner == ARGV[1] then
    return tonumber(fence)
  end
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
return fence
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const SAVE: &str = r"
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[4]) ~= ARGV[1] then
    return 0
  end
  local written = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if written > tonumber(ARGV[2]) then
    return 0
  end
  redis.call('HSET', KEYS[1], 'fence', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'fence', redis.call('INCR', KEYS[3]))
end
redis.call('HSET', KEYS[1], 'sealed', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'token_id', ARGV[4])
else
  redis.call('HDEL', KEYS[1], 'token_id')
end
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const INVALIDATE: &str = r"
if redis.call('HGET', KEYS[1], 'token_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'stale', ARGV[1])
  return 1
end
return 0
";

const DELETE: &str = r"
local deleted = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return deleted
";

impl Scripts {
    pub fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE),
            extend: Script::new(EXTEND),
            save: Script::new(SAVE),
            release: Script::new(RELEASE),
            invalidate: Script::new(INVALIDATE),
            delete: Script::new(DELETE),
        }
    }
}
