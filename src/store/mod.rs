//! The storage interface, as roles a feature depends on only as it needs them:
//! - [`Outbox`]: de-duplication and the outbox, written atomically on the callback path, and the
//!   claim/ack/dead-letter operations of the forwarder;
//! - [`TokenCache`]: the WeChat access tokens every instance shares;
//! - [`Leases`]: one owner at a time for a [`LeaseKey`] (a token refresh, a menu change, a
//!   broadcast job);
//! - [`Scenes`]: the registry of QR scenes created through the gateway;
//! - [`MenuVersions`]: the numbered versions of each account's menu;
//! - [`Documents`]: the small records of the use cases, read and written through the typed
//!   [`DocKind`]s declared in [`kinds`].
//!
//! [`Store`] is all of them: what a backend implements and start-up wires.
//!
//! Two backends implement it and pass the same test suite: [`embedded`] (redb, one node, the
//! default) and [`redis`] (several instances side by side). Nothing outside this module names
//! either database.

pub mod docs;
pub mod embedded;
pub mod kinds;
mod lease;
pub mod redis;

pub use docs::{DocKind, DocWrite, Lapse, Stored};
pub use lease::LeaseKey;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::domain::Secret;
use crate::pb;

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What [`Outbox::record`] did.
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

/// Outbox depth and the age of its oldest undelivered event, in all and per account, for
/// metrics (`wgw_outbox_depth{account}`): a dashboard must see which account's CRM feed lags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    pub oldest_age: Option<Duration>,
    /// Only accounts with events waiting.
    pub accounts: std::collections::BTreeMap<String, Backlog>,
    /// Accounts whose figures could not be read because their part of the store is unreachable
    /// (a Redis Cluster master down): not in `accounts`, and not counted in the totals.
    pub unavailable: std::collections::BTreeSet<String>,
}

/// One account's undelivered events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub depth: u64,
    pub oldest_age: Option<Duration>,
}

impl OutboxStats {
    /// The totals from the per-account backlogs.
    pub(crate) fn from_accounts(accounts: std::collections::BTreeMap<String, Backlog>) -> Self {
        Self {
            depth: accounts.values().map(|b| b.depth).sum(),
            oldest_age: accounts.values().filter_map(|b| b.oldest_age).max(),
            accounts,
            unavailable: Default::default(),
        }
    }
}

/// A WeChat access token shared by every instance, under a token key (see
/// [`crate::wechat::tokens`]), with WeChat's `force_refresh` budget spent on it so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedToken {
    /// Empty once evicted (the budget fields survive the eviction).
    pub token: Secret,
    /// Unix ms at which WeChat said it expires.
    pub expires_at_ms: u64,
    /// Unix ms of the last `force_refresh`, 0 if none.
    pub forced_at_ms: u64,
    /// The UTC day (unix days) that `forced_today` counts.
    pub forced_day: u64,
    pub forced_today: u32,
}

/// A QR scene (or WeCom contact-me `state`) created through the gateway: what the forwarder
/// attaches to the events it brings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SceneRecord {
    pub label: String,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The admin token name or gRPC caller that created it.
    pub actor: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The welcome of the followers this code brings, instead of the account's default welcome.
    /// Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<crate::domain::autoreply::Reply>,
}

/// The callback outbox: de-duplication and the append, written atomically on the callback path,
/// and the claim/ack/dead-letter operations of the forwarder.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Atomically: if `event.id` has not been seen within the de-duplication window, mark it seen
    /// and append the event to the outbox. Returns only once both are durable; on error neither
    /// happened (so the callback answers 503 and WeChat retries).
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError>;

    /// [`Self::record`] for many events at once, as one store write (one transaction on the
    /// embedded backend, one script call on Redis; the events of one call belong to one
    /// account): each event is appended unless its id has been seen within the window, and the
    /// call returns only once all of them are durable; on error none of them was written. How
    /// many were new. An audience sync records a page of 100 snapshots this way.
    async fn record_batch(&self, events: &[pb::Event]) -> Result<usize, StoreError>;

    /// Whether the store answers (for `/readyz`). Where accounts fail apart, it answers while
    /// any account's part does: a partial outage keeps the instance in the load balancer.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether one account's part of the store can be unreachable while the others answer (a
    /// Redis Cluster: each account's keys share one slot, on one master). The forwarder then
    /// runs one loop per account over [`Outbox::claim_account`], so that an unreachable slot
    /// holds back its own account only (issue 17).
    fn accounts_fail_apart(&self) -> bool {
        false
    }

    /// [`Outbox::claim`] for one account only, with the same guarantees. Used when
    /// [`Outbox::accounts_fail_apart`]; a store whose accounts fail together needs no split, and
    /// by default claims from every account.
    async fn claim_account(
        &self,
        consumer: &str,
        account: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let _ = account;
        self.claim(consumer, max, wait).await
    }

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

    /// Claims up to `max` events that no claim of this consumer has returned yet, those after
    /// `after` (the last entry it claimed), without waiting; of `account` only when given (see
    /// [`Outbox::claim_account`]). The forwarder fetches batch n + 1 this way while it delivers
    /// batch n, so that the store's read, the delivery and the previous batch's ack overlap.
    /// Events it skips (claimed earlier and not acknowledged, or taken over from another
    /// consumer) are not lost: the next [`Outbox::claim`] returns them. The default finds
    /// nothing, and the forwarder claims again once the batch in flight is settled.
    async fn claim_next(
        &self,
        consumer: &str,
        account: Option<&str>,
        after: &OutboxEntry,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let _ = (consumer, account, after, max);
        Ok(Vec::new())
    }

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

/// The WeChat access tokens every instance shares (refreshed under a [`LeaseKey::token_refresh`]
/// lease).
#[async_trait]
pub trait TokenCache: Send + Sync {
    /// The token cached under `key`, evicted or not; `None` if there never was one.
    async fn cached_token(&self, key: &str) -> Result<Option<CachedToken>, StoreError>;

    /// Replaces the token (and its budget fields) under `key`. Only the holder of the token's
    /// lease calls this.
    async fn put_token(&self, key: &str, token: &CachedToken) -> Result<(), StoreError>;

    /// Compare-and-evict: empties the token under `key` only if it is still `rejected`, keeping
    /// the budget fields. `true` when this call evicted it; `false` when it had already been
    /// replaced or evicted (by another instance, or another request of this one).
    async fn evict_token(&self, key: &str, rejected: &str) -> Result<bool, StoreError>;
}

/// Leases: one owner at a time does something (refreshes a token, changes a menu, runs a
/// broadcast job) across every instance sharing the store.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease for `owner` when it is free or lapsed, or renews it when `owner` already
    /// holds it; either way it then lapses `ttl` from now. `false` (and nothing changed) while
    /// another owner holds it.
    async fn try_lease(
        &self,
        key: &LeaseKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Releases the lease if `owner` still holds it; otherwise does nothing.
    async fn release_lease(&self, key: &LeaseKey, owner: &str) -> Result<(), StoreError>;
}

/// The registry of QR scenes created through the gateway.
#[async_trait]
pub trait Scenes: Send + Sync {
    /// Registers (or replaces) a scene of an account.
    async fn put_scene(
        &self,
        account: &str,
        scene: &str,
        record: &SceneRecord,
    ) -> Result<(), StoreError>;

    /// The registered scene, if the gateway created it.
    async fn scene(&self, account: &str, scene: &str) -> Result<Option<SceneRecord>, StoreError>;
}

/// Each account's menu history (changed under a [`LeaseKey::menu`] lease).
#[async_trait]
pub trait MenuVersions: Send + Sync {
    /// Stores `version` under its number unless that number is taken; `false` then (another
    /// instance recorded one meanwhile: the caller takes the next number).
    async fn put_menu_version(
        &self,
        account: &str,
        version: &MenuVersion,
    ) -> Result<bool, StoreError>;

    /// Every version of the account's menu, oldest first.
    async fn menu_versions(&self, account: &str) -> Result<Vec<MenuVersion>, StoreError>;
}

/// Documents: the small records of the use cases (broadcast jobs, reply rules, links, the user
/// cache), bytes under (account, kind, id). Use cases read and write them through their typed
/// [`DocKind`]s (see [`kinds`]), which do the encoding; these are the raw operations.
#[async_trait]
pub trait Documents: Send + Sync {
    /// Writes the document `(account, kind, id)` as `write` allows; `ttl` makes it lapse (it
    /// then reads as absent). `true` when written, `false` when the condition did not hold.
    async fn put_doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
        value: &[u8],
        write: DocWrite,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// The document, unless absent or lapsed.
    async fn doc(&self, account: &str, kind: &str, id: &str)
        -> Result<Option<Vec<u8>>, StoreError>;

    /// Every live document of one kind of an account, by id. Meant for kinds that stay small
    /// (rules, jobs); a kind that grows without bound is read by id only.
    async fn docs(&self, account: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Deletes the document; `true` when there was one.
    async fn delete_doc(&self, account: &str, kind: &str, id: &str) -> Result<bool, StoreError>;

    /// Removes lapsed documents of one kind of an account, so that a kind written with a TTL
    /// (the user cache, link clicks) does not keep every record it ever held. Looks at about
    /// `budget` documents from `cursor` (`None`: from the start; otherwise what the previous
    /// step returned, opaque) and returns where to go on (`None` once the kind was gone
    /// through) and how many were removed. A document written again meanwhile (live) stays.
    async fn sweep_docs(
        &self,
        account: &str,
        kind: &str,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<(Option<String>, usize), StoreError>;
}

/// Every role at once: what a backend is, and what start-up wires. A feature that needs one
/// role takes `&dyn` that role (an `Arc<dyn Store>` upcasts to it).
pub trait Store:
    Outbox + TokenCache + Leases + Scenes + MenuVersions + Documents + 'static
{
}

impl<T> Store for T where
    T: Outbox + TokenCache + Leases + Scenes + MenuVersions + Documents + 'static
{
}

/// One version of an account's default menu: what a publish, a delete or a restore made live.
/// Numbered from 1 per account, never reused.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MenuVersion {
    pub version: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// The admin token name or gRPC caller that made the change.
    pub actor: String,
    /// The menu published, in WeChat's JSON shape (`{"button": [...]}`); `None` when this
    /// version deleted the menu.
    pub menu: Option<serde_json::Value>,
    /// The version this one published again, when it is a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
}

/// The menu versions' encoding, shared by both backends.
pub(crate) fn encode_menu_version(version: &MenuVersion) -> Vec<u8> {
    serde_json::to_vec(version).expect("a menu version serializes")
}

pub(crate) fn decode_menu_version(bytes: &[u8], what: &str) -> Result<MenuVersion, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The scene registry's encoding, shared by both backends.
pub(crate) fn encode_scene(record: &SceneRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a scene record serializes")
}

pub(crate) fn decode_scene(bytes: &[u8], what: &str) -> Result<SceneRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
