//! The Redis backend: several gateway instances share de-duplication and the outbox.
//!
//! Every key carries its account in a hash tag, so that all keys of one account live in one
//! Redis Cluster slot and each script or transaction touches one slot:
//! - `wgw:{<account>}:seen:<event id>`: the de-duplication mark, expiring after the window;
//! - `wgw:{<account>}:outbox`: a stream of `ev` (the encoded `pb::Event`) and `at` (unix ms
//!   when enqueued), read by the consumer group `forwarders`;
//! - `wgw:{<account>}:dead`: a stream of dead letters (`id`, `ev`, `reason`, `at` in unix s);
//! - `wgw:{<account>}:dead:ids`: a hash from event id to its entry in `dead`, for replay;
//! - `wgw:{<account>}:scenes`: a hash from scene (or contact-me state) to its JSON record;
//! - `wgw:{<account>}:menu:versions`: a hash from version number to the JSON of that menu
//!   version (written with `HSETNX`, so a number is never taken twice), and
//!   `wgw:{<account>}:menu:lease`: the owner changing the account's menu, with a short expiry;
//! - `wgw:{<token key>}:token`: a hash (`t` token, `exp` expiry in unix ms, `fat`/`fday`/`fcnt`
//!   the force-refresh budget) shared by every instance, and `wgw:{<token key>}:token:lease`,
//!   taken with `SET NX PX` by the one instance that refreshes it. The token key names the
//!   WeChat credential (appid, or corp and secret), see [`crate::wechat::tokens`].
//!
//! `record` is one round trip whatever the number of accounts: one `EVALSHA` of the `RECORD`
//! script (mark and append, atomically; it is loaded at connect, and again on `NOSCRIPT`).
//! `claim` delivers each account's outbox from one instance at a time, so that events of one
//! user are never delivered out of order by two instances racing: an instance holds a lease
//! per account (`wgw:{<account>}:lease`, its consumer name, expiring after the lease time,
//! renewed by every claim and by [`Store::keep_claimed`] while a batch is being retried). The
//! instance that takes a lapsed lease first takes over every entry the previous holder left
//! pending (`XAUTOCLAIM`, oldest first), then reads as the holder: its own pending entries (so
//! a restarted instance resumes its own at once), then new entries, waited for with a blocking
//! `XREADGROUP` on a connection of its own (a blocked read holds up every command behind it on
//! a multiplexed connection). Accounts go to whichever instance claims them first; the others
//! stand by and take over when a holder dies. On one Redis server the claim reads name every
//! held account's stream in one command.
//!
//! Redis Cluster: `store.redis_url` may be a comma-separated list of cluster nodes
//! (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`); the client learns the slot map from them
//! and follows `MOVED`/`ASK`. Every script, transaction and pipeline then stays in one hash slot:
//! what spans accounts on one server (the lease pipeline, the stats, the dead-letter listing,
//! the claim read) is sent as one request per account instead, concurrently. A blocking
//! `XREADGROUP` cannot name streams of several slots and would hold up the node's connection, so
//! in cluster mode a claim reads each held account without blocking and polls every
//! 50 ms (`CLUSTER_POLL`) until its wait is over: one read per held account per poll while idle.
//!
//! Durability is Redis's own: an answered record survives a Redis restart only with
//! `appendonly yes` (and a power loss only with `appendfsync always`); `connect` warns when the
//! append-only file is off.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use prost::Message;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};

use super::{
    decode_menu_version, decode_scene, encode_doc, encode_menu_version, encode_scene, live_doc,
    CachedToken, DeadLetter, DocWrite, MenuVersion, OutboxEntry, OutboxStats, Recorded,
    SceneRecord, Store, StoreError,
};
use crate::domain::Secret;
use crate::pb;

/// The consumer group of every outbox stream.
const GROUP: &str = "forwarders";
/// Default for [`RedisStore::with_lease`].
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Response timeout of the command connection: well inside WeChat's 5-second window, with room
/// for a busy server that fsyncs every write.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest single blocking read; a longer claim wait returns empty after this. The blocking
/// connection's response timeout is this plus [`RESPONSE_TIMEOUT`].
const MAX_BLOCK: Duration = Duration::from_secs(10);

/// Cluster mode: how often an idle claim reads the held accounts again while it waits.
const CLUSTER_POLL: Duration = Duration::from_millis(50);

/// One Redis server (reconnecting manager) or a Redis Cluster (slot-aware, reconnecting).
/// Both multiplex one connection per server and are cloned per call.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// KEYS: seen mark, outbox. ARGV: window (ms), encoded event, unix ms now. Returns 1 when new.
/// Appends before marking: should the append fail, no mark is left behind, so WeChat's retry
/// records the event instead of being taken for a duplicate.
const RECORD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'ev', ARGV[2], 'at', ARGV[3])
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return 1
";

/// KEYS: outbox, dead, dead ids. ARGV: outbox entry id, group, event id, reason, unix s now.
/// Returns 0 when the entry is no longer in the outbox (already acknowledged or moved).
const DEAD_LETTER: &str = r"
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
const REPLAY: &str = r"
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

/// KEYS: lease. ARGV: consumer, lease (ms). Returns 1 when renewed, 2 when newly taken (the
/// caller must then take over the previous holder's pending entries), 0 when another holds it.
const LEASE: &str = r"
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
const EVICT_TOKEN: &str = r"
if redis.call('HGET', KEYS[1], 't') == ARGV[1] then
  redis.call('HSET', KEYS[1], 't', '', 'exp', '0')
  return 1
end
return 0
";

/// KEYS: lease. ARGV: owner. Deletes the lease only if that owner holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: docs hash. ARGV: id, stored document, mode (`a` always, `n` if absent, `e` if equal),
/// expected value (mode `e`), unix ms now. Returns 1 when written. The live test mirrors
/// [`super::live_doc`]: the first 8 bytes are the big-endian expiry, 0 for never.
const PUT_DOC: &str = r"
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
const DELETE_LAPSED_DOCS: &str = r"
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

/// A cached token (and its budget) is kept this long after its last write, so that the day's
/// force-refresh count outlives the token itself.
const TOKEN_KEY_TTL: Duration = Duration::from_secs(2 * 86_400);

fn token_hash(key: &str) -> String {
    format!("wgw:{{{key}}}:token")
}

fn token_lease(key: &str) -> String {
    format!("wgw:{{{key}}}:token:lease")
}

fn scenes_hash(account: &str) -> String {
    format!("wgw:{{{account}}}:scenes")
}

fn menu_versions_hash(account: &str) -> String {
    format!("wgw:{{{account}}}:menu:versions")
}

/// One hash per account and document kind: id → the document as [`super::encode_doc`] lays it
/// out (Redis 7.0 cannot expire a hash field, so a lapsed document is skipped on read and
/// removed when next written or deleted, or by [`Store::sweep_docs`]).
fn docs_hash(account: &str, kind: &str) -> String {
    format!("wgw:{{{account}}}:docs:{kind}")
}

fn menu_lease(account: &str) -> String {
    format!("wgw:{{{account}}}:menu:lease")
}

/// The keys of one account.
struct AccountKeys {
    id: String,
    lease: String,
    outbox: String,
    dead: String,
    dead_ids: String,
}

impl AccountKeys {
    fn new(id: String) -> Self {
        Self {
            lease: format!("wgw:{{{id}}}:lease"),
            outbox: format!("wgw:{{{id}}}:outbox"),
            dead: format!("wgw:{{{id}}}:dead"),
            dead_ids: format!("wgw:{{{id}}}:dead:ids"),
            id,
        }
    }

    fn seen(&self, event_id: &str) -> String {
        format!("wgw:{{{}}}:seen:{event_id}", self.id)
    }
}

#[derive(Default)]
struct Leases {
    held: Vec<usize>,
    renewed_at: Option<Instant>,
}

pub struct RedisStore {
    /// Every command but the blocking read; cloned per call (it multiplexes one connection).
    conn: Conn,
    /// Only the blocking `XREADGROUP` of claim (one server only: cluster mode never blocks).
    blocking: Conn,
    /// A Redis Cluster: requests never span accounts (slots).
    cluster: bool,
    accounts: Vec<AccountKeys>,
    /// Account id → index in `accounts`.
    by_id: HashMap<String, usize>,
    /// Outbox stream key → index in `accounts`.
    by_outbox: HashMap<String, usize>,
    dedup_ttl_ms: u64,
    lease: Duration,
    /// The accounts whose lease this instance holds, and when the leases were last renewed
    /// (claim renews them at most every quarter lease).
    leases: Mutex<Leases>,
    record_script: Script,
    dead_letter_script: Script,
    replay_script: Script,
    evict_token_script: Script,
    release_lease_script: Script,
    put_doc_script: Script,
    delete_lapsed_docs_script: Script,
}

impl RedisStore {
    /// Connects, loads the scripts, creates the consumer group of every account's stream and
    /// checks that Redis persists its writes.
    pub async fn connect(
        url: &str,
        accounts: Vec<String>,
        dedup_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let (conn, blocking, cluster) = if url.contains(',') {
            let conn = Conn::Cluster(connect_cluster(url).await?);
            (conn.clone(), conn, true)
        } else {
            let (conn, blocking) = connect_single(url).await?;
            (Conn::Single(conn), Conn::Single(blocking), false)
        };

        let mut keys = Vec::new();
        let mut by_id = HashMap::new();
        let mut by_outbox = HashMap::new();
        for id in accounts {
            if by_id.contains_key(&id) {
                continue;
            }
            let account = AccountKeys::new(id.clone());
            by_id.insert(id, keys.len());
            by_outbox.insert(account.outbox.clone(), keys.len());
            keys.push(account);
        }
        let store = Self {
            conn,
            blocking,
            cluster,
            accounts: keys,
            by_id,
            by_outbox,
            dedup_ttl_ms: dedup_ttl.as_millis().max(1) as u64,
            lease: DEFAULT_LEASE,
            leases: Mutex::new(Leases::default()),
            record_script: Script::new(RECORD),
            dead_letter_script: Script::new(DEAD_LETTER),
            replay_script: Script::new(REPLAY),
            evict_token_script: Script::new(EVICT_TOKEN),
            release_lease_script: Script::new(RELEASE_LEASE),
            put_doc_script: Script::new(PUT_DOC),
            delete_lapsed_docs_script: Script::new(DELETE_LAPSED_DOCS),
        };
        for script in [
            &store.record_script,
            &store.dead_letter_script,
            &store.replay_script,
            &store.evict_token_script,
            &store.release_lease_script,
            &store.put_doc_script,
        ] {
            script
                .load_async(&mut store.conn.clone())
                .await
                .map_err(|e| redis_error("load scripts", e))?;
        }
        store.create_groups().await?;
        store.check_persistence().await;
        Ok(store)
    }

    /// How long an entry may stay claimed by another consumer without being acknowledged before
    /// this one takes it over (default 30 s). Keep it longer than a delivery with its retries
    /// takes: a slow but live instance would otherwise have its batch delivered twice.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// `XGROUP CREATE ... MKSTREAM` for every account; an existing group is fine. From id 0, so
    /// entries written before the group existed are delivered too.
    async fn create_groups(&self) -> Result<(), StoreError> {
        if self.accounts.is_empty() {
            return Ok(());
        }
        let groups = self.accounts.iter().map(|account| {
            let mut pipe = redis::pipe();
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&account.outbox)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM");
            pipe
        });
        // One pipeline on one server; one per account (slot) on a cluster.
        let pipes: Vec<Pipeline> = if self.cluster {
            groups.collect()
        } else {
            vec![merge(groups)]
        };
        let replies = pipes.iter().map(|pipe| {
            retrying("create consumer groups", move || {
                let mut conn = self.conn.clone();
                let mut pipe = pipe.clone();
                async move {
                    pipe.ignore_errors()
                        .query_async::<Vec<RedisResult<Value>>>(&mut conn)
                        .await
                }
            })
        });
        let results = futures::future::try_join_all(replies).await?;
        for result in results.into_iter().flatten() {
            match result {
                Err(e) if e.code() != Some("BUSYGROUP") => {
                    return Err(redis_error("create consumer groups", e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Warns when Redis would lose the outbox on restart. Managed services often refuse CONFIG:
    /// then the operator is told what to check.
    async fn check_persistence(&self) {
        let reply: RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut self.conn.clone())
            .await;
        match reply
            .as_ref()
            .map(|c| c.get("appendonly").map(String::as_str))
        {
            Ok(Some("yes")) => {}
            Ok(Some(other)) => tracing::warn!(
                appendonly = other,
                "Redis runs without its append-only file: the outbox and the de-duplication \
                 marks are lost when Redis restarts; durability needs `appendonly yes`"
            ),
            Ok(None) | Err(_) => tracing::info!(
                error = reply.err().map(|e| e.to_string()),
                "cannot read Redis's appendonly setting; durability needs `appendonly yes`"
            ),
        }
    }

    fn account(&self, id: &str) -> Result<&AccountKeys, StoreError> {
        self.by_id
            .get(id)
            .map(|&i| &self.accounts[i])
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "account {id:?} is not configured for the Redis store"
                ))
            })
    }

    /// The account and stream entry id of a handle made by [`handle`].
    fn parse_handle<'h>(
        &self,
        entry: &'h OutboxEntry,
    ) -> Result<(&AccountKeys, &'h str), StoreError> {
        let (account, id) = entry.handle.split_once('\n').ok_or_else(|| {
            StoreError::Corrupt(format!("{:?} is not a Redis outbox handle", entry.handle))
        })?;
        Ok((self.account(account)?, id))
    }

    /// Runs `op`, once more when the connection had dropped (the manager reconnects meanwhile)
    /// or when a consumer group is missing (the stream was deleted: the groups are created
    /// again). Only for commands that may run twice.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op().await {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(error = %e, "an outbox consumer group is missing; creating it again");
                self.create_groups().await?;
                op().await.map_err(|e| redis_error(what, e))
            }
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(error = %e, what, "Redis connection dropped; retrying once");
                op().await.map_err(|e| redis_error(what, e))
            }
            result => result.map_err(|e| redis_error(what, e)),
        }
    }

    /// Runs one pipeline per account: merged into one round trip on one server; on a cluster
    /// sent concurrently, one per account, since a pipeline must stay in one slot. The answers
    /// come in the order of the pipelines and their commands.
    async fn pipelined<T: FromRedisValue + Send>(
        &self,
        what: &str,
        per_account: Vec<Pipeline>,
    ) -> Result<Vec<T>, StoreError> {
        if !self.cluster {
            let pipe = merge(per_account);
            return self.run(what, || query_pipe(&self.conn, &pipe)).await;
        }
        let answers = per_account
            .iter()
            .map(|pipe| self.run(what, move || query_pipe::<Vec<T>>(&self.conn, pipe)));
        Ok(futures::future::try_join_all(answers)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// `XREADGROUP` over every account's stream from `from` (`0`: this consumer's pending
    /// entries; `>`: new ones), blocking up to `block` on the blocking connection.
    async fn read_group(
        &self,
        consumer: &str,
        held: &[usize],
        max: usize,
        from: &str,
        block: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if self.cluster {
            return self.read_each(consumer, held, max, from, block).await;
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max);
        // BLOCK 0 would wait forever.
        let conn = if block.is_zero() {
            &self.conn
        } else {
            cmd.arg("BLOCK")
                .arg(block.min(MAX_BLOCK).as_millis().max(1) as u64);
            &self.blocking
        };
        cmd.arg("STREAMS");
        for &account in held {
            cmd.arg(&self.accounts[account].outbox);
        }
        for _ in held {
            cmd.arg(from);
        }
        let reply: Value = self.run("claim", || query(conn, &cmd)).await?;
        let found = self.read_reply(reply)?;
        self.settle(found, max).await
    }

    /// The entries of an XREADGROUP reply, with the index of their account.
    fn read_reply(&self, reply: Value) -> Result<Vec<(usize, StreamEntry)>, StoreError> {
        let mut found = Vec::new();
        for (key, entries) in streams(reply)? {
            let account = *self.by_outbox.get(&key).ok_or_else(|| {
                StoreError::Corrupt(format!("XREADGROUP answered for unknown stream {key:?}"))
            })?;
            found.extend(entries.into_iter().map(|e| (account, e)));
        }
        Ok(found)
    }

    /// Cluster mode's read: one non-blocking `XREADGROUP` per held account (its stream is in
    /// its own slot), all at once; while nothing is found, again every [`CLUSTER_POLL`] until
    /// `wait` is over.
    async fn read_each(
        &self,
        consumer: &str,
        held: &[usize],
        max: usize,
        from: &str,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let deadline = Instant::now() + wait.min(MAX_BLOCK);
        loop {
            let reads = held.iter().map(|&account| {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(&self.accounts[account].outbox)
                    .arg(from);
                async move { self.run("claim", || query::<Value>(&self.conn, &cmd)).await }
            });
            let mut found = Vec::new();
            for reply in futures::future::try_join_all(reads).await? {
                found.extend(self.read_reply(reply)?);
            }
            let now = Instant::now();
            if !found.is_empty() || now >= deadline {
                return self.settle(found, max).await;
            }
            tokio::time::sleep(CLUSTER_POLL.min(deadline - now)).await;
        }
    }

    /// Takes or renews the lease of each account in `accounts` (one pipelined round trip);
    /// returns (index, 0 | 1 | 2) as the `LEASE` script answers.
    async fn lease(
        &self,
        consumer: &str,
        accounts: &[usize],
    ) -> Result<Vec<(usize, i64)>, StoreError> {
        let pipes = accounts
            .iter()
            .map(|&account| {
                let mut pipe = redis::pipe();
                // EVAL rather than EVALSHA: a pipeline cannot reload a script lost with a restart.
                pipe.cmd("EVAL")
                    .arg(LEASE)
                    .arg(1)
                    .arg(&self.accounts[account].lease)
                    .arg(consumer)
                    .arg(self.lease.as_millis().max(1) as u64);
                pipe
            })
            .collect();
        let answers: Vec<i64> = self.pipelined("lease", pipes).await?;
        Ok(accounts.iter().copied().zip(answers).collect())
    }

    /// The accounts this instance delivers, renewing and taking leases when a quarter lease has
    /// passed. A newly taken account first gets every entry its previous holder left pending.
    async fn held_accounts(&self, consumer: &str) -> Result<Vec<usize>, StoreError> {
        {
            let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            if leases
                .renewed_at
                .is_some_and(|at| at.elapsed() < self.lease / 4)
            {
                return Ok(leases.held.clone());
            }
        }
        let all: Vec<usize> = (0..self.accounts.len()).collect();
        let answers = self.lease(consumer, &all).await?;
        let mut held = Vec::new();
        for (account, answer) in answers {
            if answer == 2 {
                self.take_over(consumer, account).await?;
            }
            if answer != 0 {
                held.push(account);
            }
        }
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.held = held.clone();
        leases.renewed_at = Some(Instant::now());
        Ok(held)
    }

    /// `XAUTOCLAIM ... 0` until the cursor wraps: every entry pending on another consumer of
    /// this account becomes this consumer's (the lease says the other is gone), so that the
    /// own-pending read that follows delivers them before anything newer.
    async fn take_over(&self, consumer: &str, account: usize) -> Result<(), StoreError> {
        let outbox = &self.accounts[account].outbox;
        let mut cursor = "0-0".to_owned();
        let mut taken = 0usize;
        loop {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(outbox)
                .arg(GROUP)
                .arg(consumer)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID");
            let reply: Value = self.run("claim", || query(&self.conn, &cmd)).await?;
            let mut parts = array(reply)?.into_iter();
            let (Some(next), Some(ids)) = (parts.next(), parts.next()) else {
                return Err(unexpected("XAUTOCLAIM"));
            };
            taken += array(ids)?.len();
            cursor = String::from_utf8(bytes(next)?).map_err(|_| unexpected("XAUTOCLAIM"))?;
            if cursor == "0-0" {
                break;
            }
        }
        if taken > 0 {
            tracing::info!(
                account = %self.accounts[account].id,
                entries = taken,
                consumer,
                "took over the outbox entries of an instance whose lease lapsed"
            );
        }
        Ok(())
    }

    /// Orders claimed entries oldest first and keeps `max` (the rest stay pending on this
    /// consumer, for its next claim). Entries deleted from the stream while pending are
    /// acknowledged away.
    async fn settle(
        &self,
        mut found: Vec<(usize, StreamEntry)>,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        found.sort_by_key(|(_, e)| entry_order(&e.id));
        let (live, gone): (Vec<_>, Vec<_>) = found.into_iter().partition(|(_, e)| e.exists());
        if !gone.is_empty() {
            let gone: Vec<_> = gone.into_iter().map(|(a, e)| (a, e.id)).collect();
            self.remove(&gone, false).await?;
        }
        live.into_iter()
            .take(max)
            .map(|(account, e)| {
                let event = e.decode_event("outbox entry")?;
                Ok(OutboxEntry {
                    handle: handle(&self.accounts[account].id, &e.id),
                    event,
                })
            })
            .collect()
    }

    /// Acknowledges entries and, with `delete`, deletes them from their streams: one atomic
    /// transaction per account (its keys share a slot), all sent at once.
    async fn remove(&self, entries: &[(usize, String)], delete: bool) -> Result<(), StoreError> {
        let mut by_account: HashMap<usize, Vec<&str>> = HashMap::new();
        for (account, id) in entries {
            by_account.entry(*account).or_default().push(id);
        }
        let transactions = by_account.into_iter().map(|(account, ids)| {
            let outbox = &self.accounts[account].outbox;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("XACK")
                .arg(outbox)
                .arg(GROUP)
                .arg(&ids)
                .ignore();
            if delete {
                pipe.cmd("XDEL").arg(outbox).arg(&ids).ignore();
            }
            async move {
                self.run("ack", || query_pipe::<()>(&self.conn, &pipe))
                    .await
            }
        });
        futures::future::try_join_all(transactions).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError> {
        let account = self.account(&event.account_id)?;
        let seen = account.seen(&event.id);
        let encoded = event.encode_to_vec();
        let now = unix_millis();
        // A retry after a dropped connection is safe: if the first attempt did run, the retry
        // finds the mark and answers Duplicate, and the event is in the outbox either way.
        let new: i64 = self
            .run("record", || {
                let mut invocation = self.record_script.key(&seen);
                invocation
                    .key(&account.outbox)
                    .arg(self.dedup_ttl_ms)
                    .arg(&encoded)
                    .arg(now);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(if new == 1 {
            Recorded::New
        } else {
            Recorded::Duplicate
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        self.run("ping", || query::<()>(&self.conn, &cmd)).await
    }

    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if max == 0 || self.accounts.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let held = self.held_accounts(consumer).await?;
        if held.is_empty() {
            // Another instance delivers every account: stand by to take over.
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let own = self
            .read_group(consumer, &held, max, "0", Duration::ZERO)
            .await?;
        if !own.is_empty() {
            return Ok(own);
        }
        self.read_group(consumer, &held, max, ">", wait).await
    }

    async fn keep_claimed(
        &self,
        consumer: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError> {
        let mut accounts = Vec::new();
        for entry in entries {
            let (account, _) = self.parse_handle(entry)?;
            let index = self.by_id[&account.id];
            if !accounts.contains(&index) {
                accounts.push(index);
            }
        }
        let answers = self.lease(consumer, &accounts).await?;
        // A lease taken anew (2) means it had lapsed: another instance may hold the entries now.
        let kept = answers.iter().all(|&(_, answer)| answer == 1);
        if !kept {
            // Look again at the next claim instead of trusting the cached set.
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .renewed_at = None;
        }
        Ok(kept)
    }

    async fn ack(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let ids = entries
            .iter()
            .map(|entry| {
                let (account, id) = self.parse_handle(entry)?;
                Ok((self.by_id[&account.id], id.to_owned()))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.remove(&ids, true).await
    }

    async fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), StoreError> {
        let (account, entry_id) = self.parse_handle(entry)?;
        let now = unix_millis() / 1000;
        // Safe to retry: a second run finds the entry gone and does nothing.
        let _moved: i64 = self
            .run("dead letter", || {
                let mut invocation = self.dead_letter_script.key(&account.outbox);
                invocation
                    .key(&account.dead)
                    .key(&account.dead_ids)
                    .arg(entry_id)
                    .arg(GROUP)
                    .arg(&entry.event.id)
                    .arg(reason)
                    .arg(now);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 || self.accounts.is_empty() {
            return Ok(Vec::new());
        }
        let pipes = self
            .accounts
            .iter()
            .map(|account| {
                let mut pipe = redis::pipe();
                pipe.cmd("XRANGE")
                    .arg(&account.dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit);
                pipe
            })
            .collect();
        let replies: Vec<Value> = self.pipelined("dead letters", pipes).await?;
        // Each account's list is oldest first; merged by entry id (Redis's clock, in ms).
        let mut letters = Vec::new();
        for reply in replies {
            for entry in entries(reply)? {
                let letter = DeadLetter {
                    event: entry.decode_event("dead letter")?,
                    reason: String::from_utf8_lossy(entry.field("reason").unwrap_or_default())
                        .into_owned(),
                    failed_at: entry.number("at").unwrap_or(0),
                };
                letters.push((entry_order(&entry.id), letter));
            }
        }
        letters.sort_by_key(|(order, _)| *order);
        let mut letters: Vec<_> = letters.into_iter().map(|(_, letter)| letter).collect();
        letters.truncate(limit);
        Ok(letters)
    }

    async fn replay_dead_letter(&self, event_id: &str) -> Result<bool, StoreError> {
        let now = unix_millis();
        // The event id does not name its account: ask every account's keys, all at once. Not
        // retried: a lost answer of a replay that ran would turn into "not found".
        let replays = self.accounts.iter().map(|account| {
            let mut invocation = self.replay_script.key(&account.dead_ids);
            invocation
                .key(&account.dead)
                .key(&account.outbox)
                .arg(event_id)
                .arg(now);
            let mut conn = self.conn.clone();
            async move {
                invocation
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| redis_error("replay dead letter", e))
            }
        });
        let replayed = futures::future::try_join_all(replays).await?;
        Ok(replayed.contains(&1))
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        if self.accounts.is_empty() {
            return Ok(OutboxStats::default());
        }
        let pipes = self
            .accounts
            .iter()
            .map(|account| {
                let mut pipe = redis::pipe();
                pipe.cmd("XLEN").arg(&account.outbox);
                pipe.cmd("XRANGE")
                    .arg(&account.outbox)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
                pipe
            })
            .collect();
        let replies: Vec<Value> = self.pipelined("outbox stats", pipes).await?;
        let mut stats = OutboxStats::default();
        let mut oldest_ms: Option<u64> = None;
        let mut replies = replies.into_iter();
        while let (Some(len), Some(first)) = (replies.next(), replies.next()) {
            stats.depth += u64::from_redis_value(len).map_err(|_| unexpected("XLEN"))?;
            if let Some(at) = entries(first)?.first().and_then(|e| e.number("at")) {
                oldest_ms = Some(oldest_ms.map_or(at, |o| o.min(at)));
            }
        }
        stats.oldest_age =
            oldest_ms.map(|at| Duration::from_millis(unix_millis().saturating_sub(at)));
        Ok(stats)
    }

    async fn cached_token(&self, key: &str) -> Result<Option<CachedToken>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(token_hash(key));
        let fields: HashMap<String, String> =
            self.run("read token", || query(&self.conn, &cmd)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let number = |name: &str| {
            fields
                .get(name)
                .map_or(Ok(0), |v| v.parse::<u64>())
                .map_err(|_| {
                    StoreError::Corrupt(format!("token {key:?}: field {name} is not a number"))
                })
        };
        Ok(Some(CachedToken {
            token: Secret::new(fields.get("t").cloned().unwrap_or_default()),
            expires_at_ms: number("exp")?,
            forced_at_ms: number("fat")?,
            forced_day: number("fday")?,
            forced_today: number("fcnt")? as u32,
        }))
    }

    async fn put_token(&self, key: &str, token: &CachedToken) -> Result<(), StoreError> {
        let hash = token_hash(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&hash)
            .arg("t")
            .arg(token.token.expose())
            .arg("exp")
            .arg(token.expires_at_ms)
            .arg("fat")
            .arg(token.forced_at_ms)
            .arg("fday")
            .arg(token.forced_day)
            .arg("fcnt")
            .arg(token.forced_today)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(TOKEN_KEY_TTL.as_millis() as u64)
            .ignore();
        self.run("write token", || query_pipe::<()>(&self.conn, &pipe))
            .await
    }

    async fn evict_token(&self, key: &str, rejected: &str) -> Result<bool, StoreError> {
        if rejected.is_empty() {
            return Ok(false);
        }
        let hash = token_hash(key);
        // Safe to retry: a second run finds the token already emptied and answers 0; the first
        // run's caller then waits for the refresh like any other.
        let evicted: i64 = self
            .run("evict token", || {
                let mut invocation = self.evict_token_script.key(&hash);
                invocation.arg(rejected);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(evicted == 1)
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(token_lease(key))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        // Not retried: had a lost answer taken the lease, a retry would see it held (by us)
        // and wait for a refresh that never comes until the lease lapses.
        let reply: Value = query(&self.conn, &cmd)
            .await
            .map_err(|e| redis_error("take token lease", e))?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let lease = token_lease(key);
        let _released: i64 = self
            .run("release token lease", || {
                let mut invocation = self.release_lease_script.key(&lease);
                invocation.arg(owner);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    async fn put_scene(
        &self,
        account: &str,
        scene: &str,
        record: &SceneRecord,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(scenes_hash(account))
            .arg(scene)
            .arg(encode_scene(record));
        self.run("register scene", || query::<()>(&self.conn, &cmd))
            .await
    }

    async fn scene(&self, account: &str, scene: &str) -> Result<Option<SceneRecord>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(scenes_hash(account)).arg(scene);
        let found: Option<Vec<u8>> = self.run("read scene", || query(&self.conn, &cmd)).await?;
        found
            .map(|bytes| decode_scene(&bytes, &format!("scene {scene:?} of {account:?}")))
            .transpose()
    }

    async fn put_menu_version(
        &self,
        account: &str,
        version: &MenuVersion,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(menu_versions_hash(account))
            .arg(version.version)
            .arg(encode_menu_version(version));
        // Not retried: had a lost answer stored it, a retry would answer "taken" and the caller
        // would store the same change again under the next number.
        let stored: i64 = query(&self.conn, &cmd)
            .await
            .map_err(|e| redis_error("store menu version", e))?;
        Ok(stored == 1)
    }

    async fn menu_versions(&self, account: &str) -> Result<Vec<MenuVersion>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(menu_versions_hash(account));
        let fields: HashMap<u64, Vec<u8>> = self
            .run("read menu versions", || query(&self.conn, &cmd))
            .await?;
        let mut versions = fields
            .into_iter()
            .map(|(n, bytes)| {
                decode_menu_version(&bytes, &format!("menu version {n} of {account:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn try_menu_lease(
        &self,
        account: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // The outbox's LEASE script: renews the owner's own lease, takes a free one.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEASE)
            .arg(1)
            .arg(menu_lease(account))
            .arg(owner)
            .arg(ttl.as_millis().max(1) as u64);
        let answer: i64 = self
            .run("take menu lease", || query(&self.conn, &cmd))
            .await?;
        Ok(answer != 0)
    }

    async fn release_menu_lease(&self, account: &str, owner: &str) -> Result<(), StoreError> {
        let lease = menu_lease(account);
        let _released: i64 = self
            .run("release menu lease", || {
                let mut invocation = self.release_lease_script.key(&lease);
                invocation.arg(owner);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    async fn put_doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
        value: &[u8],
        write: DocWrite,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let hash = docs_hash(account, kind);
        let now = unix_millis();
        let stored = encode_doc(value, ttl, now);
        let (mode, expected): (&str, &[u8]) = match &write {
            DocWrite::Always => ("a", b""),
            DocWrite::IfAbsent => ("n", b""),
            DocWrite::IfEquals(expected) => ("e", expected),
        };
        let written: i64 = self
            .run("write document", || {
                let mut invocation = self.put_doc_script.key(&hash);
                invocation
                    .arg(id)
                    .arg(&stored)
                    .arg(mode)
                    .arg(expected)
                    .arg(now);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(written == 1)
    }

    async fn doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(docs_hash(account, kind)).arg(id);
        let found: Option<Vec<u8>> = self
            .run("read document", || query(&self.conn, &cmd))
            .await?;
        match found {
            Some(stored) => Ok(live_doc(&stored, unix_millis())?.map(<[u8]>::to_vec)),
            None => Ok(None),
        }
    }

    async fn docs(&self, account: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(docs_hash(account, kind));
        let all: Vec<(String, Vec<u8>)> = self
            .run("list documents", || query(&self.conn, &cmd))
            .await?;
        let now = unix_millis();
        let mut out = Vec::with_capacity(all.len());
        for (id, stored) in all {
            if let Some(live) = live_doc(&stored, now)? {
                out.push((id, live.to_vec()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn delete_doc(&self, account: &str, kind: &str, id: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(docs_hash(account, kind)).arg(id);
        let removed: i64 = self
            .run("delete document", || query(&self.conn, &cmd))
            .await?;
        Ok(removed == 1)
    }

    /// The cursor is HSCAN's; the lapsed ids of a step are removed by one script that checks
    /// each again.
    async fn sweep_docs(
        &self,
        account: &str,
        kind: &str,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<(Option<String>, usize), StoreError> {
        let hash = docs_hash(account, kind);
        let mut cmd = redis::cmd("HSCAN");
        cmd.arg(&hash)
            .arg(cursor.unwrap_or("0"))
            .arg("COUNT")
            .arg(budget.max(1));
        let (next, fields): (String, Vec<(String, Vec<u8>)>) = self
            .run("scan documents", || query(&self.conn, &cmd))
            .await?;
        let now = unix_millis();
        let mut lapsed = Vec::new();
        for (id, stored) in fields {
            if live_doc(&stored, now)?.is_none() {
                lapsed.push(id);
            }
        }
        let removed: usize = if lapsed.is_empty() {
            0
        } else {
            self.run("remove lapsed documents", || {
                let mut invocation = self.delete_lapsed_docs_script.key(&hash);
                invocation.arg(now);
                for id in &lapsed {
                    invocation.arg(id);
                }
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?
        };
        Ok(((next != "0").then_some(next), removed))
    }
}

/// The [`OutboxEntry::handle`] of a stream entry: the account and the entry id.
fn handle(account: &str, entry_id: &str) -> String {
    format!("{account}\n{entry_id}")
}

async fn query<T: FromRedisValue>(conn: &Conn, cmd: &Cmd) -> RedisResult<T> {
    cmd.query_async(&mut conn.clone()).await
}

async fn query_pipe<T: FromRedisValue>(conn: &Conn, pipe: &Pipeline) -> RedisResult<T> {
    pipe.query_async(&mut conn.clone()).await
}

/// One Redis server: a connection for commands and one of its own for the blocking read.
async fn connect_single(url: &str) -> Result<(ConnectionManager, ConnectionManager), StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let conn = ConnectionManager::new_with_config(
        client.clone(),
        config.clone().set_response_timeout(Some(RESPONSE_TIMEOUT)),
    )
    .await
    .map_err(|e| redis_error("connect", e))?;
    let blocking = ConnectionManager::new_with_config(
        client,
        config.set_response_timeout(Some(MAX_BLOCK + RESPONSE_TIMEOUT)),
    )
    .await
    .map_err(|e| redis_error("connect", e))?;
    Ok((conn, blocking))
}

/// A Redis Cluster from a comma-separated list of node URLs (any reachable node is enough to
/// learn the slot map).
async fn connect_cluster(urls: &str) -> Result<ClusterConnection, StoreError> {
    let nodes: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = ClusterClientBuilder::new(nodes)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(3)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis Cluster URLs: {e}")))?;
    client
        .get_async_connection()
        .await
        .map_err(|e| redis_error("connect to the cluster", e))
}

/// Pipelines of several accounts as one (one server only: they span slots).
fn merge(pipes: impl IntoIterator<Item = Pipeline>) -> Pipeline {
    let mut all = redis::pipe();
    for pipe in pipes {
        for cmd in pipe.cmd_iter() {
            all.add_command(cmd.clone());
        }
    }
    all
}

/// [`RedisStore::run`] without a store, for the setup done inside `connect`.
async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    match op().await {
        Err(e) if e.is_connection_dropped() => op().await.map_err(|e| redis_error(what, e)),
        result => result.map_err(|e| redis_error(what, e)),
    }
}

fn redis_error(what: &str, e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis {what} failed: {e}"))
}

fn unexpected(command: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply shape from Redis {command}"))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sort key of a stream entry id `<ms>-<seq>`: the order in which Redis appended them.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (
        ms.parse().unwrap_or(u64::MAX),
        seq.parse().unwrap_or(u64::MAX),
    )
}

/// One stream entry as Redis returned it; `fields` is `None` when the entry was deleted while
/// pending (a pending-list read then returns only its id).
#[derive(Debug)]
struct StreamEntry {
    id: String,
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StreamEntry {
    fn exists(&self) -> bool {
        self.fields.is_some()
    }

    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    fn number(&self, name: &str) -> Option<u64> {
        std::str::from_utf8(self.field(name)?).ok()?.parse().ok()
    }

    fn decode_event(&self, what: &str) -> Result<pb::Event, StoreError> {
        let bytes = self
            .field("ev")
            .ok_or_else(|| StoreError::Corrupt(format!("{what} {} has no event", self.id)))?;
        pb::Event::decode(bytes)
            .map_err(|e| StoreError::Corrupt(format!("{what} {}: {e}", self.id)))
    }
}

fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unexpected("stream read")),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        _ => Err(unexpected("stream read")),
    }
}

/// `[[id, [field, value, ...] | nil], ...]` (XRANGE, and each stream of XREADGROUP).
fn entries(v: Value) -> Result<Vec<StreamEntry>, StoreError> {
    array(v)?
        .into_iter()
        .map(|entry| {
            let mut parts = array(entry)?.into_iter();
            let id = bytes(parts.next().ok_or_else(|| unexpected("stream read"))?)?;
            let id = String::from_utf8(id).map_err(|_| unexpected("stream read"))?;
            let fields = match parts.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Map(pairs)) => Some(
                    pairs
                        .into_iter()
                        .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
                        .collect::<Result<Vec<_>, StoreError>>()?,
                ),
                Some(flat) => {
                    let mut flat = array(flat)?.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(k)?, bytes(v)?));
                    }
                    Some(pairs)
                }
            };
            Ok(StreamEntry { id, fields })
        })
        .collect()
}

/// The streams of an XREADGROUP reply: `[[key, entries], ...]` in RESP2, a map in RESP3, nil
/// when nothing arrived.
fn streams(v: Value) -> Result<Vec<(String, Vec<StreamEntry>)>, StoreError> {
    let pairs = match v {
        Value::Map(pairs) => pairs,
        other => array(other)?
            .into_iter()
            .map(|stream| {
                let mut parts = array(stream)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(key), Some(entries)) => Ok((key, entries)),
                    _ => Err(unexpected("XREADGROUP")),
                }
            })
            .collect::<Result<_, StoreError>>()?,
    };
    pairs
        .into_iter()
        .map(|(key, list)| {
            let key = String::from_utf8(bytes(key)?).map_err(|_| unexpected("XREADGROUP"))?;
            Ok((key, entries(list)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// The slot-defining part of a key: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_an_account_shares_its_hash_tag() {
        let keys = AccountKeys::new("acme-mp".into());
        for key in [
            &keys.seen("abc"),
            &keys.outbox,
            &keys.dead,
            &keys.dead_ids,
            &scenes_hash("acme-mp"),
            &menu_versions_hash("acme-mp"),
            &menu_lease("acme-mp"),
        ] {
            assert_eq!(hash_tag(key), "acme-mp", "{key}");
        }
        assert_eq!(hash_tag(&token_hash("mp-wx1")), "mp-wx1");
        assert_eq!(hash_tag(&token_lease("mp-wx1")), "mp-wx1");
    }

    #[test]
    fn a_read_reply_gives_entries_and_marks_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("wgw:{a}:outbox"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("ev"), bulk("x"), bulk("at"), bulk("5")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let read = streams(reply).unwrap();
        assert_eq!(read.len(), 1);
        let (key, entries) = &read[0];
        assert_eq!(key, "wgw:{a}:outbox");
        assert_eq!(entries[0].field("ev"), Some(&b"x"[..]));
        assert_eq!(entries[0].number("at"), Some(5));
        assert!(!entries[1].exists());
        assert!(streams(Value::Nil).unwrap().is_empty(), "nothing arrived");
    }

    #[test]
    fn entry_ids_order_numerically() {
        let mut ids = vec!["10-0", "9-1", "9-0", "100-0"];
        ids.sort_by_key(|id| entry_order(id));
        assert_eq!(ids, ["9-0", "9-1", "10-0", "100-0"]);
    }
}
