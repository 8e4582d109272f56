//! The mark compactor: moves de-duplication marks from the hot tier (in memory, backed by the
//! log) to the cold tier (redb's `seen_by_time`), in log order, off the callback path.
//!
//! Once a second it reads the log from its watermark and takes the marks recorded more than
//! [`HOT_SECS`] ago (or the TTL, if shorter), and the oldest ones beyond [`HOT_CAP`]: their
//! keys go into redb in one durable transaction with the new watermark (keys lead with the
//! CreateTime, so a bulk insert fills the newest leaves instead of scattering), then the log
//! thread drops their fingerprints. A crash between the two leaves marks in both tiers, which is
//! harmless; the watermark is only ever behind what redb holds.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use redb::Database;

use super::journal::{self, Frame};
use super::lock;
use super::log::{Eviction, Fingerprint, Shared};
use super::schema::{META, SEEN};
use super::writer::Now;
use crate::store::StoreError;

/// Marks stay hot this long at most (a WeChat retry comes within 15 s of the first copy).
pub(super) const HOT_SECS: u64 = 600;
/// Most hot marks (16 bytes each, a 4.5 MiB table at this count): beyond it the oldest go cold
/// early. It also bounds the log kept for marks: a segment goes once its marks are cold, so at
/// most this many callbacks (~140 MiB at 1 KiB) stay on disk for de-duplication alone.
pub(super) const HOT_CAP: usize = 1 << 17;
/// Most marks moved by one round (one redb transaction).
const ROUND_MAX: usize = 20_000;
/// How often the compactor hands the allocator's free pages back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// The compactor's position in [`META`]: segment number and offset.
pub(super) const WATERMARK_SEGMENT: &str = "marks_segment";
pub(super) const WATERMARK_OFFSET: &str = "marks_offset";

pub(super) struct Compactor {
    pub dir: PathBuf,
    pub db: Arc<Database>,
    pub shared: Arc<Shared>,
    pub fingerprint: Arc<Fingerprint>,
    pub dedup_ttl_secs: u64,
    pub evictions: mpsc::Sender<Eviction>,
    /// Closed when the store is dropped.
    pub stop: mpsc::Receiver<()>,
    pub watermark: (u32, u64),
    pub hot_secs: u64,
    pub hot_cap: usize,
}

impl Compactor {
    pub(super) fn run(mut self) {
        let mut pause = Duration::from_secs(1);
        let mut trimmed = std::time::Instant::now();
        loop {
            if trimmed.elapsed() >= TRIM_EVERY {
                trim();
                trimmed = std::time::Instant::now();
            }
            match self.stop.recv_timeout(pause) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            pause = match self.round(Now::get()) {
                Ok(full) if full => Duration::ZERO,
                Ok(_) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "embedded store: cannot move de-duplication marks to the cold tier");
                    Duration::from_secs(5)
                }
            };
        }
    }

    /// One round; true when it stopped at [`ROUND_MAX`] (more to do at once).
    pub(super) fn round(&mut self, now: Now) -> Result<bool, StoreError> {
        let cutoff = now
            .secs
            .saturating_sub(self.hot_secs.min(self.dedup_ttl_secs.saturating_sub(1)));
        let end = *lock(&self.shared.end);
        let mut over = self
            .shared
            .hot_len
            .load(Ordering::Relaxed)
            .saturating_sub(self.hot_cap);
        let mut marks = Vec::new();
        let mut fingerprints = Vec::new();
        let mut position = self.watermark;
        let mut max_at = None;
        let mut full = false;
        for segment in journal::segments(&self.dir)? {
            if segment < position.0 || segment > end.0 {
                continue;
            }
            if segment > position.0 {
                position = (segment, 0);
            }
            let to = (segment == end.0).then_some(end.1);
            let mut stopped = false;
            let path = journal::segment_path(&self.dir, segment);
            let reached = journal::scan(&path, position.1, to, |body_at, body| {
                if let Some(Frame::Event(e)) = journal::decode(body) {
                    if e.marked {
                        let recorded = e.enqueued_ms / 1000;
                        if marks.len() >= ROUND_MAX {
                            full = true;
                            stopped = true;
                            return Ok(false);
                        }
                        if recorded >= cutoff && over == 0 {
                            stopped = true;
                            return Ok(false);
                        }
                        over = over.saturating_sub(1);
                        max_at = max_at.max(Some(e.at));
                        fingerprints.push(self.fingerprint.of(e.at, e.id));
                        marks.push((e.at, e.id.to_owned(), recorded + self.dedup_ttl_secs));
                    }
                }
                let _ = body_at;
                Ok(true)
            })?;
            position = (segment, reached);
            if stopped || segment == end.0 {
                break;
            }
        }
        if position == self.watermark {
            return Ok(false);
        }
        let txn = self.db.begin_write().map_err(super::unavailable)?;
        {
            let mut seen = txn.open_table(SEEN).map_err(super::unavailable)?;
            for (at, id, expires) in &marks {
                if *expires > now.secs {
                    seen.insert((*at, id.as_str()), *expires)
                        .map_err(super::unavailable)?;
                }
            }
            let mut meta = txn.open_table(META).map_err(super::unavailable)?;
            meta.insert(WATERMARK_SEGMENT, u64::from(position.0))
                .map_err(super::unavailable)?;
            meta.insert(WATERMARK_OFFSET, position.1)
                .map_err(super::unavailable)?;
        }
        txn.commit().map_err(super::unavailable)?;
        self.watermark = position;
        let _ = self.evictions.send(Eviction {
            fingerprints,
            max_at,
            watermark: position,
        });
        Ok(full)
    }
}

/// Returns the free pages of every malloc arena to the system. The callback path allocates and
/// frees in several threads (the log, the cold reader, redb's page buffers here), and glibc keeps
/// what they free: under a backlog RSS otherwise stays at its peak long after it drained.
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
