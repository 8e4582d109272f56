//! The Lua scripts of the Redis store: each runs atomically on the keys of one hash slot.

/// KEYS: seen mark, outbox. ARGV: window (ms), encoded event, unix ms now. Returns 1 when new.
/// Appends before marking: should the append fail, no mark is left behind, so WeChat's retry
/// records the event instead of being taken for a duplicate.
pub(super) const RECORD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'ev', ARGV[2], 'at', ARGV[3])
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return 1
";

/// [`RECORD`] for many events of one account: KEYS: outbox, then the seen mark of each event.
/// ARGV: window (ms), unix ms now, then each encoded event (in KEYS' order). Returns how many
/// were new. One script call, so a page of an audience sync is one round trip and atomic.
pub(super) const RECORD_BATCH: &str = r"
local new = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local id = redis.call('XADD', KEYS[1], '*', 'ev', ARGV[i + 1], 'at', ARGV[2])
    redis.call('SET', KEYS[i], id, 'PX', ARGV[1])
    new = new + 1
  end
end
return new
";

/// KEYS: outbox, dead, dead ids. ARGV: outbox entry id, group, event id, reason, unix s now.
/// Returns 0 when the entry is no longer in the outbox (already acknowledged or moved).
pub(super) const DEAD_LETTER: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields, ev = found[1][2], ''
for i = 1, #fields, 2 do
  if fields[i] == 'ev' then ev = fields[i + 1] end
end
local dead = redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'ev', ev, 'reason', ARGV[4], 'at', ARGV[5])
redis.call('HSET', KEYS[3], ARGV[3], dead)
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
";

/// KEYS: dead ids, dead, outbox. ARGV: event id, unix ms now. Returns 1 when it was replayed.
pub(super) const REPLAY: &str = r"
local dead = redis.call('HGET', KEYS[1], ARGV[1])
if not dead then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local found = redis.call('XRANGE', KEYS[2], dead, dead)
if #found == 0 then return 0 end
local fields, ev = found[1][2], ''
for i = 1, #fields, 2 do
  if fields[i] == 'ev' then ev = fields[i + 1] end
end
redis.call('XADD', KEYS[3], '*', 'ev', ev, 'at', ARGV[2])
redis.call('XDEL', KEYS[2], dead)
return 1
";

/// KEYS: lease. ARGV: owner, lease (ms). Returns 1 when renewed, 2 when newly taken, 0 when
/// another holds it. Every lease: the outbox's per-account leases (where 2 means the caller
/// must take over the previous holder's pending entries) and [`crate::store::Leases`].
pub(super) const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// KEYS: token hash. ARGV: the rejected token. Empties it only if it is still that one.
pub(super) const EVICT_TOKEN: &str = r"
if redis.call('HGET', KEYS[1], 't') == ARGV[1] then
  redis.call('HSET', KEYS[1], 't', '', 'exp', '0')
  return 1
end
return 0
";

/// KEYS: lease. ARGV: owner. Deletes the lease only if that owner holds it.
pub(super) const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: docs hash. ARGV: id, stored document, mode (`a` always, `n` if absent, `e` if equal),
/// expected value (mode `e`), unix ms now. Returns 1 when written. The live test mirrors
/// [`super::live_doc`]: the first 8 bytes are the big-endian expiry, 0 for never.
pub(super) const PUT_DOC: &str = r"
local mode = ARGV[3]
if mode ~= 'a' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  local live = false
  if cur and #cur >= 8 then
    local exp = 0
    for i = 1, 8 do exp = exp * 256 + string.byte(cur, i) end
    live = (exp == 0 or exp > tonumber(ARGV[5]))
  end
  if mode == 'n' and live then return 0 end
  if mode == 'e' and ((not live) or string.sub(cur, 9) ~= ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// KEYS: docs hash. ARGV: unix ms now, then ids. Removes each id whose document has lapsed
/// (a non-zero expiry not after now) and returns how many; a live one (written again since
/// the scan) stays.
pub(super) const DELETE_LAPSED_DOCS: &str = r"
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and #cur >= 8 then
    local exp = 0
    for j = 1, 8 do exp = exp * 256 + string.byte(cur, j) end
    if exp ~= 0 and exp <= now then
      removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
return removed
";

/// KEYS: one (outbox, seen mark) pair per record: the records may be of several accounts (one
/// server), or of one (a cluster: one slot). ARGV: window (ms), unix ms now, then one encoded
/// event per record, in the order of the pairs. For each record in turn, what [`RECORD`] does
/// for one (so a later record of the batch finds the mark of an earlier one); returns one answer
/// per record: 1 new, 0 duplicate, or the error message of its own append or mark (`pcall`, so
/// that one record's failure is that record's answer alone, as if it had been sent alone).
pub(super) const RECORD_MANY: &str = r"
local out = {}
for n = 1, #KEYS / 2 do
  local seen = KEYS[2 * n]
  if redis.call('EXISTS', seen) == 1 then
    out[n] = 0
  else
    local id = redis.pcall('XADD', KEYS[2 * n - 1], '*', 'ev', ARGV[n + 2], 'at', ARGV[2])
    if type(id) == 'table' and id.err then
      out[n] = id.err
    else
      local set = redis.pcall('SET', seen, id, 'PX', ARGV[1])
      if type(set) == 'table' and set.err then out[n] = set.err else out[n] = 1 end
    end
  end
end
return out
";
