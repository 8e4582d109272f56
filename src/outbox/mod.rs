//! The forwarder: claim → deliver → ack, with backoff while the CRM is away and dead letters for
//! events it refuses.
//!
//! Crash trade-off: an event is acknowledged in the store only after the CRM accepted its batch,
//! so a crash between the CRM's answer and the ack delivers that batch again after the restart
//! (at least once; the CRM de-duplicates on `Event.id`). A failed batch is kept in memory and
//! retried as it is, in the same order, so events of one user are never reordered by a retry.
//!
//! Attribution: before a batch is delivered, every event that carries a QR scene (subscribe
//! through a code, SCAN) or a contact-me `state` (WeCom `add_external_contact`) gets the label
//! of that scene from the store's scene registry (also `add_half_external_contact`). This happens here, off the callback path, so
//! a callback never waits for it; a lookup that fails only leaves the label empty (and is
//! logged): delivery never waits or fails because of it.
//!
//! Enrichment and the privacy purge ([`enrich`], issue 8) run at the same point, after
//! attribution.
//!
//! Broadcasts: a MASSSENDJOBFINISH of a batch sent by a broadcast job gets the job's id, and
//! its counts are recorded on the batch ([`crate::services::broadcast::attach_to_jobs`]), the
//! same way.

pub mod enrich;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pb::{self, event::Kind};
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
        }
    }
}

pub struct Forwarder {
    cfg: ForwarderConfig,
    /// `None` when `enrichment.enabled = false`.
    enricher: Option<Arc<enrich::Enricher>>,
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
    pub fn new(cfg: ForwarderConfig) -> Self {
        Self {
            cfg,
            enricher: None,
        }
    }

    /// Looks users up and purges departed users' data before each delivery ([`enrich`]).
    pub fn with_enricher(mut self, enricher: Arc<enrich::Enricher>) -> Self {
        self.enricher = Some(enricher);
        self
    }

    /// Runs until `shutdown` is cancelled. Undelivered events stay in the store for the next
    /// run (of this instance or another).
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
    ) {
        let stats = tokio::spawn(report_stats(store.clone(), shutdown.clone()));
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
        attribute(store, &mut events).await;
        if let Some(enricher) = &self.enricher {
            enricher.enrich(&mut events).await;
        }
        crate::services::broadcast::attach_to_jobs(store, &mut events).await;
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

/// The scene an event was brought by, if any: the registry key of [`attribute`].
fn scene_of(event: &pb::Event) -> Option<&str> {
    let scene = match event.kind.as_ref()? {
        Kind::Subscribe(s) => &s.scene,
        Kind::Scan(s) => &s.scene,
        // A half-added customer (add_half_external_contact) came through the code as well.
        Kind::ExternalContactChange(c)
            if c.change_type == "add_external_contact"
                || c.change_type == "add_half_external_contact" =>
        {
            &c.state
        }
        _ => return None,
    };
    (!scene.is_empty()).then_some(scene.as_str())
}

/// Sets the label of every event whose scene the gateway created (see the module comment).
async fn attribute(store: &dyn Store, events: &mut [pb::Event]) {
    for event in events.iter_mut() {
        if !event.label.is_empty() {
            continue;
        }
        let Some(scene) = scene_of(event) else {
            continue;
        };
        match store.scene(&event.account_id, scene).await {
            Ok(Some(record)) => event.label = record.label,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e,
                    "cannot look up the scene's label; delivering without it");
                metrics::counter!("wgw_attribution_failures_total").increment(1);
            }
        }
    }
}

/// Sleeps unless shutdown comes first; false when it did.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Publishes outbox depth and the age of its oldest event every few seconds.
async fn report_stats(store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        if let Ok(s) = store.outbox_stats().await {
            metrics::gauge!("wgw_outbox_depth").set(s.depth as f64);
            metrics::gauge!("wgw_outbox_oldest_age_seconds")
                .set(s.oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        }
        if !sleep_or_stop(Duration::from_secs(5), &shutdown).await {
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
