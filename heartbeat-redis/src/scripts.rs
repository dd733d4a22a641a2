//! The Lua scripts: every conditional change is one script, so it is atomic and costs
//! one round trip (unconditional writes are a `MULTI`/`EXEC` transaction instead, see
//! `RedisStore::put`). Each script touches only keys of one Cluster slot (a value key and
//! its version key, see [`crate::layout`]; or an index and a member key that share a
//! slot). The client sends `EVALSHA` and loads the script once per server on `NOSCRIPT`.

use std::sync::LazyLock;

use redis::Script;

/// Writes a value and its version token, with an optional TTL, if the condition holds
/// (mode `o` is accepted too, though unconditional writes use a transaction).
///
/// KEYS: value key, version key. ARGV: mode (`o` overwrite, `c` create, `u` update),
/// expected version (mode `u`), value, new token, TTL in ms (`0`: none).
/// Returns 1 when written, 0 when the condition failed.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local mode = ARGV[1]
if mode == 'c' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif mode == 'u' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  local current = redis.call('GET', KEYS[2]) or 'untracked'
  if current ~= ARGV[2] then return 0 end
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[2], ARGV[4])
end
return 1
"#,
    )
});

/// Deletes a value and its version key if the version matches.
///
/// KEYS: value key, version key. ARGV: expected version.
/// Returns 1 when deleted, 0 when the key is missing or has another version.
pub(crate) static DELETE_IF_VERSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('GET', KEYS[2]) or 'untracked'
if current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"#,
    )
});

/// Removes a member from an index set while its record key is missing.
///
/// KEYS: index key, member's record key (same slot). ARGV: member.
/// Returns 1 when removed, 0 otherwise.
pub(crate) static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('SREM', KEYS[1], ARGV[1])
"#,
    )
});
