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
//!   version (written with `HSETNX`, so a number is never taken twice);
//! - `wgw:{<account>}:docs:<kind>`: a hash from id to a document;
//! - `wgw:{<token key>}:token`: a hash (`t` token, `exp` expiry in unix ms, `fat`/`fday`/`fcnt`
//!   the force-refresh budget) shared by every instance. The token key names the WeChat
//!   credential (appid, or corp and secret), see [`crate::wechat::tokens`];
//! - the leases ([`crate::store::Leases`]), each a string holding its owner, with an expiry:
//!   `wgw:{<token key>}:token:lease` (refreshing that token), `wgw:{<account>}:menu:lease`
//!   (changing the account's menu), `wgw:{<account>}:bcast:lease:<job>` (running a broadcast
//!   job), `wgw:{<account>}:sync:lease:<sync>` (running an audience sync). Taken, renewed by
//!   their holder and released by scripts that compare the owner.
//!
//! `record_batch` (a page of an audience sync) is one `EVALSHA` of `RECORD_BATCH` with the
//! account's outbox and every event's seen mark (one hash slot: the account's).
//!
//! `record` is one round trip whatever the number of accounts: one `EVALSHA` of the `RECORD`
//! script (mark and append, atomically; it is loaded at connect, and again on `NOSCRIPT`);
//! concurrent records share one `EVALSHA` of `RECORD_MANY` ([`record_queue`]): of any accounts on one
//! server, of one account (slot) on a cluster.
//! `claim` delivers each account's outbox from one instance at a time, so that events of one
//! user are never delivered out of order by two instances racing: an instance holds a lease
//! per account (`wgw:{<account>}:lease`, its consumer name, expiring after the lease time,
//! renewed by every claim and by [`Outbox::keep_claimed`](crate::store::Outbox::keep_claimed) while a batch is being retried). The
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
//! On a cluster the accounts fail apart (one master down, the others serving with
//! `cluster-require-full-coverage no`): the forwarder then claims one account at a time
//! (`claim_account`, each account's lease taken, renewed and taken over on its own), the ping
//! is answered by any account's slot and the stats report an unreachable account as such; see
//! [`apart`].
//!
//! Durability is Redis's own: an answered record survives a Redis restart only with
//! `appendonly yes` (and a power loss only with `appendfsync always`); `connect` warns when the
//! append-only file is off.
//!
//! Here: the store and its connection setup; [`connection`] the connections; [`scripts`] the Lua
//! scripts; [`keys`] the key names; [`outbox`] (with [`stream`], the stream replies),
//! [`tokens`], [`leases`] and [`records`] the roles.

mod apart;
mod connection;
mod keys;
mod leases;
mod outbox;
mod record_queue;
mod records;
mod scripts;
mod stream;
mod tokens;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{FromRedisValue, Pipeline, RedisResult, Script, Value};

use super::{OutboxEntry, StoreError};
use connection::{connect_cluster, connect_single, merge, query_pipe, redis_error, retrying, Conn};
use keys::AccountKeys;
use record_queue::RecordQueue;
use scripts::{
    DEAD_LETTER, DELETE_LAPSED_DOCS, EVICT_TOKEN, LEASE, PUT_DOC, RECORD, RECORD_BATCH,
    RELEASE_LEASE, REPLAY,
};

/// The consumer group of every outbox stream.
const GROUP: &str = "forwarders";
/// Default for [`RedisStore::with_lease`].
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct HeldAccounts {
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
    lease: Duration,
    /// The accounts whose lease this instance holds, and when the leases were last renewed
    /// (claim renews them at most every quarter lease).
    leases: Mutex<HeldAccounts>,
    /// Cluster mode: the same, per account (by index), for claims of one account at a time.
    account_leases: Vec<Mutex<apart::AccountLease>>,
    record_script: Script,
    record_batch_script: Script,
    dead_letter_script: Script,
    replay_script: Script,
    evict_token_script: Script,
    lease_script: Script,
    release_lease_script: Script,
    put_doc_script: Script,
    delete_lapsed_docs_script: Script,
    /// Concurrent records share script calls ([`record_queue`]).
    records: RecordQueue,
    /// The de-duplication window in milliseconds (for `record_batch`; the queue has its own copy).
    dedup_ttl_ms: u64,
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
        let account_leases = apart::account_leases(keys.len());
        let dedup_ttl_ms = dedup_ttl.as_millis().max(1) as u64;
        let store = Self {
            records: RecordQueue::new(conn.clone(), &keys, dedup_ttl_ms, cluster),
            dedup_ttl_ms,
            conn,
            blocking,
            cluster,
            accounts: keys,
            by_id,
            by_outbox,
            lease: DEFAULT_LEASE,
            leases: Mutex::new(HeldAccounts::default()),
            account_leases,
            record_script: Script::new(RECORD),
            record_batch_script: Script::new(RECORD_BATCH),
            dead_letter_script: Script::new(DEAD_LETTER),
            replay_script: Script::new(REPLAY),
            evict_token_script: Script::new(EVICT_TOKEN),
            lease_script: Script::new(LEASE),
            release_lease_script: Script::new(RELEASE_LEASE),
            put_doc_script: Script::new(PUT_DOC),
            delete_lapsed_docs_script: Script::new(DELETE_LAPSED_DOCS),
        };
        for script in [
            &store.record_script,
            &store.record_batch_script,
            &store.dead_letter_script,
            &store.replay_script,
            &store.evict_token_script,
            &store.lease_script,
            &store.release_lease_script,
            &store.put_doc_script,
        ] {
            script
                .load_async(&mut store.conn.clone())
                .await
                .map_err(|e| redis_error("load scripts", e))?;
        }
        store.records.load().await?;
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
}

fn unexpected(command: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply shape from Redis {command}"))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
