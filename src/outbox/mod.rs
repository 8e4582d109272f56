//! The forwarder: claim → deliver → ack, with backoff while the CRM is away and dead letters for
//! events it refuses.
//!
//! Crash trade-off: an event is acknowledged in the store only after the CRM accepted its batch,
//! so a crash between the CRM's answer and the ack delivers that batch again after the restart
//! (at least once; the CRM de-duplicates on `Event.id`). A failed batch is kept in memory and
//! retried as it is, in the same order, so events of one user are never reordered by a retry.
//!
//! Before a batch is delivered, the [`Decorate`] steps given at start-up complete it, in their
//! order: the use cases' part of delivery (QR-scene attribution, enrichment and the privacy
//! purge, attaching broadcast results to their jobs) lives with the use cases in
//! `crate::services`, and this module knows them only by that interface. They run here, off the
//! callback path, so a callback never waits for them.

mod availability;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::pb;
use crate::store::{OutboxEntry, Store, StoreError};
use availability::Availability;
use sink::{Delivered, Sink, SinkError};

/// How the forwarder paces itself.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// This instance's consumer name in the store (stable across restarts).
    pub consumer: String,
    /// Most events per `Deliver` call.
    pub batch_size: usize,
    /// How long one claim waits for new events before it returns empty.
    pub claim_wait: Duration,
    /// First retry delay after a failed delivery; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The configured accounts: each one's backlog is reported, at 0 when empty.
    pub accounts: Vec<String>,
}

impl ForwarderConfig {
    pub fn new(consumer: String) -> Self {
        Self {
            consumer,
            batch_size: 100,
            claim_wait: Duration::from_millis(200),
            backoff_min: Duration::from_millis(100),
            // Well under the Redis store's 30 s lease, which each retry renews.
            backoff_max: Duration::from_secs(10),
            accounts: Vec::new(),
        }
    }
}

/// One step that completes a batch just before it is delivered, in place. It must not fail the
/// batch: a lookup that fails leaves its events as they are (logged and counted by the step), so
/// delivery never waits or fails because of it. A batch that is retried, or split to find an
/// event the CRM refuses, goes through the steps again.
#[async_trait]
pub trait Decorate: Send + Sync {
    async fn decorate(&self, events: &mut [pb::Event]);
}

pub struct Forwarder {
    cfg: ForwarderConfig,
    /// Run on every batch, in this order, before it is delivered.
    decorators: Vec<Arc<dyn Decorate>>,
}

/// Capped exponential backoff with full jitter: the n-th consecutive failure waits a random
/// time in [d/2, d] where d = min(max, min * 2^n).
fn backoff(cfg: &ForwarderConfig, failures: u32) -> Duration {
    crate::backoff::jittered(crate::backoff::exponential(
        cfg.backoff_min,
        cfg.backoff_max,
        failures,
    ))
}

/// Batches claimed ahead ([`crate::store::Outbox::claim_next`]) before the forwarder lets the
/// pipeline drain and claims afresh: a fresh claim also returns what a claim ahead skips (events
/// a Redis lease take-over brought, say), so nothing waits behind a busy outbox for long.
const PREFETCH_RUN: u32 = 64;

/// Where a delivery loop claims from.
enum Source {
    /// Every account at once: the store's accounts fail together.
    All,
    /// One account: the store's accounts fail apart ([`crate::store::Outbox::accounts_fail_apart`]).
    Account(String),
}

/// What a delivered batch leaves to do in the store: dead-letter what the CRM refused,
/// acknowledge the rest. Drained as each step succeeds, so a retry does only what is left.
#[derive(Default)]
struct Settle {
    dead: Vec<(OutboxEntry, String)>,
    ack: Vec<OutboxEntry>,
}

impl Settle {
    fn len(&self) -> usize {
        self.dead.len() + self.ack.len()
    }

    fn extend(&mut self, other: Settle) {
        self.dead.extend(other.dead);
        self.ack.extend(other.ack);
    }
}

/// How far the delivery of a batch got.
struct Delivery {
    /// The first `done` entries of the batch reached the CRM (accepted or refused).
    done: usize,
    settle: Settle,
    /// Why the rest of the batch did not (it is retried).
    error: Option<SinkError>,
}

impl Forwarder {
    /// `decorators` complete each batch before delivery, in this order (module comment).
    pub fn new(cfg: ForwarderConfig, decorators: Vec<Arc<dyn Decorate>>) -> Self {
        Self { cfg, decorators }
    }

    /// Runs until `shutdown` is cancelled. Undelivered events stay in the store for the next
    /// run (of this instance or another). When the store's accounts fail apart, each account
    /// has a delivery loop of its own, so that one unreachable account never holds up another.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
    ) {
        let stats = tokio::spawn(report_stats(
            store.clone(),
            self.cfg.accounts.clone(),
            shutdown.clone(),
        ));
        let availability = Arc::new(Availability::default());
        let this = Arc::new(self);
        if store.accounts_fail_apart() {
            let mut loops = tokio::task::JoinSet::new();
            for account in &this.cfg.accounts {
                loops.spawn(this.clone().deliver_loop(
                    store.clone(),
                    sink.clone(),
                    Source::Account(account.clone()),
                    availability.clone(),
                    shutdown.clone(),
                ));
            }
            while loops.join_next().await.is_some() {}
            shutdown.cancelled().await;
        } else {
            this.deliver_loop(store, sink, Source::All, availability, shutdown)
                .await;
        }
        stats.abort();
    }

    /// Claim → deliver → settle until shutdown, for the accounts of `source`. While a batch is
    /// delivered, the previous one is settled and the next one claimed
    /// ([`crate::store::Outbox::claim_next`]), so that a batch costs the slowest of the three
    /// rather than their sum. Batches are still delivered one at a time, in order.
    async fn deliver_loop(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        source: Source,
        availability: Arc<Availability>,
        shutdown: CancellationToken,
    ) {
        let accounts = match &source {
            Source::All => self.cfg.accounts.clone(),
            Source::Account(account) => vec![account.clone()],
        };
        let account = match &source {
            Source::All => None,
            Source::Account(account) => Some(account.as_str()),
        };
        let mut failures: u32 = 0;
        // The batch being delivered (or retried), and the one claimed after it.
        let mut pending: Vec<OutboxEntry> = Vec::new();
        let mut next: Vec<OutboxEntry> = Vec::new();
        let mut unsettled = Settle::default();
        // Whether the last settle failed: it is then retried alone, with backoff.
        let mut settle_failing = false;
        // Batches claimed ahead since the last full claim (see PREFETCH_RUN).
        let mut prefetched: u32 = 0;
        loop {
            if pending.is_empty() {
                pending = std::mem::take(&mut next);
            }
            // What the CRM has is settled before anything else when nothing is in flight, on
            // shutdown, or after a failure (else the next claim or run would deliver it again):
            // when the store fails here only this step is retried, never the delivery.
            if unsettled.len() > 0
                && (settle_failing || pending.is_empty() || shutdown.is_cancelled())
            {
                match self.settle(&*store, &mut unsettled).await {
                    Ok(()) => {
                        settle_failing = false;
                        availability.succeeded(&accounts);
                    }
                    Err(e) => {
                        settle_failing = true;
                        failures = failures.saturating_add(1);
                        let wait = backoff(&self.cfg, failures);
                        self.settle_failed(&availability, &accounts, &e, unsettled.len(), wait);
                        if !sleep_or_stop(wait, &shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            if pending.is_empty() {
                let claim = async {
                    match account {
                        None => {
                            store
                                .claim(&self.cfg.consumer, self.cfg.batch_size, self.cfg.claim_wait)
                                .await
                        }
                        Some(account) => {
                            store
                                .claim_account(
                                    &self.cfg.consumer,
                                    account,
                                    self.cfg.batch_size,
                                    self.cfg.claim_wait,
                                )
                                .await
                        }
                    }
                };
                let claimed = tokio::select! {
                    r = claim => r,
                    _ = shutdown.cancelled() => break,
                };
                match claimed {
                    Ok(entries) => {
                        availability.succeeded(&accounts);
                        pending = entries;
                        prefetched = 0;
                    }
                    Err(e) => {
                        self.claim_failed(&availability, &accounts, &e);
                        failures = failures.saturating_add(1);
                        if !sleep_or_stop(backoff(&self.cfg, failures), &shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
                if pending.is_empty() {
                    continue;
                }
            }
            // A full batch suggests more behind it; a short one, that the outbox is drained.
            let claim_ahead = next.is_empty()
                && pending.len() >= self.cfg.batch_size
                && prefetched < PREFETCH_RUN;
            let after = pending.last().cloned();
            let settle_now = unsettled.len() > 0;
            let (delivery, settled, claimed) = tokio::join!(
                self.deliver(&*sink, &pending),
                async {
                    if settle_now {
                        Some(self.settle(&*store, &mut unsettled).await)
                    } else {
                        None
                    }
                },
                async {
                    match (&after, claim_ahead) {
                        (Some(after), true) => Some(
                            store
                                .claim_next(&self.cfg.consumer, account, after, self.cfg.batch_size)
                                .await,
                        ),
                        _ => None,
                    }
                },
            );
            match settled {
                Some(Ok(())) => availability.succeeded(&accounts),
                Some(Err(e)) => {
                    // Retried alone, with backoff, at the top of the loop.
                    settle_failing = true;
                    self.settle_failed(
                        &availability,
                        &accounts,
                        &e,
                        unsettled.len(),
                        Duration::ZERO,
                    );
                }
                None => {}
            }
            match claimed {
                Some(Ok(entries)) => {
                    prefetched += 1;
                    next = entries;
                }
                Some(Err(e)) => self.claim_failed(&availability, &accounts, &e),
                None => {}
            }
            unsettled.extend(delivery.settle);
            pending.drain(..delivery.done);
            let Some(e) = delivery.error else {
                failures = 0;
                continue;
            };
            failures = failures.saturating_add(1);
            metrics::counter!("wgw_delivery_failures_total").increment(1);
            let wait = backoff(&self.cfg, failures);
            tracing::warn!(error = %e, events = pending.len(), retry_in_ms = wait.as_millis() as u64,
                "delivery failed; the batch will be retried");
            if !sleep_or_stop(wait, &shutdown).await {
                continue; // settles what the CRM has, then stops
            }
            let claimed: Vec<OutboxEntry> = pending.iter().chain(&next).cloned().collect();
            match store.keep_claimed(&self.cfg.consumer, &claimed).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        events = claimed.len(),
                        "the claim on a batch lapsed; another instance delivers it"
                    );
                    pending.clear();
                    next.clear();
                }
                Err(e) => {
                    if !availability.failed(&accounts, &e) {
                        tracing::warn!(error = %e, "cannot renew the claim on a batch");
                    }
                }
            }
        }
    }

    fn settle_failed(
        &self,
        availability: &Availability,
        accounts: &[String],
        e: &StoreError,
        events: usize,
        wait: Duration,
    ) {
        let retry_in_ms = wait.as_millis() as u64;
        if !availability.failed(accounts, e) {
            tracing::warn!(error = %e, events, retry_in_ms,
                "cannot acknowledge delivered events in the outbox; retrying that step");
        } else {
            tracing::debug!(error = %e, events, retry_in_ms,
                "cannot acknowledge delivered events in the outbox; retrying that step");
        }
    }

    fn claim_failed(&self, availability: &Availability, accounts: &[String], e: &StoreError) {
        if !availability.failed(accounts, e) {
            tracing::warn!(error = %e, accounts = ?accounts, "cannot claim from the outbox");
        } else {
            tracing::debug!(error = %e, accounts = ?accounts, "cannot claim from the outbox");
        }
    }

    /// Delivers one batch: how much of it reached the CRM, and what that leaves to settle.
    async fn deliver(&self, sink: &dyn Sink, batch: &[OutboxEntry]) -> Delivery {
        let mut events: Vec<_> = batch.iter().map(|e| e.event.clone()).collect();
        for step in &self.decorators {
            step.decorate(&mut events).await;
        }
        let rejected = match sink.deliver(&events).await {
            Ok(Delivered { rejected }) => rejected,
            // One event poisons the request: find it by delivering one at a time, in order.
            Err(SinkError::Invalid(reason)) if batch.len() > 1 => {
                tracing::warn!(reason = %reason, events = batch.len(),
                    "the CRM refused a batch as invalid; delivering its events one by one");
                let mut settle = Settle::default();
                for (done, entry) in batch.iter().enumerate() {
                    let one = Box::pin(self.deliver(sink, std::slice::from_ref(entry))).await;
                    settle.extend(one.settle);
                    if one.error.is_some() {
                        return Delivery {
                            done,
                            settle,
                            error: one.error,
                        };
                    }
                }
                return Delivery {
                    done: batch.len(),
                    settle,
                    error: None,
                };
            }
            Err(SinkError::Invalid(reason)) => vec![(batch[0].event.id.clone(), reason)],
            Err(e) => {
                return Delivery {
                    done: 0,
                    settle: Settle::default(),
                    error: Some(e),
                }
            }
        };
        let mut settle = Settle::default();
        for entry in batch {
            match rejected.iter().find(|(id, _)| *id == entry.event.id) {
                Some((_, reason)) => {
                    tracing::warn!(event_id = %entry.event.id, reason = %reason,
                        "the CRM rejected an event; moved to the dead letters");
                    settle.dead.push((entry.clone(), reason.clone()));
                }
                None => settle.ack.push(entry.clone()),
            }
        }
        Delivery {
            done: batch.len(),
            settle,
            error: None,
        }
    }

    /// Settles delivered entries in the store: refused ones to the dead letters, the rest
    /// acknowledged. What succeeded is taken out of `settle`, so that a retry (both steps may
    /// run twice) does and counts only the rest.
    async fn settle(&self, store: &dyn Store, settle: &mut Settle) -> Result<(), StoreError> {
        while let Some((entry, reason)) = settle.dead.first() {
            store.dead_letter(entry, reason).await?;
            metrics::counter!("wgw_dead_letters_total").increment(1);
            settle.dead.remove(0);
        }
        store.ack(&settle.ack).await?;
        metrics::counter!("wgw_events_delivered_total").increment(settle.ack.len() as u64);
        settle.ack.clear();
        Ok(())
    }
}

/// Sleeps unless shutdown comes first; false when it did.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Publishes each account's outbox depth and the age of its oldest event every few seconds
/// (at 0 for an account with nothing waiting). A read that took long (a large backlog on the
/// embedded store is one scan) stretches the period, so reporting never costs more than about
/// 5% of one core.
async fn report_stats(store: Arc<dyn Store>, accounts: Vec<String>, shutdown: CancellationToken) {
    loop {
        let started = std::time::Instant::now();
        if let Ok(stats) = store.outbox_stats().await {
            // An account whose figures could not be read keeps its last ones.
            for account in accounts.iter().filter(|a| !stats.unavailable.contains(*a)) {
                let backlog = stats.accounts.get(account).copied().unwrap_or_default();
                metrics::gauge!("wgw_outbox_depth", "account" => account.clone())
                    .set(backlog.depth as f64);
                metrics::gauge!("wgw_outbox_oldest_age_seconds", "account" => account.clone())
                    .set(backlog.oldest_age.map_or(0.0, |d| d.as_secs_f64()));
            }
        }
        let period = Duration::from_secs(5).max(started.elapsed() * 20);
        if !sleep_or_stop(period, &shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let cfg = ForwarderConfig::new("t".into());
        for n in 0..40 {
            let d = backoff(&cfg, n);
            assert!(d <= cfg.backoff_max, "{n}: {d:?}");
            let full = cfg
                .backoff_min
                .saturating_mul(1 << n.min(20))
                .min(cfg.backoff_max);
            assert!(d >= full / 2, "{n}: {d:?}");
        }
    }
}
