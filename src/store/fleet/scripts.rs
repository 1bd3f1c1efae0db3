//! The Lua scripts that make each fleet operation one atomic step in Redis. `redis::Script`
//! sends `EVALSHA` and loads the script again after a Redis restart emptied its cache.

use redis::Script;

pub(super) struct Scripts {
    /// KEYS: lease, record, fence counter. ARGV: owner (unique per attempt to take the lease),
    /// ttl in ms. The fencing value, or nil when another replica holds the lease. Taking the
    /// lease and the value is one step, so a replica that lost the race never advances the
    /// counter under the holder's feet; repeating it with the same owner (a lost answer)
    /// returns the same value.
    pub acquire: Script,
    /// KEYS: record, index, fence counter. ARGV: fence ('' for an unleased write), sealed
    /// record, token id ('' for none), record name, channel. 1 when written, 0 when a newer
    /// lease was taken since `fence`.
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
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local fence = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'fence', fence)
return fence
";

const SAVE: &str = r"
if ARGV[1] ~= '' then
  if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then
    return 0
  end
else
  redis.call('HSET', KEYS[1], 'fence', redis.call('INCR', KEYS[3]))
end
redis.call('HSET', KEYS[1], 'sealed', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'token_id', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'token_id')
end
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
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
            save: Script::new(SAVE),
            release: Script::new(RELEASE),
            invalidate: Script::new(INVALIDATE),
            delete: Script::new(DELETE),
        }
    }
}
