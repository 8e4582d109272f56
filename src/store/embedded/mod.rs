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
//! The scene registry, the menu versions and the documents are redb tables, written through the
//! same writer. Access tokens and leases live in memory: one node has no one to share them with,
//! and after a restart a token is simply fetched again (`stable_token` does not invalidate the
//! old one).
//!
//! Here: the store, its opening and its two doors (the writer's channel and read transactions);
//! [`schema`] the tables; [`writer`] the writer thread and what each write does in a
//! transaction; [`outbox`], [`memory`] and [`records`] the roles.

mod journal;
mod log;
mod marks;
mod memory;
mod outbox;
mod records;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use super::{CachedToken, StoreError};
use schema::create_tables;
use writer::{Op, Request, Writer};

/// The database file inside `store.path`.
const FILE_NAME: &str = "gateway.redb";
/// redb's page cache unless `store.cache_mib` says otherwise (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 8 << 20;

pub struct EmbeddedStore {
    db: Arc<Database>,
    /// To the writer thread; `None` only while dropping.
    writer: Option<mpsc::Sender<Request>>,
    /// The writer thread, joined on drop.
    writer_thread: Option<JoinHandle<()>>,
    /// The callback path: the outbox and the de-duplication marks.
    log: log::Log,
    /// One dead-letter replay at a time, so that two cannot put the same letter back twice.
    replay: tokio::sync::Mutex<()>,
    /// Token key → the cached access token.
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Lease (its [`LeaseKey`] as text) → (holder, lapses at).
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

/// Locks a mutex, going on after a panic elsewhere (the maps stay consistent: every update is
/// one insert or remove).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        Self::open_tuned(path, dedup_ttl, cache_bytes, log::LogOptions::default())
    }

    fn open_tuned(
        path: &Path,
        dedup_ttl: Duration,
        cache_bytes: usize,
        options: log::LogOptions,
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
        // A mark lasts whole seconds; never less than one.
        let dedup_ttl_secs = dedup_ttl.as_secs().max(1);
        let log = log::Log::open(path, db.clone(), dedup_ttl_secs, options)?;
        let (writer, requests) = mpsc::channel();
        let w = Writer {
            db: db.clone(),
            requests,
            dedup_ttl_secs,
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
            log,
            replay: tokio::sync::Mutex::new(()),
            tokens: Mutex::default(),
            leases: Mutex::default(),
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

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

pub(super) fn writer_stopped() -> StoreError {
    StoreError::Unavailable("embedded store: the writer thread has stopped".into())
}
