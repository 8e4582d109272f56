//! The callback path of the embedded store: an append-only log ([`journal`]) written by one
//! thread, and what it needs in memory.
//!
//! A callback's durable write is one frame appended to the current segment: the event, with its
//! de-duplication mark. The log thread takes every request queued at a moment, checks each id,
//! appends the frames of the new ones with one `pwrite` and makes them durable with one
//! `fdatasync` (group commit), then answers: no caller hears "new" before its frame is on disk,
//! and a failed write fails the whole batch (and the log, until a restart rebuilds it).
//!
//! De-duplication marks are kept in two tiers. The recent ones ("hot") are fingerprints in
//! memory: 128 bits of two SipHash-1-3 keyed at random per process, rebuilt from the log on start
//! (collisions are about as likely as a SHA-1 one, and not steerable from outside). Older ones
//! are moved by the mark compactor ([`super::marks`]) into redb's `seen_by_time` table in
//! sorted bulk ("cold"), off the callback path, and the log behind them can go. A callback looks
//! in the cold tier only when its CreateTime is not after the latest CreateTime the cold tier
//! holds (`cold_max_at`): cold keys lead with the CreateTime, so a later one cannot be there.
//! A fresh callback, whose CreateTime is newer than every mark that went cold, never does.
//!
//! The outbox is an index in memory (sequence → where the event is in which segment), rebuilt
//! from the log on start; claims read the events back from the segment files (the page cache).
//! Acks are frames too. A segment is deleted once every event in it has been acknowledged and
//! the compactor has moved its marks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadOnlyTable, ReadableDatabase};
use tokio::sync::{oneshot, Notify};

use super::journal::{self, EventFrame, Frame, GROW_BYTES, SEGMENT_BYTES};
use super::lock;
use super::marks::{HOT_CAP, HOT_SECS};
use super::schema::SEEN;
use super::writer::{Next, Now};
use crate::store::StoreError;

/// Most requests in one group commit, so one batch cannot hold its callers for long.
const MAX_BATCH: usize = 1024;
/// The commit buffer is kept up to this size (a full batch of 1 KiB callbacks).
const MAX_KEPT_BUFFER: usize = 2 << 20;

/// The log's sizes; tests make them small.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogOptions {
    /// A segment is closed at this size.
    pub segment_bytes: u64,
    /// Marks stay hot this long at most.
    pub hot_secs: u64,
    /// Most hot marks.
    pub hot_cap: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES,
            hot_secs: HOT_SECS,
            hot_cap: HOT_CAP,
        }
    }
}

/// A mark's fingerprint: (CreateTime, id) hashed to 128 bits with two random keys.
pub(super) struct Fingerprint(RandomState, RandomState);

impl Fingerprint {
    pub(super) fn new() -> Self {
        Self(RandomState::new(), RandomState::new())
    }

    pub(super) fn of(&self, at: u64, id: &str) -> u128 {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write_u64(at);
            h.write(id.as_bytes());
            h.finish()
        };
        (u128::from(half(&self.0)) << 64) | u128::from(half(&self.1))
    }
}

/// The fingerprints are already uniformly random: the set uses their low bits as the hash.
#[derive(Default)]
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

pub(super) type HotMarks = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// One outbox entry in memory: where its event is.
#[derive(Clone)]
pub(super) struct Entry {
    pub file: Arc<File>,
    pub segment: u32,
    /// Of the event bytes inside the segment.
    pub offset: u64,
    pub len: u32,
    pub account: Arc<str>,
    pub enqueued_ms: u64,
}

/// One undelivered event as the index keeps it: 32 bytes, so that a backlog of a million
/// events costs ~32 MiB of memory (a `BTreeMap` of [`Entry`] cost ~125 bytes an event).
#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    enqueued_ms: u64,
    segment: u32,
    /// Of the event bytes inside the segment (a segment stays far below 4 GiB).
    offset: u32,
    len: u32,
    /// Into [`Index::accounts`]; [`GONE`] once delivered or dead-lettered.
    account: u32,
}

/// [`Slot::account`] of a slot whose event is gone (acknowledged out of order).
const GONE: u32 = u32::MAX;

/// The undelivered events, oldest first, and the open segments.
#[derive(Default)]
pub(super) struct Index {
    /// In sequence order (the log appends in that order); acknowledged slots in the middle stay
    /// as [`GONE`] until the ones before them go too.
    slots: std::collections::VecDeque<Slot>,
    accounts: Vec<Arc<str>>,
    account_ids: HashMap<Arc<str>, u32>,
    /// Every segment on disk, by number.
    pub files: BTreeMap<u32, Arc<File>>,
    /// Undelivered events per segment.
    pub live: HashMap<u32, usize>,
}

impl Index {
    /// Adds an event; `seq` must be above every sequence number added before (the log's order).
    pub(super) fn insert(&mut self, seq: u64, entry: Entry) {
        if self.slots.back().is_some_and(|last| last.seq >= seq) {
            // Only a store migrated twice could do this: keep the first.
            return;
        }
        let account = match self.account_ids.get(&entry.account) {
            Some(&id) => id,
            None => {
                let id = self.accounts.len() as u32;
                self.accounts.push(entry.account.clone());
                self.account_ids.insert(entry.account.clone(), id);
                id
            }
        };
        *self.live.entry(entry.segment).or_default() += 1;
        self.slots.push_back(Slot {
            seq,
            enqueued_ms: entry.enqueued_ms,
            segment: entry.segment,
            offset: u32::try_from(entry.offset).unwrap_or(u32::MAX),
            len: entry.len,
            account,
        });
    }

    fn position(&self, seq: u64) -> Option<usize> {
        let at = self.slots.binary_search_by_key(&seq, |s| s.seq).ok()?;
        (self.slots[at].account != GONE).then_some(at)
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        self.position(seq).is_some()
    }

    pub(super) fn remove(&mut self, seq: u64) -> bool {
        let Some(at) = self.position(seq) else {
            return false;
        };
        let segment = self.slots[at].segment;
        self.slots[at].account = GONE;
        if let Some(n) = self.live.get_mut(&segment) {
            *n = n.saturating_sub(1);
        }
        while self.slots.front().is_some_and(|s| s.account == GONE) {
            self.slots.pop_front();
        }
        if self.slots.capacity() > 4 * self.slots.len().max(1024) {
            self.slots.shrink_to(2 * self.slots.len());
        }
        true
    }

    /// The oldest `max` undelivered events, with where to read them.
    pub(super) fn oldest(&self, max: usize) -> Vec<(u64, Entry)> {
        self.slots
            .iter()
            .filter(|s| s.account != GONE)
            .filter_map(|s| Some((s.seq, self.entry(s)?)))
            .take(max)
            .collect()
    }

    /// The oldest `max` undelivered events with a sequence number above `after`.
    pub(super) fn oldest_after(&self, after: u64, max: usize) -> Vec<(u64, Entry)> {
        let from = self.slots.partition_point(|s| s.seq <= after);
        self.slots
            .range(from..)
            .filter(|s| s.account != GONE)
            .filter_map(|s| Some((s.seq, self.entry(s)?)))
            .take(max)
            .collect()
    }

    fn entry(&self, s: &Slot) -> Option<Entry> {
        Some(Entry {
            file: self.files.get(&s.segment)?.clone(),
            segment: s.segment,
            offset: u64::from(s.offset),
            len: s.len,
            account: self.accounts[s.account as usize].clone(),
            enqueued_ms: s.enqueued_ms,
        })
    }

    /// Each account with events waiting: how many, and the earliest enqueue time. One pass over
    /// the slots, counted by account number (no string hashed per event): the index lock, which
    /// every commit needs, is held ~2.5 ms for a backlog of a million events of 1,000 accounts
    /// (~20 ms with a `HashMap` by account name).
    pub(super) fn backlogs(&self) -> Vec<(&str, u64, u64)> {
        let mut counts = vec![(0u64, u64::MAX); self.accounts.len()];
        for s in self.slots.iter().filter(|s| s.account != GONE) {
            let (depth, earliest) = &mut counts[s.account as usize];
            *depth += 1;
            *earliest = (*earliest).min(s.enqueued_ms);
        }
        self.accounts
            .iter()
            .zip(counts)
            .filter(|(_, (depth, _))| *depth > 0)
            .map(|(account, (depth, earliest))| (&**account, depth, earliest))
            .collect()
    }
}

/// What the log thread and its readers share.
pub(super) struct Shared {
    pub index: Mutex<Index>,
    /// Signalled after a commit that appended to the outbox; waited on by claims.
    pub appended: Arc<Notify>,
    /// Set when a write or sync failed: the log refuses writes until a restart rebuilds it.
    pub failed: AtomicBool,
    /// The durable end of the log, (segment, offset), for the compactor.
    pub end: Mutex<(u32, u64)>,
    /// How many marks are hot, for the compactor.
    pub hot_len: AtomicUsize,
    #[cfg(test)]
    pub commits: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    pub syncs: std::sync::atomic::AtomicU64,
}

/// A write to the log.
pub(super) enum LogOp {
    /// Answers true when new (appended), false for a duplicate.
    Record {
        at: u64,
        id: String,
        account: String,
        event: Vec<u8>,
    },
    /// Many records: (CreateTime, id, account, event) each; `new` counts those appended.
    RecordBatch {
        events: Vec<(u64, String, String, Vec<u8>)>,
        new: Arc<AtomicUsize>,
    },
    /// An event appended without a mark (a replayed dead letter).
    Append {
        id: String,
        account: String,
        event: Vec<u8>,
    },
    Ack {
        seqs: Vec<u64>,
    },
}

pub(super) struct LogRequest {
    pub op: LogOp,
    pub reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Marks the compactor has made durable in the cold tier: the hot tier drops them.
pub(super) struct Eviction {
    pub fingerprints: Vec<u128>,
    /// The latest CreateTime among the marks moved.
    pub max_at: Option<u64>,
    /// The compactor's position: every mark before it is cold.
    pub watermark: (u32, u64),
}

/// The log thread's state.
pub(super) struct LogWriter {
    pub dir: PathBuf,
    pub db: Arc<Database>,
    pub shared: Arc<Shared>,
    /// Groups of requests, each gathered in one scheduler tick ([`Log::write`]).
    pub requests: mpsc::Receiver<Vec<LogRequest>>,
    pub evictions: mpsc::Receiver<Eviction>,
    pub fingerprint: Arc<Fingerprint>,
    pub hot: HotMarks,
    /// The latest CreateTime in the cold tier (an upper bound: pruning does not lower it);
    /// `None` while it is empty.
    pub cold_max_at: Option<u64>,
    /// The segment being appended to, its number, the end of its frames and its size.
    pub file: Arc<File>,
    pub segment: u32,
    pub offset: u64,
    pub size: u64,
    pub next_seq: u64,
    pub watermark: (u32, u64),
    pub accounts: HashMap<String, Arc<str>>,
    pub segment_bytes: u64,
    /// The frames of the commit being built, kept from one commit to the next.
    pub buf: Vec<u8>,
    /// To the cold reader thread.
    pub cold: mpsc::Sender<ColdQuery>,
    /// Since when the log holds acks written but not yet synced (see [`LogWriter::commit`]).
    pub unsynced_since: Option<Instant>,
}

/// Longest time acks stay written but not synced while the log is busy.
const ACK_SYNC_MAX: Duration = Duration::from_secs(1);

/// Records of a batch found in the cold tier: (CreateTime, id).
pub(super) type ColdHits = HashSet<(u64, String)>;

/// A batch's cold look-ups, for the cold reader thread.
pub(super) struct ColdQuery {
    keys: Vec<(u64, String)>,
    now_secs: u64,
    reply: mpsc::SyncSender<Result<ColdHits, StoreError>>,
}

/// The cold reader: looks marks up in redb's `seen_by_time` for the log thread. On a thread of
/// its own because a look-up that misses redb's cache allocates page buffers, and allocated
/// among the log thread's long-lived index entries they fragmented its heap (RSS rose past
/// 150 MiB in a soak whose callbacks all needed one).
fn cold_reader(db: Arc<Database>, queries: mpsc::Receiver<ColdQuery>) {
    for query in queries {
        let answer = (|| {
            let txn = db.begin_read().map_err(super::unavailable)?;
            let table: ReadOnlyTable<(u64, &'static str), u64> =
                txn.open_table(SEEN).map_err(super::unavailable)?;
            let mut hits = ColdHits::default();
            for (at, id) in query.keys {
                let expires = table
                    .get((at, id.as_str()))
                    .map_err(super::unavailable)?
                    .map(|v| v.value());
                if expires.is_some_and(|expires| expires > query.now_secs) {
                    hits.insert((at, id));
                }
            }
            Ok(hits)
        })();
        let _ = query.reply.send(answer);
    }
}

fn cold_stopped() -> StoreError {
    StoreError::Unavailable("embedded store: the cold mark reader thread has stopped".into())
}

/// What one commit appended, to index once it is durable.
struct Appended {
    seq: u64,
    event_at: usize,
    len: u32,
    account: Arc<str>,
}

impl LogWriter {
    /// Runs until the store is dropped (the channel closes).
    pub(super) fn run(mut self) {
        loop {
            let idle = if self.unsynced_since.is_some() {
                ACK_SYNC_MAX / 10
            } else {
                Duration::from_secs(1)
            };
            match next_group(&self.requests, idle) {
                Next::Batch(batch) => self.commit(batch),
                Next::Idle => self.sync_acks(),
                Next::Closed => {
                    self.sync_acks();
                    return;
                }
            }
            if self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= ACK_SYNC_MAX)
            {
                self.sync_acks();
            }
            self.apply_evictions();
        }
    }

    fn apply_evictions(&mut self) {
        let mut any = false;
        while let Ok(eviction) = self.evictions.try_recv() {
            for fp in &eviction.fingerprints {
                self.hot.remove(fp);
            }
            self.cold_max_at = self.cold_max_at.max(eviction.max_at);
            self.watermark = self.watermark.max(eviction.watermark);
            any = true;
        }
        if !any {
            return;
        }
        self.shared.hot_len.store(self.hot.len(), Ordering::Relaxed);
        if self.hot.capacity() > 4 * self.hot.len().max(1 << 16) {
            self.hot.shrink_to(2 * self.hot.len());
        }
        self.delete_spent_segments();
    }

    /// Deletes the oldest segments while every event in them was acknowledged and the compactor
    /// has gone past them (oldest first, so that an ack frame never outlives... a segment's
    /// acks never disappear before the events they acknowledge).
    fn delete_spent_segments(&mut self) {
        let mut index = lock(&self.shared.index);
        while let Some((&oldest, _)) = index.files.first_key_value() {
            let spent = oldest < self.segment
                && oldest < self.watermark.0
                && index.live.get(&oldest).copied().unwrap_or(0) == 0;
            if !spent {
                break;
            }
            let path = journal::segment_path(&self.dir, oldest);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "embedded store: cannot delete a spent log segment");
                break;
            }
            index.files.remove(&oldest);
            index.live.remove(&oldest);
        }
    }

    fn intern(&mut self, account: &str) -> Arc<str> {
        if let Some(a) = self.accounts.get(account) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(account);
        self.accounts.insert(account.to_owned(), a.clone());
        a
    }

    /// Makes acks written without a sync durable.
    fn sync_acks(&mut self) {
        if self.unsynced_since.is_none() || self.shared.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "embedded store: cannot sync the log; refusing writes until a restart");
            self.shared.failed.store(true, Ordering::Relaxed);
            return;
        }
        *lock(&self.shared.end) = (self.segment, self.offset);
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.unsynced_since = None;
        #[cfg(test)]
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies a batch, appends and syncs once, then answers every request. A batch of acks
    /// only is written but not synced: a lost ack costs a second delivery, never an event, and
    /// a process that dies keeps what it wrote in the page cache (only a power loss could lose
    /// it); the next commit's sync, or the idle loop within [`ACK_SYNC_MAX`], makes it durable.
    /// Without that, each acknowledged batch cost a device flush and the forwarder waited on it.
    fn commit(&mut self, batch: Vec<LogRequest>) {
        if self.shared.failed.load(Ordering::Relaxed) {
            for request in batch {
                let _ = request.reply.send(Err(failed()));
            }
            return;
        }
        let now = Now::get();
        // One buffer for every commit: a fresh megabyte each time fragmented the heap (RSS
        // grew by ~100 MiB in a soak).
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut appended = Vec::new();
        let mut acked = Vec::new();
        let mut inserted = Vec::new();
        let cold = match self.cold_hits(&batch, now) {
            Ok(hits) => hits,
            Err(e) => {
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
                self.buf = buf;
                return;
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in &batch {
            let outcome = match &request.op {
                LogOp::Record {
                    at,
                    id,
                    account,
                    event,
                } => self.record(
                    *at,
                    id,
                    account,
                    event,
                    now,
                    (&mut buf, &mut appended, &mut inserted, &cold),
                ),
                LogOp::RecordBatch { events, new } => {
                    let mut count = 0;
                    let mut result = Ok(false);
                    for (at, id, account, event) in events {
                        match self.record(
                            *at,
                            id,
                            account,
                            event,
                            now,
                            (&mut buf, &mut appended, &mut inserted, &cold),
                        ) {
                            Ok(new) => count += usize::from(new),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    new.store(count, Ordering::Relaxed);
                    result.map(|_| count > 0)
                }
                LogOp::Append { id, account, event } => {
                    self.append(0, id, account, event, false, now, &mut buf, &mut appended);
                    Ok(true)
                }
                LogOp::Ack { seqs } => {
                    journal::put_ack(&mut buf, seqs);
                    acked.extend_from_slice(seqs);
                    Ok(true)
                }
            };
            outcomes.push(outcome);
        }
        let durable = !appended.is_empty() || !inserted.is_empty();
        if !buf.is_empty() {
            if let Err(e) = self.write(&buf, durable) {
                tracing::error!(error = %e, writes = batch.len(), "embedded store: cannot write the log; refusing writes until a restart");
                self.shared.failed.store(true, Ordering::Relaxed);
                for fp in inserted {
                    self.hot.remove(&fp);
                }
                for request in batch {
                    let _ = request.reply.send(Err(StoreError::Unavailable(format!(
                        "embedded store: cannot write the log: {e}"
                    ))));
                }
                return;
            }
        }
        {
            let mut index = lock(&self.shared.index);
            for a in &appended {
                index.insert(
                    a.seq,
                    Entry {
                        file: self.file.clone(),
                        segment: self.segment,
                        offset: self.offset + a.event_at as u64,
                        len: a.len,
                        account: a.account.clone(),
                        enqueued_ms: now.millis,
                    },
                );
            }
            for seq in &acked {
                index.remove(*seq);
            }
        }
        self.offset += buf.len() as u64;
        // The compactor reads up to the durable end only, so that its watermark never passes
        // frames a power loss could take back.
        if self.unsynced_since.is_none() {
            *lock(&self.shared.end) = (self.segment, self.offset);
        }
        self.shared.hot_len.store(self.hot.len(), Ordering::Relaxed);
        #[cfg(test)]
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        if !appended.is_empty() {
            self.shared.appended.notify_waiters();
        }
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            let _ = request.reply.send(outcome);
        }
        if buf.capacity() <= MAX_KEPT_BUFFER {
            self.buf = buf;
        }
        if !acked.is_empty() {
            self.delete_spent_segments();
        }
    }

    /// Checks the mark of (at, id) and appends the event when it is new.
    #[allow(clippy::type_complexity)]
    fn record(
        &mut self,
        at: u64,
        id: &str,
        account: &str,
        event: &[u8],
        now: Now,
        (buf, appended, inserted, cold): (
            &mut Vec<u8>,
            &mut Vec<Appended>,
            &mut Vec<u128>,
            &ColdHits,
        ),
    ) -> Result<bool, StoreError> {
        let fp = self.fingerprint.of(at, id);
        if self.hot.contains(&fp) {
            return Ok(false);
        }
        if !cold.is_empty() && cold.contains(&(at, id.to_owned())) {
            return Ok(false);
        }
        self.hot.insert(fp);
        inserted.push(fp);
        self.append(at, id, account, event, true, now, buf, appended);
        Ok(true)
    }

    /// The records of a batch whose marks are in the cold tier. Only a CreateTime not after
    /// the latest one there can be; those are looked up in one go by the cold reader thread.
    fn cold_hits(&self, batch: &[LogRequest], now: Now) -> Result<ColdHits, StoreError> {
        let Some(max) = self.cold_max_at else {
            return Ok(ColdHits::default());
        };
        let mut keys = Vec::new();
        let mut want = |at: u64, id: &str| {
            if at <= max && !self.hot.contains(&self.fingerprint.of(at, id)) {
                keys.push((at, id.to_owned()));
            }
        };
        for request in batch {
            match &request.op {
                LogOp::Record { at, id, .. } => want(*at, id),
                LogOp::RecordBatch { events, .. } => {
                    for (at, id, _, _) in events {
                        want(*at, id);
                    }
                }
                LogOp::Append { .. } | LogOp::Ack { .. } => {}
            }
        }
        if keys.is_empty() {
            return Ok(ColdHits::default());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.cold
            .send(ColdQuery {
                keys,
                now_secs: now.secs,
                reply,
            })
            .map_err(|_| cold_stopped())?;
        answer.recv().map_err(|_| cold_stopped())?
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        at: u64,
        id: &str,
        account: &str,
        event: &[u8],
        marked: bool,
        now: Now,
        buf: &mut Vec<u8>,
        appended: &mut Vec<Appended>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event_at = journal::put_event(
            buf,
            &EventFrame {
                seq,
                enqueued_ms: now.millis,
                at,
                marked,
                id,
                account,
                event,
            },
        );
        let account = self.intern(account);
        appended.push(Appended {
            seq,
            event_at,
            len: event.len() as u32,
            account,
        });
    }

    /// Writes `buf` at the end of the log, in a new segment if the current one is full, and
    /// makes it durable with everything before it (unless `durable` is false).
    fn write(&mut self, buf: &[u8], durable: bool) -> std::io::Result<()> {
        let len = buf.len() as u64;
        if self.offset > 0 && self.offset + len > self.segment_bytes {
            if self.unsynced_since.is_some() {
                self.sync()?;
            }
            let number = self.segment + 1;
            let file = journal::open_segment(&self.dir, number)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            file.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            let file = Arc::new(file);
            lock(&self.shared.index).files.insert(number, file.clone());
            self.file = file;
            self.segment = number;
            self.offset = 0;
            self.size = 0;
        }
        if self.offset + len > self.size {
            let size = (self.offset + len).div_ceil(GROW_BYTES) * GROW_BYTES;
            journal::grow(&self.file, self.size, size)?;
            self.size = size;
        }
        self.file.write_all_at(buf, self.offset)?;
        if durable {
            // Also flushes the new size after a growth step, so the frames can be found again.
            self.sync()
        } else {
            self.unsynced_since.get_or_insert_with(Instant::now);
            Ok(())
        }
    }
}

fn failed() -> StoreError {
    StoreError::Unavailable(
        "embedded store: a write to the log failed earlier; restart the gateway to recover".into(),
    )
}

/// The log and its two threads (the writer and the mark compactor).
pub(super) struct Log {
    pub shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Vec<LogRequest>>>,
    /// Writes waiting for their tick's leader to hand them over ([`Log::write`]).
    gathered: Mutex<Vec<LogRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Ends when the writer does (it holds the only sender).
    cold: Option<std::thread::JoinHandle<()>>,
    stop_compactor: Option<mpsc::Sender<()>>,
    compactor: Option<std::thread::JoinHandle<()>>,
}

/// `pb::Event` with only its id and account: decoding it skips every other field unread.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct IdAndAccount {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub account_id: String,
}

impl Log {
    /// Opens the log in `store_dir/log`, rebuilding the outbox index and the hot marks from it,
    /// moves an older store's redb outbox into it, and starts its threads.
    pub(super) fn open(
        store_dir: &std::path::Path,
        db: Arc<Database>,
        dedup_ttl_secs: u64,
        options: LogOptions,
    ) -> Result<Self, StoreError> {
        let dir = journal::dir(store_dir);
        std::fs::create_dir_all(&dir).map_err(|e| journal::io("cannot create", &dir, e))?;
        let (watermark, seq_floor, cold_max_at) = read_meta(&db)?;
        let fingerprint = Arc::new(Fingerprint::new());
        let mut hot = HotMarks::default();
        let mut index = Index::default();
        let mut accounts = HashMap::<String, Arc<str>>::new();
        let mut next_seq = seq_floor;
        let mut last = None;
        for number in journal::segments(&dir)? {
            let file = Arc::new(journal::open_segment(&dir, number)?);
            index.files.insert(number, file.clone());
            let path = journal::segment_path(&dir, number);
            let end = journal::scan(&path, 0, None, |body_at, body| {
                match journal::decode(body) {
                    Some(Frame::Event(e)) => {
                        let account = accounts
                            .entry(e.account.to_owned())
                            .or_insert_with(|| Arc::from(e.account))
                            .clone();
                        index.insert(
                            e.seq,
                            Entry {
                                file: file.clone(),
                                segment: number,
                                offset: body_at + e.event_offset_in_body() as u64,
                                len: e.event.len() as u32,
                                account,
                                enqueued_ms: e.enqueued_ms,
                            },
                        );
                        next_seq = next_seq.max(e.seq + 1);
                        let frame_at = body_at - journal::HEADER as u64;
                        if e.marked && (number, frame_at) >= watermark {
                            hot.insert(fingerprint.of(e.at, e.id));
                        }
                    }
                    Some(Frame::Ack(seqs)) => {
                        for seq in seqs {
                            index.remove(seq);
                        }
                    }
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "{} holds a frame this version does not know at offset {body_at}",
                            path.display()
                        )))
                    }
                }
                Ok(true)
            })?;
            last = Some((number, file, end));
        }
        let (segment, file, offset) = match last {
            Some((number, file, end)) => {
                // Whatever follows the last whole frame was never acknowledged: cut it, so that
                // no stale bytes after the next appends can read as frames.
                file.set_len(end)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| journal::io("cannot truncate", &dir, e))?;
                (number, file, end)
            }
            None => {
                let file = Arc::new(journal::open_segment(&dir, 1)?);
                file.sync_all()
                    .and_then(|()| File::open(&dir)?.sync_all())
                    .map_err(|e| journal::io("cannot create", &dir, e))?;
                index.files.insert(1, file.clone());
                (1, file, 0)
            }
        };
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            appended: Arc::new(Notify::new()),
            failed: AtomicBool::new(false),
            end: Mutex::new((segment, offset)),
            hot_len: AtomicUsize::new(hot.len()),
            #[cfg(test)]
            commits: Default::default(),
            #[cfg(test)]
            syncs: Default::default(),
        });
        let (requests_tx, requests) = mpsc::channel();
        let (evictions_tx, evictions) = mpsc::channel();
        let (cold, queries) = mpsc::channel();
        let cold_db = db.clone();
        let cold_thread = std::thread::Builder::new()
            .name("wgw-store-cold".into())
            .spawn(move || cold_reader(cold_db, queries))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the cold mark reader thread: {e}"))
            })?;
        let mut writer = LogWriter {
            dir: dir.clone(),
            db: db.clone(),
            shared: shared.clone(),
            requests,
            evictions,
            fingerprint: fingerprint.clone(),
            hot,
            cold_max_at,
            file,
            segment,
            offset,
            size: offset,
            next_seq,
            watermark,
            accounts,
            segment_bytes: options.segment_bytes,
            buf: Vec::new(),
            cold,
            unsynced_since: None,
        };
        writer.migrate_redb_outbox()?;
        let writer = std::thread::Builder::new()
            .name("wgw-store-log".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Unavailable(format!("cannot start the log thread: {e}")))?;
        let (stop_compactor, stop) = mpsc::channel();
        let compactor = super::marks::Compactor {
            dir,
            db,
            shared: shared.clone(),
            fingerprint,
            dedup_ttl_secs,
            evictions: evictions_tx,
            stop,
            watermark,
            hot_secs: options.hot_secs,
            hot_cap: options.hot_cap,
        };
        let compactor = std::thread::Builder::new()
            .name("wgw-store-marks".into())
            .spawn(move || compactor.run())
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the mark compactor thread: {e}"))
            })?;
        Ok(Self {
            shared,
            requests: Some(requests_tx),
            gathered: Mutex::default(),
            writer: Some(writer),
            cold: Some(cold_thread),
            stop_compactor: Some(stop_compactor),
            compactor: Some(compactor),
        })
    }

    /// Hands one write to the log thread and waits until its batch is durable.
    ///
    /// The writes of one scheduler tick go to the log thread together: the first one to find
    /// nothing gathered leads, yields once (the tasks already woken, on an actix worker every
    /// connection with a request read, run meanwhile and gather theirs), then sends them all.
    /// Sent one by one, each write woke the log thread, which on a busy core took it alone:
    /// 16 connections made commits of ~3 callbacks (`strace`), each with its own `fdatasync`.
    /// Only callbacks' records are gathered: the forwarder's acks and a sync's batches come one
    /// at a time, with nothing to gather, and go at once.
    pub(super) async fn write(&self, op: LogOp) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        if !matches!(op, LogOp::Record { .. }) {
            requests
                .send(vec![LogRequest { op, reply }])
                .map_err(|_| stopped())?;
            return answer.await.map_err(|_| stopped())?;
        }
        let lead = {
            let mut gathered = lock(&self.gathered);
            gathered.push(LogRequest { op, reply });
            gathered.len() == 1
        };
        if lead {
            // Sends on drop too: a leader whose caller went away still hands the others over.
            let handover = Handover {
                gathered: &self.gathered,
                requests,
            };
            tokio::task::yield_now().await;
            drop(handover);
        }
        answer.await.map_err(|_| stopped())?
    }

    /// Whether writes can succeed: the thread runs and no write failed.
    pub(super) fn healthy(&self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(stopped());
        }
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(failed());
        }
        Ok(())
    }
}

/// A leader's duty: hand what its tick gathered to the log thread.
struct Handover<'a> {
    gathered: &'a Mutex<Vec<LogRequest>>,
    requests: &'a mpsc::Sender<Vec<LogRequest>>,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        let group = std::mem::take(&mut *lock(self.gathered));
        if let Err(mpsc::SendError(group)) = self.requests.send(group) {
            for request in group {
                let _ = request.reply.send(Err(stopped()));
            }
        }
    }
}

/// The next groups of requests, up to about [`MAX_BATCH`] requests, waiting at most `wait` for
/// the first.
fn next_group(requests: &mpsc::Receiver<Vec<LogRequest>>, wait: Duration) -> Next<LogRequest> {
    match requests.recv_timeout(wait) {
        Ok(mut batch) => {
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            Next::Batch(batch)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        drop(self.stop_compactor.take());
        if let Some(thread) = self.compactor.take() {
            let _ = thread.join();
        }
        drop(self.requests.take());
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.cold.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("embedded store: the log thread has stopped".into())
}

/// The compactor's watermark, the lowest sequence number the log may use, and the latest
/// CreateTime in the cold tier.
#[allow(clippy::type_complexity)]
fn read_meta(db: &Database) -> Result<((u32, u64), u64, Option<u64>), StoreError> {
    use redb::ReadableTable;

    use super::marks::{WATERMARK_OFFSET, WATERMARK_SEGMENT};
    use super::schema::{META, NEXT_SEQ};
    let txn = db.begin_read().map_err(super::unavailable)?;
    let cold_max_at = txn
        .open_table(SEEN)
        .map_err(super::unavailable)?
        .last()
        .map_err(super::unavailable)?
        .map(|(key, _)| key.value().0);
    let meta = txn.open_table(META).map_err(super::unavailable)?;
    let get = |key: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta
            .get(key)
            .map_err(super::unavailable)?
            .map(|v| v.value()))
    };
    let segment = get(WATERMARK_SEGMENT)?.unwrap_or(0) as u32;
    let offset = get(WATERMARK_OFFSET)?.unwrap_or(0);
    Ok(((segment, offset), get(NEXT_SEQ)?.unwrap_or(1), cold_max_at))
}

impl LogWriter {
    /// An older store kept its outbox in redb: append those entries to the log (under their
    /// own sequence numbers, without marks: theirs stay in `seen_by_time`), make them durable,
    /// then drop the table. Run again after a crash in between, it skips what the log holds.
    fn migrate_redb_outbox(&mut self) -> Result<(), StoreError> {
        use prost::Message;
        use redb::ReadableTable;

        use super::schema::OUTBOX;
        let rows = {
            let txn = self.db.begin_read().map_err(super::unavailable)?;
            let table = match txn.open_table(OUTBOX) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(super::unavailable(e)),
            };
            let mut rows = Vec::new();
            for row in table.iter().map_err(super::unavailable)? {
                let (seq, value) = row.map_err(super::unavailable)?;
                let (at_ms, event) = value.value();
                rows.push((seq.value(), at_ms, event.to_vec()));
            }
            rows
        };
        let mut buf = Vec::new();
        let mut appended = Vec::new();
        let mut moved = 0;
        for (seq, at_ms, event) in &rows {
            if lock(&self.shared.index).contains(*seq) {
                continue;
            }
            let ids = IdAndAccount::decode(event.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("redb outbox entry {seq}: {e}")))?;
            let event_at = journal::put_event(
                &mut buf,
                &EventFrame {
                    seq: *seq,
                    enqueued_ms: *at_ms,
                    at: 0,
                    marked: false,
                    id: &ids.id,
                    account: &ids.account_id,
                    event,
                },
            );
            appended.push((*seq, event_at, event.len() as u32, *at_ms, ids.account_id));
            self.next_seq = self.next_seq.max(seq + 1);
            moved += 1;
        }
        if !buf.is_empty() {
            self.write(&buf, true)
                .map_err(|e| journal::io("cannot write the log in", &self.dir, e))?;
            let mut index = lock(&self.shared.index);
            for (seq, event_at, len, at_ms, account) in appended {
                let account = Arc::from(account.as_str());
                index.insert(
                    seq,
                    Entry {
                        file: self.file.clone(),
                        segment: self.segment,
                        offset: self.offset + event_at as u64,
                        len,
                        account,
                        enqueued_ms: at_ms,
                    },
                );
            }
            drop(index);
            self.offset += buf.len() as u64;
            *lock(&self.shared.end) = (self.segment, self.offset);
        }
        let txn = self.db.begin_write().map_err(super::unavailable)?;
        txn.delete_table(OUTBOX).map_err(super::unavailable)?;
        txn.commit().map_err(super::unavailable)?;
        tracing::info!(
            entries = moved,
            "embedded store: moved the undelivered events of the redb outbox to the log"
        );
        Ok(())
    }
}
