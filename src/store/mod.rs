//! The storage interface: de-duplication and the outbox, written atomically on the callback
//! path, and the claim/ack/dead-letter operations of the forwarder.
//!
//! Two backends implement it and pass the same test suite: [`embedded`] (redb, one node, the
//! default) and [`redis`] (several instances side by side). Nothing outside this module names
//! either database.

pub mod embedded;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::pb;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What [`Store::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this event id was seen: it is now durably in the outbox.
    New,
    /// Seen before (a WeChat retry): nothing was written.
    Duplicate,
}

/// An event claimed from the outbox, with the backend's handle to acknowledge it.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Backend-specific position (redb sequence number, Redis stream entry id and key).
    pub handle: String,
    pub event: pb::Event,
}

/// An event the CRM refused as invalid, kept for inspection and replay.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub event: pb::Event,
    pub reason: String,
    /// Unix seconds when it was dead-lettered.
    pub failed_at: u64,
}

/// Outbox depth and the age of its oldest undelivered event, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    pub oldest_age: Option<Duration>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Atomically: if `event.id` has not been seen within the de-duplication window, mark it seen
    /// and append the event to the outbox. Returns only once both are durable; on error neither
    /// happened (so the callback answers 503 and WeChat retries).
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Claims up to `max` undelivered events for this consumer, oldest first (per account in
    /// order), waiting up to `wait` when there are none. Events claimed but not acknowledged are
    /// returned again by a later claim (of this consumer, or of another one once this consumer
    /// is gone), so nothing is lost.
    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Called before a claimed batch is retried: keeps it this consumer's (renews whatever
    /// lease the backend holds for it). `false` means the claim was lost (this instance stalled
    /// past its lease and another took the entries over): drop the batch, the other delivers it.
    async fn keep_claimed(
        &self,
        consumer: &str,
        entries: &[OutboxEntry],
    ) -> Result<bool, StoreError> {
        let _ = (consumer, entries);
        Ok(true)
    }

    /// Removes delivered entries from the outbox.
    async fn ack(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;

    /// Moves one entry from the outbox to the dead-letter list, atomically.
    async fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), StoreError>;

    /// The dead-letter list, oldest first, at most `limit` entries.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts a dead-lettered event back into the outbox (with its original id). Returns false
    /// when no dead letter has that id.
    async fn replay_dead_letter(&self, event_id: &str) -> Result<bool, StoreError>;

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
}
