//! Redis Cluster, where accounts fail apart: each account's keys share one hash slot, so with
//! one master down the accounts in its slots are unreachable while the others are not (with
//! `cluster-require-full-coverage no`, the surviving masters keep serving their slots). Here is
//! what lets the rest of the gateway carry on then (issue 17): a claim of one account at a time,
//! under that account's own lease; a ping that any account's slot can answer; and a per-account
//! round trip for what spans accounts (the outbox stats), whose failures stay with their account.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{FromRedisValue, Pipeline};

use super::connection::{query, query_pipe};
use super::RedisStore;
use crate::store::{OutboxEntry, StoreError};

/// This instance's view of one account's delivery lease (cluster mode: claimed one account at
/// a time).
#[derive(Default)]
pub(super) struct AccountLease {
    held: bool,
    /// When the lease was last taken or renewed; a claim renews it after a quarter lease.
    renewed_at: Option<Instant>,
    /// The lease was taken anew and the entries the previous holder left pending are not yet
    /// taken over (kept until the take-over succeeds: the slot may fail in between).
    take_over_due: bool,
}

impl RedisStore {
    /// [`crate::store::Outbox::claim_account`] on a cluster: this account's lease, then its
    /// stream, as [`crate::store::Outbox::claim`] does for all accounts. An error concerns
    /// this account's slot only.
    pub(super) async fn claim_one(
        &self,
        consumer: &str,
        account: usize,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if max == 0 {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        if !self.hold(consumer, account).await? {
            // Another instance delivers this account: stand by until the lease is due to be
            // asked again, so that every answer of this claim comes from Redis (the forwarder
            // reports the account reachable on it).
            let asked = self.account_leases[account]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .renewed_at;
            let due = asked.map_or(Duration::ZERO, |at| {
                (self.lease / 4).saturating_sub(at.elapsed())
            });
            tokio::time::sleep(wait.max(due)).await;
            return Ok(Vec::new());
        }
        let own = self
            .read_each(consumer, &[account], max, "0", Duration::ZERO)
            .await?;
        if !own.is_empty() {
            return Ok(own);
        }
        self.read_each(consumer, &[account], max, ">", wait).await
    }

    /// Whether this instance holds the account's lease, taking or renewing it when a quarter
    /// lease has passed; a lease taken anew first takes over what its previous holder left.
    async fn hold(&self, consumer: &str, account: usize) -> Result<bool, StoreError> {
        let state = &self.account_leases[account];
        {
            let lease = state.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = lease
                .renewed_at
                .is_some_and(|at| at.elapsed() < self.lease / 4);
            if fresh && !lease.take_over_due {
                return Ok(lease.held);
            }
        }
        let (_, answer) = self.lease(consumer, &[account]).await?[0];
        let due = {
            let mut lease = state.lock().unwrap_or_else(|e| e.into_inner());
            lease.held = answer != 0;
            lease.renewed_at = Some(Instant::now());
            lease.take_over_due |= answer == 2;
            lease.take_over_due && lease.held
        };
        if due {
            self.take_over(consumer, account).await?;
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_over_due = false;
        }
        Ok(answer != 0)
    }

    /// Whether this instance holds the account's lease as last seen, without asking Redis:
    /// `None` when the lease is due to be asked again (or a take-over is due), which only
    /// [`Self::claim_one`] does, since a take-over must deliver what it took first.
    pub(super) fn holds_fresh(&self, account: usize) -> Option<bool> {
        let lease = self.account_leases[account]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fresh = lease
            .renewed_at
            .is_some_and(|at| at.elapsed() < self.lease / 4);
        (fresh && !lease.take_over_due).then_some(lease.held)
    }

    /// Makes the next claim of these accounts ask for their leases again instead of trusting
    /// what it saw last.
    pub(super) fn forget_leases(&self, accounts: &[usize]) {
        for &account in accounts {
            self.account_leases[account]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .renewed_at = None;
        }
    }

    /// Cluster mode's ping: a read in each account's slot, all at once; the store answers as
    /// soon as one does (and is down only when none does, or there are no accounts and the
    /// node asked does not answer).
    pub(super) async fn ping_any(&self) -> Result<(), StoreError> {
        if self.accounts.is_empty() {
            let cmd = redis::cmd("PING");
            return self.run("ping", || query::<()>(&self.conn, &cmd)).await;
        }
        let pings = self.accounts.iter().map(|account| {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(&account.lease);
            Box::pin(async move { self.run("ping", || query::<i64>(&self.conn, &cmd)).await })
        });
        futures::future::select_ok(pings).await.map(|_| ())
    }

    /// One pipeline per account, as [`RedisStore::pipelined`] sends them, but with the outcome
    /// of each account apart: on a cluster one account's slot failing fails its own answers
    /// only. On one server they are one round trip, and fail together.
    pub(super) async fn pipelined_apart<T: FromRedisValue + Send>(
        &self,
        what: &str,
        per_account: Vec<Pipeline>,
    ) -> Vec<Result<Vec<T>, StoreError>> {
        if !self.cluster {
            let sizes: Vec<usize> = per_account.iter().map(|p| p.cmd_iter().count()).collect();
            return match self.pipelined::<T>(what, per_account).await {
                Ok(answers) => {
                    let mut answers = answers.into_iter();
                    sizes
                        .iter()
                        .map(|&n| Ok(answers.by_ref().take(n).collect()))
                        .collect()
                }
                Err(e) => sizes.iter().map(|_| Err(e.clone())).collect(),
            };
        }
        let answers = per_account
            .iter()
            .map(|pipe| self.run(what, move || query_pipe::<Vec<T>>(&self.conn, pipe)));
        futures::future::join_all(answers).await
    }
}

/// One [`AccountLease`] per account.
pub(super) fn account_leases(accounts: usize) -> Vec<Mutex<AccountLease>> {
    (0..accounts).map(|_| Mutex::default()).collect()
}
