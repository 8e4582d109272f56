//! The writer thread of the embedded store: it takes every write queued at a moment, applies
//! them in order in one transaction ([`Tables::apply`]) and commits once (group commit), then
//! answers each; between batches it prunes expired de-duplication marks.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, MultimapTable, ReadableTable, StorageError, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::schema::{DEAD, DEAD_BY_ID, DOCS, MENU_VERSIONS, META, NEXT_SEQ, SCENES, SEEN};
use crate::store::docs::live_doc;
use crate::store::{DocWrite, StoreError};

/// Most requests in one transaction, so one batch cannot hold its callers for long.
const MAX_BATCH: usize = 1024;
/// How often the writer removes expired de-duplication marks.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most marks removed by one pruning transaction; the rest follow right after, between batches.
const PRUNE_MAX: usize = 10_000;

/// One write, as the writer thread applies it.
pub(super) enum Op {
    /// A dead letter: the event the CRM refused, and why. The log acknowledges its outbox entry
    /// once this has committed.
    PutDead {
        id: String,
        reason: String,
        event: Vec<u8>,
    },
    /// Removes a dead letter that was put back into the outbox (answers false if it was gone).
    RemoveDead {
        id: String,
        seq: u64,
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
/// did (false: a condition did not hold, or nothing was there to remove).
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The wall clock, read once per batch.
#[derive(Clone, Copy)]
pub(super) struct Now {
    pub(super) secs: u64,
    pub(super) millis: u64,
}

impl Now {
    pub(super) fn get() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: since_epoch.as_secs(),
            millis: since_epoch.as_millis() as u64,
        }
    }
}

/// What a group-committing thread takes next from its channel.
pub(super) enum Next<T> {
    /// The first request, and everything that queued up behind it while the previous commit was
    /// syncing, up to `max`.
    Batch(Vec<T>),
    /// Nothing came within the wait.
    Idle,
    /// Every sender is gone: the store was dropped.
    Closed,
}

/// Waits up to `wait` for a request, then takes what else is queued (group commit): shared by
/// the redb writer and the log thread.
pub(super) fn next_batch<T>(requests: &mpsc::Receiver<T>, wait: Duration, max: usize) -> Next<T> {
    match requests.recv_timeout(wait) {
        Ok(first) => {
            let mut batch = vec![first];
            batch.extend(requests.try_iter().take(max - 1));
            Next::Batch(batch)
        }
        Err(RecvTimeoutError::Timeout) => Next::Idle,
        Err(RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

/// The writer thread's state; see the module comment.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) dedup_ttl_secs: u64,
}

impl Writer {
    /// Runs until the store is dropped (the channel closes).
    pub(super) fn run(self) {
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match next_batch(&self.requests, wait, MAX_BATCH) {
                Next::Batch(batch) => self.commit(batch),
                Next::Idle => {}
                Next::Closed => return,
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
        let result = (|| -> Result<Vec<bool>, redb::Error> {
            let txn = self.db.begin_write()?;
            let outcomes = {
                let mut tables = Tables::open(&txn)?;
                let outcomes = batch
                    .iter()
                    .map(|request| tables.apply(&request.op, now))
                    .collect::<Result<Vec<_>, _>>()?;
                tables.save_next_seq()?;
                outcomes
            };
            txn.commit()?;
            Ok(outcomes)
        })();
        match result {
            Ok(outcomes) => {
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
    meta: Table<'txn, &'static str, u64>,
    dead: Option<DeadTable<'txn>>,
    dead_by_id: Option<MultimapTable<'txn, &'static str, u64>>,
    scenes: Option<Table<'txn, &'static str, &'static [u8]>>,
    menu_versions: Option<Table<'txn, (&'static str, u64), &'static [u8]>>,
    docs: Option<DocsTable<'txn>>,
    next_seq: u64,
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
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        let next_seq = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
        Ok(Self {
            txn,
            meta,
            dead: None,
            dead_by_id: None,
            scenes: None,
            menu_versions: None,
            docs: None,
            next_seq,
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
            Op::PutDead { id, reason, event } => {
                let seq = self.take_seq();
                self.dead()?
                    .insert(seq, (now.secs, reason.as_str(), event.as_slice()))?;
                self.dead_by_id()?.insert(id.as_str(), seq)?;
                Ok(true)
            }
            Op::RemoveDead { id, seq } => {
                self.dead_by_id()?.remove(id.as_str(), *seq)?;
                Ok(self.dead()?.remove(*seq)?.is_some())
            }
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
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::store::embedded::schema::create_tables;
    use crate::store::embedded::FILE_NAME;

    /// Cold marks as the compactor writes them: (CreateTime, id) → expiry.
    fn put_marks(db: &Database, marks: &[(u64, &str, u64)]) {
        let txn = db.begin_write().unwrap();
        {
            let mut seen = txn.open_table(SEEN).unwrap();
            for (at, id, expires) in marks {
                seen.insert((*at, *id), *expires).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn live(db: &Database) -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let seen = txn.open_table(SEEN).unwrap();
        let ids: Vec<String> = seen
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().1.to_owned())
            .collect();
        ids
    }

    #[test]
    fn an_expired_cold_mark_is_pruned_and_a_live_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        create_tables(&db).unwrap();
        put_marks(&db, &[(990, "a", 1060), (995, "b", 1100)]);
        assert!(!prune(&db, 1059, 60).unwrap());
        assert_eq!(live(&db), ["a", "b"], "both live until their expiry");
        prune(&db, 1060, 60).unwrap();
        assert_eq!(live(&db), ["b"]);
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(SEEN).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn a_mark_received_long_after_its_create_time_is_kept_until_its_own_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        create_tables(&db).unwrap();
        // Recorded at 5000 with a 60 s window: CreateTime an hour before it arrived, and one
        // stamped a little ahead.
        put_marks(&db, &[(1400, "late", 5060), (5010, "ahead", 5060)]);
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
}
