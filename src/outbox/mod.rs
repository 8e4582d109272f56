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

pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::pb;
use crate::store::{OutboxEntry, Store};
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

impl Forwarder {
    /// `decorators` complete each batch before delivery, in this order (module comment).
    pub fn new(cfg: ForwarderConfig, decorators: Vec<Arc<dyn Decorate>>) -> Self {
        Self { cfg, decorators }
    }

    /// Runs until `shutdown` is cancelled. Undelivered events stay in the store for the next
    /// run (of this instance or another).
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
        let mut failures: u32 = 0;
        let mut pending: Vec<OutboxEntry> = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if pending.is_empty() {
                let claimed = tokio::select! {
                    r = store.claim(&self.cfg.consumer, self.cfg.batch_size, self.cfg.claim_wait) => r,
                    _ = shutdown.cancelled() => break,
                };
                match claimed {
                    Ok(entries) => pending = entries,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim from the outbox");
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
            match self.deliver_once(&*store, &*sink, &pending).await {
                Ok(()) => {
                    pending.clear();
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("wgw_delivery_failures_total").increment(1);
                    let wait = backoff(&self.cfg, failures);
                    tracing::warn!(error = %e, events = pending.len(), retry_in_ms = wait.as_millis() as u64,
                        "delivery failed; the batch will be retried");
                    if !sleep_or_stop(wait, &shutdown).await {
                        break;
                    }
                    match store.keep_claimed(&self.cfg.consumer, &pending).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                events = pending.len(),
                                "the claim on a batch lapsed; another instance delivers it"
                            );
                            pending.clear();
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot renew the claim on a batch"),
                    }
                }
            }
        }
        stats.abort();
    }

    /// Delivers one batch and settles it in the store: rejected events to the dead letters,
    /// the rest acknowledged. Any error leaves the whole batch to be retried.
    async fn deliver_once(
        &self,
        store: &dyn Store,
        sink: &dyn Sink,
        batch: &[OutboxEntry],
    ) -> anyhow::Result<()> {
        let mut events: Vec<_> = batch.iter().map(|e| e.event.clone()).collect();
        for step in &self.decorators {
            step.decorate(&mut events).await;
        }
        let delivered = match sink.deliver(&events).await {
            Ok(d) => d,
            // One event poisons the request: find it by delivering one at a time, in order.
            Err(SinkError::Invalid(reason)) if batch.len() > 1 => {
                tracing::warn!(reason = %reason, events = batch.len(),
                    "the CRM refused a batch as invalid; delivering its events one by one");
                for entry in batch {
                    Box::pin(self.deliver_once(store, sink, std::slice::from_ref(entry))).await?;
                }
                return Ok(());
            }
            Err(SinkError::Invalid(reason)) => Delivered {
                rejected: vec![(batch[0].event.id.clone(), reason)],
            },
            Err(e) => return Err(e.into()),
        };
        let mut accepted = Vec::with_capacity(batch.len());
        for entry in batch {
            match delivered
                .rejected
                .iter()
                .find(|(id, _)| *id == entry.event.id)
            {
                Some((_, reason)) => {
                    tracing::warn!(event_id = %entry.event.id, reason = %reason,
                        "the CRM rejected an event; moved to the dead letters");
                    store.dead_letter(entry, reason).await?;
                    metrics::counter!("wgw_dead_letters_total").increment(1);
                }
                None => accepted.push(entry.clone()),
            }
        }
        store.ack(&accepted).await?;
        metrics::counter!("wgw_events_delivered_total").increment(accepted.len() as u64);
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
            for account in &accounts {
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
