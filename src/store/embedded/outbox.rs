//! The callback outbox of the embedded store: records and acks go through the writer; claims,
//! stats and the dead-letter listing are read transactions.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use prost::Message;
use redb::{ReadTransaction, ReadableTable};

use super::schema::{DEAD, META, OUTBOX};
use super::writer::{Now, Op};
use super::{unavailable, writer_stopped, EmbeddedStore};
use crate::pb;
use crate::store::{Backlog, DeadLetter, Outbox, OutboxEntry, OutboxStats, Recorded, StoreError};

#[async_trait]
impl Outbox for EmbeddedStore {
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

    async fn record_batch(&self, events: &[pb::Event]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let events = events
            .iter()
            .map(|event| {
                (
                    event
                        .occurred_at
                        .as_ref()
                        .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0)),
                    event.id.clone(),
                    event.encode_to_vec(),
                )
            })
            .collect();
        let (op, new) = Op::record_batch(events);
        self.write(op).await?;
        Ok(new.load(std::sync::atomic::Ordering::Relaxed))
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

    /// One pass over the outbox, reading only each entry's account id (one table holds every
    /// account, in arrival order). Off the callback path: the reporter paces itself by how long
    /// this takes (see `outbox::report_stats`).
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.read(|txn| {
            let outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
            let now_ms = Now::get().millis;
            let mut accounts = BTreeMap::<String, Backlog>::new();
            for row in outbox.iter().map_err(unavailable)? {
                let (seq, value) = row.map_err(unavailable)?;
                let (at_ms, event) = value.value();
                let account = AccountOnly::decode(event)
                    .map_err(|e| StoreError::Corrupt(format!("outbox entry {}: {e}", seq.value())))?
                    .account_id;
                let age = Duration::from_millis(now_ms.saturating_sub(at_ms));
                accounts.entry(account).or_default().add(age);
            }
            Ok(OutboxStats::from_accounts(accounts))
        })
        .await
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

/// `pb::Event` with only its `account_id`: decoding it skips every other field unread.
#[derive(Clone, PartialEq, prost::Message)]
struct AccountOnly {
    #[prost(string, tag = "2")]
    account_id: String,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

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
    fn a_handle_of_another_backend_is_refused() {
        let entry = OutboxEntry {
            handle: "acme\n1-0".into(),
            event: event("a"),
        };
        assert!(matches!(sequence(&entry), Err(StoreError::Corrupt(_))));
    }
}
