//! The embedded backend: redb, durable on one node with nothing else installed.
//!
//! One file, `<store.path>/gateway.redb`. Every write (record, ack, dead letter, replay) goes
//! through one writer thread, fed by a channel: it takes every request queued at that moment,
//! applies them in order in one write transaction and commits once, so concurrent callbacks
//! share one fsync (group commit; redb fsyncs each durable commit, and a disk does only a few
//! hundred a second). No caller is answered before that commit has returned, and a failed
//! commit fails every request of its batch. Reads (claim, stats, dead letters) are read
//! transactions on tokio's blocking pool, which redb runs beside the writer. No tokio worker
//! ever waits on redb, except [`Drop`], which waits for the writer's last batch.
//!
//! The scene registry and the menu versions are redb tables, written through the same writer.
//! Access tokens, their refresh leases and the menu leases live in memory: one node has no one to share them with, and after a
//! restart a token is simply fetched again (`stable_token` does not invalidate the old one).

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use prost::Message;
use redb::{
    Database, DatabaseError, MultimapTable, MultimapTableDefinition, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, ReadableTableMetadata, StorageError,
    Table, TableDefinition, WriteTransaction,
};
use tokio::sync::{oneshot, Notify};

use super::{
    decode_menu_version, decode_scene, encode_doc, encode_menu_version, encode_scene, live_doc,
    CachedToken, DeadLetter, DocWrite, MenuVersion, OutboxEntry, OutboxStats, Recorded,
    SceneRecord, Store, StoreError,
};
use crate::pb;

/// The database file inside `store.path`.
const FILE_NAME: &str = "gateway.redb";
/// redb's page cache unless `store.cache_mib` says otherwise (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// (the event's CreateTime in unix seconds, event id) → unix second at which its
/// de-duplication mark expires. WeChat's retries repeat the CreateTime, so the exact key is
/// known on lookup; leading with time keeps the inserts of a commit in the newest leaf pages
/// instead of scattering them over the tree (a random-id key dirtied one page per callback,
/// two `pwrite`s per callback in all), and lets pruning read the oldest keys first with no
/// second index.
const SEEN: TableDefinition<(u64, &str), u64> = TableDefinition::new("seen_by_time");
/// The layout before `SEEN` (id → expiry, plus an expiry index): dropped on open.
const LEGACY_SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
const LEGACY_SEEN_BY_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("seen_by_expiry");
/// Sequence number → (unix ms when enqueued, encoded `pb::Event`): the outbox, oldest first.
const OUTBOX: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("outbox");
/// Sequence number → (unix s when dead-lettered, reason, encoded `pb::Event`), oldest first.
const DEAD: TableDefinition<u64, (u64, &str, &[u8])> = TableDefinition::new("dead_letters");
/// Event id → its sequence numbers in [`DEAD`], so a replay needs no scan. A multimap because an
/// id can be dead-lettered twice when it was recorded again after its mark expired.
const DEAD_BY_ID: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("dead_letters_by_id");
/// `<account> 0x1f <scene>` → the JSON of its [`SceneRecord`].
const SCENES: TableDefinition<&str, &[u8]> = TableDefinition::new("scenes");
/// (account, version number) → the JSON of its [`MenuVersion`], so one account's versions are
/// one range, in order.
const MENU_VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("menu_versions");
/// `(account, kind, id)` → a document as [`super::encode_doc`] lays it out.
const DOCS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("docs");
/// Counters; [`NEXT_SEQ`] is the only one.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next sequence number for [`OUTBOX`] and [`DEAD`]. Never reused, so a stale handle
/// cannot acknowledge a newer entry.
const NEXT_SEQ: &str = "next_seq";

/// Most requests in one transaction, so one batch cannot hold its callers for long.
const MAX_BATCH: usize = 1024;
/// How often the writer removes expired de-duplication marks.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most marks removed by one pruning transaction; the rest follow right after, between batches.
const PRUNE_MAX: usize = 10_000;

pub struct EmbeddedStore {
    db: Arc<Database>,
    /// To the writer thread; `None` only while dropping.
    writer: Option<mpsc::Sender<Request>>,
    /// The writer thread, joined on drop.
    writer_thread: Option<JoinHandle<()>>,
    /// Signalled by the writer after a commit that appended to the outbox; waited on by claim.
    appended: Arc<Notify>,
    /// Token key → the cached access token.
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Token key (or [`menu_lease_key`]) → (holder, lapses at).
    leases: Mutex<HashMap<String, (String, Instant)>>,
    /// Successful commits, so a test can see that concurrent records shared them.
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicU64>,
}

/// Locks a mutex, going on after a panic elsewhere (the maps stay consistent: every update is
/// one insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn scene_key(account: &str, scene: &str) -> String {
    format!("{account}\u{1f}{scene}")
}

/// The lease map's key of an account's menu lease (token keys never start with `menu`).
fn menu_lease_key(account: &str) -> String {
    format!("menu\u{1f}{account}")
}

impl EmbeddedStore {
    /// Opens (creating if needed) `path/gateway.redb` with redb's page cache at
    /// [`DEFAULT_CACHE_BYTES`]. Fails if another process has it open.
    pub fn open(path: &Path, dedup_ttl: Duration) -> Result<Self, StoreError> {
        Self::open_with_cache(path, dedup_ttl, DEFAULT_CACHE_BYTES)
    }

    /// [`Self::open`] with a page cache of `cache_bytes` (`store.cache_mib`).
    pub fn open_with_cache(
        path: &Path,
        dedup_ttl: Duration,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the store directory {}: {e}",
                path.display()
            ))
        })?;
        let file = path.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&file)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                    "{} is locked by another process (is another gateway running with this \
                 store path?)",
                    file.display()
                )),
                e => StoreError::Unavailable(format!("cannot open {}: {e}", file.display())),
            })?;
        create_tables(&db).map_err(unavailable)?;
        let db = Arc::new(db);
        let appended = Arc::new(Notify::new());
        #[cfg(test)]
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (writer, requests) = mpsc::channel();
        let w = Writer {
            db: db.clone(),
            requests,
            // A mark lasts whole seconds; never less than one.
            dedup_ttl_secs: dedup_ttl.as_secs().max(1),
            appended: appended.clone(),
            #[cfg(test)]
            commits: commits.clone(),
        };
        let writer_thread = std::thread::Builder::new()
            .name("wgw-store-writer".into())
            .spawn(move || w.run())
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store writer thread: {e}"))
            })?;
        Ok(Self {
            db,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            appended,
            tokens: Mutex::default(),
            leases: Mutex::default(),
            #[cfg(test)]
            commits,
        })
    }

    /// Sends one write to the writer thread and waits until its batch has committed.
    async fn write(&self, op: Op) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(Request { op, reply })
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Takes the in-memory lease `key` unless another owner holds it.
    fn take_lease(&self, key: &str, owner: &str, ttl: Duration) -> bool {
        let mut leases = lock(&self.leases);
        let now = Instant::now();
        match leases.get(key) {
            Some((holder, lapses)) if holder != owner && *lapses > now => false,
            _ => {
                leases.insert(key.to_owned(), (owner.to_owned(), now + ttl));
                true
            }
        }
    }

    fn drop_lease(&self, key: &str, owner: &str) {
        let mut leases = lock(&self.leases);
        if leases.get(key).is_some_and(|(holder, _)| holder == owner) {
            leases.remove(key);
        }
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db.begin_read().map_err(unavailable)?))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store: read failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel stops the writer after its current batch. Waiting for it (one
        // commit at most) releases the file lock before drop returns, so the same path can be
        // opened again at once.
        drop(self.writer.take());
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError> {
        let op = Op::Record {
            at: event
                .occurred_at
                .as_ref()
                .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0)),
            id: event.id.clone(),
            event: event.encode_to_vec(),
        };
        Ok(match self.write(op).await? {
            true => Recorded::New,
            false => Recorded::Duplicate,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self
            .writer_thread
            .as_ref()
            .is_none_or(|thread| thread.is_finished())
        {
            return Err(writer_stopped());
        }
        self.read(|txn| {
            txn.open_table(META).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// One node, one forwarder: the consumer name is not needed. Unacknowledged entries stay at
    /// the head of the outbox, so the next claim returns them again.
    async fn claim(
        &self,
        _consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before reading, so an append committed after the read still wakes us.
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let entries = self.read(move |txn| oldest(txn, max)).await?;
            if !entries.is_empty() {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let seqs = entries
            .iter()
            .map(sequence)
            .collect::<Result<Vec<_>, _>>()?;
        self.write(Op::Ack { seqs }).await.map(|_| ())
    }

    async fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), StoreError> {
        let op = Op::DeadLetter {
            seq: sequence(entry)?,
            id: entry.event.id.clone(),
            reason: reason.to_owned(),
        };
        self.write(op).await.map(|_| ())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |txn| {
            let dead = txn.open_table(DEAD).map_err(unavailable)?;
            let mut letters = Vec::new();
            for row in dead.iter().map_err(unavailable)?.take(limit) {
                let (seq, value) = row.map_err(unavailable)?;
                let (failed_at, reason, event) = value.value();
                letters.push(DeadLetter {
                    event: decode(event, "dead letter", seq.value())?,
                    reason: reason.to_owned(),
                    failed_at,
                });
            }
            Ok(letters)
        })
        .await
    }

    async fn replay_dead_letter(&self, event_id: &str) -> Result<bool, StoreError> {
        self.write(Op::Replay {
            id: event_id.to_owned(),
        })
        .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.read(|txn| {
            let outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
            let depth = outbox.len().map_err(unavailable)?;
            let oldest_ms = outbox
                .first()
                .map_err(unavailable)?
                .map(|(_, value)| value.value().0);
            let now_ms = Now::get().millis;
            Ok(OutboxStats {
                depth,
                oldest_age: oldest_ms.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms))),
            })
        })
        .await
    }

    async fn cached_token(&self, key: &str) -> Result<Option<CachedToken>, StoreError> {
        Ok(lock(&self.tokens).get(key).cloned())
    }

    async fn put_token(&self, key: &str, token: &CachedToken) -> Result<(), StoreError> {
        lock(&self.tokens).insert(key.to_owned(), token.clone());
        Ok(())
    }

    async fn evict_token(&self, key: &str, rejected: &str) -> Result<bool, StoreError> {
        let mut tokens = lock(&self.tokens);
        match tokens.get_mut(key) {
            Some(cached) if !rejected.is_empty() && cached.token.expose() == rejected => {
                cached.token = Default::default();
                cached.expires_at_ms = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.take_lease(key, owner, ttl))
    }

    async fn release_lease(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.drop_lease(key, owner);
        Ok(())
    }

    async fn put_scene(
        &self,
        account: &str,
        scene: &str,
        record: &SceneRecord,
    ) -> Result<(), StoreError> {
        self.write(Op::PutScene {
            key: scene_key(account, scene),
            record: encode_scene(record),
        })
        .await
        .map(|_| ())
    }

    async fn scene(&self, account: &str, scene: &str) -> Result<Option<SceneRecord>, StoreError> {
        let key = scene_key(account, scene);
        self.read(move |txn| {
            let scenes = txn.open_table(SCENES).map_err(unavailable)?;
            let found = scenes.get(key.as_str()).map_err(unavailable)?;
            found
                .map(|v| decode_scene(v.value(), &format!("scene {key:?}")))
                .transpose()
        })
        .await
    }

    async fn put_menu_version(
        &self,
        account: &str,
        version: &MenuVersion,
    ) -> Result<bool, StoreError> {
        self.write(Op::PutMenuVersion {
            account: account.to_owned(),
            version: version.version,
            record: encode_menu_version(version),
        })
        .await
    }

    async fn menu_versions(&self, account: &str) -> Result<Vec<MenuVersion>, StoreError> {
        let account = account.to_owned();
        self.read(move |txn| {
            let versions = txn.open_table(MENU_VERSIONS).map_err(unavailable)?;
            let rows = versions
                .range((account.as_str(), 0)..=(account.as_str(), u64::MAX))
                .map_err(unavailable)?;
            rows.map(|row| {
                let (key, value) = row.map_err(unavailable)?;
                let (_, n) = key.value();
                decode_menu_version(value.value(), &format!("menu version {n} of {account:?}"))
            })
            .collect()
        })
        .await
    }

    async fn try_menu_lease(
        &self,
        account: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.take_lease(&menu_lease_key(account), owner, ttl))
    }

    async fn release_menu_lease(&self, account: &str, owner: &str) -> Result<(), StoreError> {
        self.drop_lease(&menu_lease_key(account), owner);
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
        self.write(Op::PutDoc {
            key: (account.to_owned(), kind.to_owned(), id.to_owned()),
            stored: encode_doc(value, ttl, Now::get().millis),
            write,
        })
        .await
    }

    async fn doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = (account.to_owned(), kind.to_owned(), id.to_owned());
        self.read(move |txn| {
            let docs = txn.open_table(DOCS).map_err(unavailable)?;
            let found = docs
                .get((key.0.as_str(), key.1.as_str(), key.2.as_str()))
                .map_err(unavailable)?;
            match found {
                Some(v) => Ok(live_doc(v.value(), Now::get().millis)?.map(<[u8]>::to_vec)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn docs(&self, account: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (account, kind) = (account.to_owned(), kind.to_owned());
        self.read(move |txn| {
            let docs = txn.open_table(DOCS).map_err(unavailable)?;
            let now = Now::get().millis;
            let mut out = Vec::new();
            for row in docs
                .range((account.as_str(), kind.as_str(), "")..)
                .map_err(unavailable)?
            {
                let (key, value) = row.map_err(unavailable)?;
                let (a, k, id) = key.value();
                if a != account || k != kind {
                    break;
                }
                if let Some(live) = live_doc(value.value(), now)? {
                    out.push((id.to_owned(), live.to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_doc(&self, account: &str, kind: &str, id: &str) -> Result<bool, StoreError> {
        self.write(Op::DeleteDoc {
            key: (account.to_owned(), kind.to_owned(), id.to_owned()),
        })
        .await
    }

    /// The cursor is the last id looked at; the lapsed ones found by a read are removed by the
    /// writer only if still lapsed, in as few commits as the group commit makes of them.
    async fn sweep_docs(
        &self,
        account: &str,
        kind: &str,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<(Option<String>, usize), StoreError> {
        let (a, k) = (account.to_owned(), kind.to_owned());
        let after = cursor.map(str::to_owned);
        let budget = budget.max(1);
        let (lapsed, last, more) = self
            .read(move |txn| {
                let docs = txn.open_table(DOCS).map_err(unavailable)?;
                let now = Now::get().millis;
                let start = match &after {
                    Some(id) => Bound::Excluded((a.as_str(), k.as_str(), id.as_str())),
                    None => Bound::Included((a.as_str(), k.as_str(), "")),
                };
                let (mut lapsed, mut last, mut seen) = (Vec::new(), None, 0);
                for row in docs
                    .range::<(&str, &str, &str)>((start, Bound::Unbounded))
                    .map_err(unavailable)?
                {
                    let (key, value) = row.map_err(unavailable)?;
                    let (ra, rk, id) = key.value();
                    if ra != a || rk != k {
                        return Ok((lapsed, last, false));
                    }
                    if seen == budget {
                        return Ok((lapsed, last, true));
                    }
                    seen += 1;
                    if live_doc(value.value(), now)?.is_none() {
                        lapsed.push(id.to_owned());
                    }
                    last = Some(id.to_owned());
                }
                Ok((lapsed, last, false))
            })
            .await?;
        let removals = lapsed.into_iter().map(|id| {
            self.write(Op::DeleteLapsedDoc {
                key: (account.to_owned(), kind.to_owned(), id),
            })
        });
        let mut removed = 0;
        for outcome in futures::future::join_all(removals).await {
            removed += usize::from(outcome?);
        }
        Ok((if more { last } else { None }, removed))
    }
}

/// The oldest `max` outbox entries.
fn oldest(txn: &ReadTransaction, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
    let outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
    let mut entries = Vec::new();
    for row in outbox.iter().map_err(unavailable)?.take(max) {
        let (seq, value) = row.map_err(unavailable)?;
        let (_, event) = value.value();
        entries.push(OutboxEntry {
            handle: seq.value().to_string(),
            event: decode(event, "outbox entry", seq.value())?,
        });
    }
    Ok(entries)
}

fn decode(bytes: &[u8], what: &str, seq: u64) -> Result<pb::Event, StoreError> {
    pb::Event::decode(bytes).map_err(|e| StoreError::Corrupt(format!("{what} {seq}: {e}")))
}

/// The outbox sequence number an [`OutboxEntry`] of this backend carries.
fn sequence(entry: &OutboxEntry) -> Result<u64, StoreError> {
    entry.handle.parse().map_err(|_| {
        StoreError::Corrupt(format!(
            "{:?} is not an embedded outbox handle",
            entry.handle
        ))
    })
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("embedded store: the writer thread has stopped".into())
}

/// Creates every table, so that read transactions find them in a new file.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(SEEN)?;
    txn.delete_table(LEGACY_SEEN)?;
    txn.delete_table(LEGACY_SEEN_BY_EXPIRY)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(DEAD)?;
    txn.open_multimap_table(DEAD_BY_ID)?;
    txn.open_table(META)?;
    txn.open_table(SCENES)?;
    txn.open_table(MENU_VERSIONS)?;
    txn.open_table(DOCS)?;
    txn.commit()?;
    Ok(())
}

/// One write, as the writer thread applies it.
enum Op {
    Record {
        /// The event's CreateTime (unix s): the first part of its de-duplication key.
        at: u64,
        id: String,
        event: Vec<u8>,
    },
    Ack {
        seqs: Vec<u64>,
    },
    DeadLetter {
        seq: u64,
        id: String,
        reason: String,
    },
    Replay {
        id: String,
    },
    PutScene {
        key: String,
        record: Vec<u8>,
    },
    /// Answers false, writing nothing, when the version number is taken.
    PutMenuVersion {
        account: String,
        version: u64,
        record: Vec<u8>,
    },
    /// Answers false, writing nothing, when `write`'s condition does not hold.
    PutDoc {
        key: (String, String, String),
        stored: Vec<u8>,
        write: DocWrite,
    },
    DeleteDoc {
        key: (String, String, String),
    },
    /// Answers false, removing nothing, when the document is live (written again meanwhile).
    DeleteLapsedDoc {
        key: (String, String, String),
    },
}

/// A write and where to answer once its batch has committed. The answer is what the write
/// did: recorded as new, moved to the dead letters, replayed (always true for an ack).
struct Request {
    op: Op,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The wall clock, read once per batch.
#[derive(Clone, Copy)]
struct Now {
    secs: u64,
    millis: u64,
}

impl Now {
    fn get() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: since_epoch.as_secs(),
            millis: since_epoch.as_millis() as u64,
        }
    }
}

/// The writer thread's state; see the module comment.
struct Writer {
    db: Arc<Database>,
    requests: mpsc::Receiver<Request>,
    dedup_ttl_secs: u64,
    appended: Arc<Notify>,
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    /// Runs until the store is dropped (the channel closes).
    fn run(self) {
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            match self
                .requests
                .recv_timeout(next_prune.saturating_duration_since(Instant::now()))
            {
                Ok(first) => {
                    // Everything that queued up while the previous commit was syncing.
                    let mut batch = vec![first];
                    batch.extend(self.requests.try_iter().take(MAX_BATCH - 1));
                    self.commit(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_prune {
                let more =
                    prune(&self.db, Now::get().secs, self.dedup_ttl_secs).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "embedded store: cannot prune expired ids");
                        false
                    });
                next_prune = Instant::now() + if more { Duration::ZERO } else { PRUNE_EVERY };
            }
        }
    }

    /// Applies a batch in one transaction and answers every request after the commit.
    fn commit(&self, batch: Vec<Request>) {
        let now = Now::get();
        let result = (|| -> Result<(Vec<bool>, bool), redb::Error> {
            let txn = self.db.begin_write()?;
            let (outcomes, appended) = {
                let mut tables = Tables::open(&txn, self.dedup_ttl_secs)?;
                let outcomes = batch
                    .iter()
                    .map(|request| tables.apply(&request.op, now))
                    .collect::<Result<Vec<_>, _>>()?;
                tables.save_next_seq()?;
                (outcomes, tables.appended)
            };
            txn.commit()?;
            Ok((outcomes, appended))
        })();
        match result {
            Ok((outcomes, appended)) => {
                #[cfg(test)]
                self.commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if appended {
                    self.appended.notify_waiters();
                }
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    // A caller that went away (a cancelled request) needs no answer.
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "embedded store: commit failed");
                let message = format!("embedded store: cannot commit: {e}");
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// The tables of one write transaction. Opening a redb table costs about as much as a
/// callback's two inserts (callgrind: ~35,000 instructions for the eight), and an opened table
/// is flushed at commit: a batch of callbacks needs three, so the others open on first use.
type DeadTable<'txn> = Table<'txn, u64, (u64, &'static str, &'static [u8])>;
type DocsTable<'txn> = Table<'txn, (&'static str, &'static str, &'static str), &'static [u8]>;

struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    seen: Table<'txn, (u64, &'static str), u64>,
    outbox: Table<'txn, u64, (u64, &'static [u8])>,
    meta: Table<'txn, &'static str, u64>,
    dead: Option<DeadTable<'txn>>,
    dead_by_id: Option<MultimapTable<'txn, &'static str, u64>>,
    scenes: Option<Table<'txn, &'static str, &'static [u8]>>,
    menu_versions: Option<Table<'txn, (&'static str, u64), &'static [u8]>>,
    docs: Option<DocsTable<'txn>>,
    next_seq: u64,
    dedup_ttl_secs: u64,
    /// Whether this transaction added to the outbox (claims waiting should look again).
    appended: bool,
}

/// `slot`'s table, opened on first use.
fn opened<T>(
    slot: &mut Option<T>,
    open: impl FnOnce() -> Result<T, redb::TableError>,
) -> Result<&mut T, StorageError> {
    if slot.is_none() {
        *slot = Some(open().map_err(table_error)?);
    }
    Ok(slot.as_mut().expect("opened just now"))
}

/// A table that cannot be opened mid-transaction is a storage failure of this batch.
fn table_error(e: redb::TableError) -> StorageError {
    match e {
        redb::TableError::Storage(e) => e,
        other => StorageError::Corrupted(other.to_string()),
    }
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction, dedup_ttl_secs: u64) -> Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        let next_seq = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
        Ok(Self {
            txn,
            seen: txn.open_table(SEEN)?,
            outbox: txn.open_table(OUTBOX)?,
            meta,
            dead: None,
            dead_by_id: None,
            scenes: None,
            menu_versions: None,
            docs: None,
            next_seq,
            dedup_ttl_secs,
            appended: false,
        })
    }

    fn dead(&mut self) -> Result<&mut DeadTable<'txn>, StorageError> {
        let txn = self.txn;
        opened(&mut self.dead, || txn.open_table(DEAD))
    }

    fn dead_by_id(&mut self) -> Result<&mut MultimapTable<'txn, &'static str, u64>, StorageError> {
        let txn = self.txn;
        opened(&mut self.dead_by_id, || txn.open_multimap_table(DEAD_BY_ID))
    }

    fn scenes(&mut self) -> Result<&mut Table<'txn, &'static str, &'static [u8]>, StorageError> {
        let txn = self.txn;
        opened(&mut self.scenes, || txn.open_table(SCENES))
    }

    fn menu_versions(
        &mut self,
    ) -> Result<&mut Table<'txn, (&'static str, u64), &'static [u8]>, StorageError> {
        let txn = self.txn;
        opened(&mut self.menu_versions, || txn.open_table(MENU_VERSIONS))
    }

    fn docs(&mut self) -> Result<&mut DocsTable<'txn>, StorageError> {
        let txn = self.txn;
        opened(&mut self.docs, || txn.open_table(DOCS))
    }

    fn save_next_seq(&mut self) -> Result<(), StorageError> {
        self.meta.insert(NEXT_SEQ, self.next_seq)?;
        Ok(())
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn apply(&mut self, op: &Op, now: Now) -> Result<bool, StorageError> {
        match op {
            Op::Record { at, id, event } => self.record(*at, id, event, now),
            Op::Ack { seqs } => {
                for seq in seqs {
                    self.outbox.remove(seq)?;
                }
                Ok(true)
            }
            Op::DeadLetter { seq, id, reason } => self.dead_letter(*seq, id, reason, now),
            Op::Replay { id } => self.replay(id, now),
            Op::PutScene { key, record } => {
                self.scenes()?.insert(key.as_str(), record.as_slice())?;
                Ok(true)
            }
            Op::PutMenuVersion {
                account,
                version,
                record,
            } => {
                let key = (account.as_str(), *version);
                if self.menu_versions()?.get(key)?.is_some() {
                    return Ok(false);
                }
                self.menu_versions()?.insert(key, record.as_slice())?;
                Ok(true)
            }
            Op::PutDoc { key, stored, write } => {
                let key = (key.0.as_str(), key.1.as_str(), key.2.as_str());
                let allowed = match write {
                    DocWrite::Always => true,
                    condition => {
                        let docs = self.docs()?;
                        let current = docs.get(key)?;
                        let live = match &current {
                            Some(v) => live_doc(v.value(), now.millis)
                                .map_err(|e| StorageError::Corrupted(e.to_string()))?,
                            None => None,
                        };
                        match condition {
                            DocWrite::IfAbsent => live.is_none(),
                            DocWrite::IfEquals(expected) => live == Some(expected.as_slice()),
                            DocWrite::Always => true,
                        }
                    }
                };
                if allowed {
                    self.docs()?.insert(key, stored.as_slice())?;
                }
                Ok(allowed)
            }
            Op::DeleteLapsedDoc { key } => {
                let key = (key.0.as_str(), key.1.as_str(), key.2.as_str());
                let docs = self.docs()?;
                let lapsed = match docs.get(key)? {
                    Some(v) => live_doc(v.value(), now.millis)
                        .map_err(|e| StorageError::Corrupted(e.to_string()))?
                        .is_none(),
                    None => false,
                };
                if lapsed {
                    docs.remove(key)?;
                }
                Ok(lapsed)
            }
            Op::DeleteDoc { key } => {
                let key = (key.0.as_str(), key.1.as_str(), key.2.as_str());
                let removed = self.docs()?.remove(key)?;
                Ok(removed
                    .is_some_and(|v| live_doc(v.value(), now.millis).ok().flatten().is_some()))
            }
        }
    }

    /// Marks `id` seen and appends the event, unless a live mark exists. An earlier record of the
    /// same id in this batch has already written its mark, so a batch de-duplicates itself.
    fn record(&mut self, at: u64, id: &str, event: &[u8], now: Now) -> Result<bool, StorageError> {
        let mark = self.seen.get((at, id))?.map(|v| v.value());
        if mark.is_some_and(|expires| expires > now.secs) {
            return Ok(false);
        }
        self.seen.insert((at, id), now.secs + self.dedup_ttl_secs)?;
        self.append(event, now)?;
        Ok(true)
    }

    fn append(&mut self, event: &[u8], now: Now) -> Result<(), StorageError> {
        let seq = self.take_seq();
        self.outbox.insert(seq, (now.millis, event))?;
        self.appended = true;
        Ok(())
    }

    /// Moves an outbox entry to the dead letters; false when it is no longer in the outbox
    /// (already acknowledged or moved).
    fn dead_letter(
        &mut self,
        seq: u64,
        id: &str,
        reason: &str,
        now: Now,
    ) -> Result<bool, StorageError> {
        let Some(removed) = self.outbox.remove(seq)? else {
            return Ok(false);
        };
        let event = removed.value().1.to_vec();
        drop(removed);
        let dead_seq = self.take_seq();
        self.dead()?
            .insert(dead_seq, (now.secs, reason, event.as_slice()))?;
        self.dead_by_id()?.insert(id, dead_seq)?;
        Ok(true)
    }

    /// Moves the oldest dead letter with this id back to the end of the outbox.
    fn replay(&mut self, id: &str, now: Now) -> Result<bool, StorageError> {
        let first = self
            .dead_by_id()?
            .get(id)?
            .next()
            .transpose()?
            .map(|v| v.value());
        let Some(dead_seq) = first else {
            return Ok(false);
        };
        self.dead_by_id()?.remove(id, dead_seq)?;
        let Some(removed) = self.dead()?.remove(dead_seq)? else {
            return Ok(false);
        };
        let event = removed.value().2.to_vec();
        drop(removed);
        self.append(&event, now)?;
        Ok(true)
    }
}

/// Removes up to [`PRUNE_MAX`] expired marks in one transaction; true when more may remain.
/// A mark whose CreateTime is a whole window old has usually expired (it was received around its
/// CreateTime); one received much later than its CreateTime is kept until its own expiry.
fn prune(db: &Database, now_secs: u64, ttl_secs: u64) -> Result<bool, redb::Error> {
    let txn = db.begin_write()?;
    let more = {
        let mut seen = txn.open_table(SEEN)?;
        let cutoff = now_secs.saturating_sub(ttl_secs);
        let mut candidates = 0;
        let mut expired = Vec::new();
        for row in seen.range(..(cutoff, ""))?.take(PRUNE_MAX + 1) {
            let (key, expires) = row?;
            candidates += 1;
            if expires.value() <= now_secs {
                let (at, id) = key.value();
                expired.push((at, id.to_owned()));
            }
        }
        for (at, id) in expired.iter().take(PRUNE_MAX) {
            seen.remove((*at, id.as_str()))?;
        }
        candidates > PRUNE_MAX && !expired.is_empty()
    };
    txn.commit()?;
    Ok(more)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn event(id: &str) -> pb::Event {
        pb::Event {
            id: id.into(),
            account_id: "acme".into(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_commits_and_all_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), Duration::from_secs(60)).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.record(&event(&format!("e{i}"))).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Recorded::New);
        }
        let commits = store.commits.load(Ordering::Relaxed);
        assert!(commits < 200, "{commits} commits for 200 records");
        assert_eq!(store.outbox_stats().await.unwrap().depth, 200);
    }

    #[test]
    fn one_batch_de_duplicates_itself_and_expired_marks_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        create_tables(&db).unwrap();
        let at = |secs| Now {
            secs,
            millis: secs * 1000,
        };
        let record = |id: &str, now: Now| {
            let txn = db.begin_write().unwrap();
            let outcomes = {
                let mut tables = Tables::open(&txn, 60).unwrap();
                let op = Op::Record {
                    at: 990,
                    id: id.into(),
                    event: event(id).encode_to_vec(),
                };
                let outcomes = [
                    tables.apply(&op, now).unwrap(),
                    tables.apply(&op, now).unwrap(),
                ];
                tables.save_next_seq().unwrap();
                outcomes
            };
            txn.commit().unwrap();
            outcomes
        };
        assert_eq!(record("a", at(1000)), [true, false]);
        assert_eq!(record("a", at(1059)), [false, false]);
        assert!(!prune(&db, 1059, 60).unwrap());
        let seen = |db: &Database| {
            db.begin_read()
                .unwrap()
                .open_table(SEEN)
                .unwrap()
                .len()
                .unwrap()
        };
        assert_eq!(seen(&db), 1, "the mark is live until its expiry");
        prune(&db, 1060, 60).unwrap();
        assert_eq!(seen(&db), 0, "an expired mark is pruned");
        assert_eq!(
            record("a", at(1060)),
            [true, false],
            "new again after expiry"
        );
    }

    #[test]
    fn a_mark_received_long_after_its_create_time_is_kept_until_its_own_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        create_tables(&db).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut tables = Tables::open(&txn, 60).unwrap();
            let now = Now {
                secs: 5000,
                millis: 5_000_000,
            };
            let op = |id: &str, at| Op::Record {
                at,
                id: id.into(),
                event: event(id).encode_to_vec(),
            };
            // CreateTime an hour before it arrived, and one stamped a little ahead.
            assert!(tables.apply(&op("late", 1400), now).unwrap());
            assert!(tables.apply(&op("ahead", 5010), now).unwrap());
            tables.save_next_seq().unwrap();
        }
        txn.commit().unwrap();
        let live = |db: &Database| {
            let txn = db.begin_read().unwrap();
            let seen = txn.open_table(SEEN).unwrap();
            let ids: Vec<String> = seen
                .iter()
                .unwrap()
                .map(|row| row.unwrap().0.value().1.to_owned())
                .collect();
            ids
        };
        prune(&db, 5059, 60).unwrap();
        assert_eq!(live(&db), ["late", "ahead"], "both live until 5060");
        prune(&db, 5060, 60).unwrap();
        assert_eq!(
            live(&db),
            ["ahead"],
            "late expired; ahead's CreateTime is not yet a window old, so it waits"
        );
        prune(&db, 5071, 60).unwrap();
        assert!(live(&db).is_empty());
    }

    #[test]
    fn a_handle_of_another_backend_is_refused() {
        let entry = OutboxEntry {
            handle: "acme\n1-0".into(),
            event: event("a"),
        };
        assert!(matches!(sequence(&entry), Err(StoreError::Corrupt(_))));
    }
}
