//! The callback outbox of the embedded store: records and acks are frames of the log
//! ([`super::log`]); claims and stats read its index in memory and the events from the segment
//! files; dead letters are redb rows, written through the redb writer.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use redb::ReadableTable;

use super::journal;
use super::log::{Entry, LogOp};
use super::schema::{DEAD, DEAD_BY_ID, META};
use super::writer::{Now, Op};
use super::{lock, unavailable, writer_stopped, EmbeddedStore};
use crate::pb;
use crate::store::{Backlog, DeadLetter, Outbox, OutboxEntry, OutboxStats, Recorded, StoreError};

/// The event's CreateTime (unix s), the first half of its de-duplication key.
fn created_at(event: &pb::Event) -> u64 {
    event
        .occurred_at
        .as_ref()
        .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0))
}

#[async_trait]
impl Outbox for EmbeddedStore {
    async fn record(&self, event: &pb::Event) -> Result<Recorded, StoreError> {
        let op = LogOp::Record {
            at: created_at(event),
            id: event.id.clone(),
            account: event.account_id.clone(),
            event: event.encode_to_vec(),
        };
        Ok(match self.log.write(op).await? {
            true => Recorded::New,
            false => Recorded::Duplicate,
        })
    }

    async fn record_batch(&self, events: &[pb::Event]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let new = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let events = events
            .iter()
            .map(|event| {
                (
                    created_at(event),
                    event.id.clone(),
                    event.account_id.clone(),
                    event.encode_to_vec(),
                )
            })
            .collect();
        self.log
            .write(LogOp::RecordBatch {
                events,
                new: new.clone(),
            })
            .await?;
        Ok(new.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.log.healthy()?;
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
            // Registered before looking, so an append committed after the look still wakes us.
            let appended = self.log.shared.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let oldest: Vec<(u64, Entry)> = lock(&self.log.shared.index).oldest(max);
            if !oldest.is_empty() {
                return tokio::task::spawn_blocking(move || read_entries(oldest))
                    .await
                    .map_err(|e| {
                        StoreError::Unavailable(format!("embedded store: read failed: {e}"))
                    })?;
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// One node, one forwarder: the entries above `after`'s sequence number.
    async fn claim_next(
        &self,
        _consumer: &str,
        _account: Option<&str>,
        after: &OutboxEntry,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let after = sequence(after)?;
        let next = lock(&self.log.shared.index).oldest_after(after, max);
        if next.is_empty() {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || read_entries(next))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store: read failed: {e}")))?
    }

    async fn ack(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let seqs = entries
            .iter()
            .map(sequence)
            .collect::<Result<Vec<_>, _>>()?;
        self.log.write(LogOp::Ack { seqs }).await.map(|_| ())
    }

    /// The dead letter is committed first, then the outbox entry acknowledged: a crash in
    /// between leaves the event in both (delivered again, then dead-lettered again), never in
    /// neither.
    async fn dead_letter(&self, entry: &OutboxEntry, reason: &str) -> Result<(), StoreError> {
        let seq = sequence(entry)?;
        if !lock(&self.log.shared.index).contains(seq) {
            return Ok(());
        }
        self.write(Op::PutDead {
            id: entry.event.id.clone(),
            reason: reason.to_owned(),
            event: entry.event.encode_to_vec(),
        })
        .await?;
        self.log
            .write(LogOp::Ack { seqs: vec![seq] })
            .await
            .map(|_| ())
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

    /// The event is appended to the log first, then the dead letter removed: a crash in between
    /// leaves it in both (a second replay would deliver it twice), never in neither.
    async fn replay_dead_letter(&self, event_id: &str) -> Result<bool, StoreError> {
        let _one_at_a_time = self.replay.lock().await;
        let id = event_id.to_owned();
        let found = self
            .read(move |txn| {
                let by_id = txn.open_multimap_table(DEAD_BY_ID).map_err(unavailable)?;
                let Some(seq) = by_id
                    .get(id.as_str())
                    .map_err(unavailable)?
                    .next()
                    .transpose()
                    .map_err(unavailable)?
                    .map(|v| v.value())
                else {
                    return Ok(None);
                };
                let dead = txn.open_table(DEAD).map_err(unavailable)?;
                let event = dead
                    .get(seq)
                    .map_err(unavailable)?
                    .map(|v| v.value().2.to_vec());
                Ok(event.map(|event| (seq, event)))
            })
            .await?;
        let Some((seq, event)) = found else {
            return Ok(false);
        };
        let account = decode(&event, "dead letter", seq)?.account_id;
        self.log
            .write(LogOp::Append {
                id: event_id.to_owned(),
                account,
                event,
            })
            .await?;
        self.write(Op::RemoveDead {
            id: event_id.to_owned(),
            seq,
        })
        .await?;
        Ok(true)
    }

    /// From the index in memory: no event is read.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let now_ms = Now::get().millis;
        let accounts: BTreeMap<String, Backlog> = lock(&self.log.shared.index)
            .backlogs()
            .into_iter()
            .map(|(account, depth, earliest_ms)| {
                let oldest = Duration::from_millis(now_ms.saturating_sub(earliest_ms));
                (
                    account.to_owned(),
                    Backlog {
                        depth,
                        oldest_age: Some(oldest),
                    },
                )
            })
            .collect();
        Ok(OutboxStats::from_accounts(accounts))
    }
}

/// Reads the events of claimed entries from their segments: one read for each run of entries
/// that lie together in one segment (a claimed batch usually is one run).
fn read_entries(entries: Vec<(u64, Entry)>) -> Result<Vec<OutboxEntry>, StoreError> {
    /// Largest span read at once.
    const SPAN_MAX: u64 = 4 << 20;
    let mut claimed = Vec::with_capacity(entries.len());
    let mut rest = entries.as_slice();
    while let Some((first_seq, first)) = rest.first() {
        let run = rest
            .iter()
            .take_while(|(_, e)| {
                e.segment == first.segment
                    && e.offset >= first.offset
                    && e.offset + u64::from(e.len) - first.offset <= SPAN_MAX
            })
            .count()
            .max(1);
        let (group, tail) = rest.split_at(run);
        let end = group
            .iter()
            .map(|(_, e)| e.offset + u64::from(e.len))
            .max()
            .unwrap_or(first.offset);
        let span = journal::read_at(&first.file, first.offset, (end - first.offset) as usize)
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "embedded store: cannot read outbox entry {first_seq} from log segment {}: {e}",
                    first.segment
                ))
            })?;
        for (seq, entry) in group {
            let at = (entry.offset - first.offset) as usize;
            let bytes = &span[at..at + entry.len as usize];
            claimed.push(OutboxEntry {
                handle: seq.to_string(),
                event: decode(bytes, "outbox entry", *seq)?,
            });
        }
        rest = tail;
    }
    Ok(claimed)
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
