//! The callback outbox of the Redis store: the streams, their consumer group and the per-account
//! leases that keep one instance at a time delivering an account (see [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::Message;
use redis::{FromRedisValue, Value};

use super::connection::{query, query_pipe, redis_error, MAX_BLOCK};
use super::scripts::LEASE;
use super::stream::{array, bytes, entries, entry_order, streams, StreamEntry};
use super::{unexpected, unix_millis, RedisStore, GROUP};
use crate::pb;
use crate::store::{Backlog, DeadLetter, Outbox, OutboxEntry, OutboxStats, Recorded, StoreError};

/// Cluster mode: how often an idle claim reads the held accounts again while it waits.
const CLUSTER_POLL: Duration = Duration::from_millis(50);

impl RedisStore {
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
    pub(super) async fn read_each(
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
    pub(super) async fn lease(
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
    pub(super) async fn take_over(&self, consumer: &str, account: usize) -> Result<(), StoreError> {
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
impl Outbox for RedisStore {
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError> {
        self.record_queued(event).await
    }

    async fn record_batch(&self, events: &[pb::Event]) -> Result<usize, StoreError> {
        let Some(first) = events.first() else {
            return Ok(0);
        };
        let account = self.account(&first.account_id)?;
        if let Some(other) = events.iter().find(|e| e.account_id != first.account_id) {
            return Err(StoreError::Corrupt(format!(
                "one batch of records for two accounts ({:?} and {:?})",
                first.account_id, other.account_id
            )));
        }
        let encoded: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
        let now = unix_millis();
        // Safe to retry like `record`: a repeat finds the marks of what the first run wrote.
        let new: i64 = self
            .run("record_batch", || {
                let mut invocation = self.record_batch_script.key(&account.outbox);
                for event in events {
                    invocation.key(account.seen(&event.id));
                }
                invocation.arg(self.dedup_ttl_ms).arg(now);
                for bytes in &encoded {
                    invocation.arg(bytes);
                }
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(usize::try_from(new).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.cluster {
            return self.ping_any().await;
        }
        let cmd = redis::cmd("PING");
        self.run("ping", || query::<()>(&self.conn, &cmd)).await
    }

    fn accounts_fail_apart(&self) -> bool {
        self.cluster
    }

    async fn claim_account(
        &self,
        consumer: &str,
        account: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if !self.cluster {
            return self.claim(consumer, max, wait).await;
        }
        let index = *self.by_id.get(account).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "account {account:?} is not configured for the Redis store"
            ))
        })?;
        self.claim_one(consumer, index, max, wait).await
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

    /// New entries only (`XREADGROUP ... >`), of the accounts whose lease this consumer held at
    /// the last look. When a lease is due to be asked again, nothing: the forwarder's next
    /// [`Outbox::claim`] asks, and delivers first whatever a take-over brings.
    async fn claim_next(
        &self,
        consumer: &str,
        account: Option<&str>,
        _after: &OutboxEntry,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let held = match account {
            Some(account) if self.cluster => {
                let index = *self.by_id.get(account).ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "account {account:?} is not configured for the Redis store"
                    ))
                })?;
                match self.holds_fresh(index) {
                    Some(true) => vec![index],
                    _ => return Ok(Vec::new()),
                }
            }
            _ => {
                let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                if leases
                    .renewed_at
                    .is_none_or(|at| at.elapsed() >= self.lease / 4)
                {
                    return Ok(Vec::new());
                }
                leases.held.clone()
            }
        };
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.read_group(consumer, &held, max, ">", Duration::ZERO)
            .await
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
            self.forget_leases(&accounts);
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
        // Per account: on a cluster, an account whose slot is unreachable is reported as such
        // and the others as usual.
        let replies: Vec<Result<Vec<Value>, StoreError>> =
            self.pipelined_apart("outbox stats", pipes).await;
        let now_ms = unix_millis();
        let mut accounts = BTreeMap::new();
        let mut unavailable = BTreeSet::new();
        for (account, reply) in self.accounts.iter().zip(replies) {
            let reply = match reply {
                Ok(reply) => reply,
                Err(StoreError::Unavailable(_)) if self.cluster => {
                    unavailable.insert(account.id.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut reply = reply.into_iter();
            let (Some(len), Some(first)) = (reply.next(), reply.next()) else {
                return Err(unexpected("outbox stats"));
            };
            let depth = u64::from_redis_value(len).map_err(|_| unexpected("XLEN"))?;
            if depth == 0 {
                continue;
            }
            let oldest_age = entries(first)?
                .first()
                .and_then(|e| e.number("at"))
                .map(|at| Duration::from_millis(now_ms.saturating_sub(at)));
            accounts.insert(account.id.clone(), Backlog { depth, oldest_age });
        }
        if unavailable.len() == self.accounts.len() {
            return Err(StoreError::Unavailable(
                "Redis outbox stats failed: no account's slot answers".into(),
            ));
        }
        Ok(OutboxStats {
            unavailable,
            ..OutboxStats::from_accounts(accounts)
        })
    }
}

/// The [`OutboxEntry::handle`] of a stream entry: the account and the entry id.
pub(super) fn handle(account: &str, entry_id: &str) -> String {
    format!("{account}\n{entry_id}")
}
