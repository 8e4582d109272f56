//! Concurrent records share round trips: [`Outbox::record`] on the Redis store goes through a
//! queue (a lane), and the records that arrive while earlier ones are on their way to Redis go
//! together, up to [`MAX_BATCH`] of them, in one `EVALSHA` of
//! [`RECORD_MANY`](super::scripts::RECORD_MANY) (for each record in turn: the de-duplication
//! check, the append and the mark, as [`RECORD`](super::scripts::RECORD) does for one). On one
//! Redis server every account shares one lane, so that traffic spread over many accounts is
//! batched as well as one account's (with a lane per account, 64 callbacks over 1,000 accounts
//! were 64 script calls, and a callback cost 2.2× the one-account figure); on a Redis Cluster
//! each account has its own lane, so that a script call stays in the account's slot.
//!
//! Each caller is answered exactly as if it had been alone: `New` once its event is in the
//! outbox and its mark set (the script has run, so Redis has both, durable as Redis makes them:
//! the same point at which a lone record is answered), `Duplicate` when its event id was marked
//! before (by an earlier record, or by an earlier one of the same batch), an error when its own
//! append or mark failed or the batch did not reach Redis.
//!
//! At most [`MAX_IN_FLIGHT`] batches of one lane are on their way at a time; the next batch
//! takes everything queued meanwhile. While traffic is light, every record finds a free slot
//! and goes alone (with the one-record script, as before the queue). Batches run on
//! tasks of their own, so a caller that gives up waiting (its HTTP request dropped) never
//! strands the records it would have carried.
//!
//! [`Outbox::record`]: crate::store::Outbox::record

use std::sync::{Arc, Mutex};

use redis::{RedisResult, Script, Value};
use tokio::sync::oneshot;

use super::connection::{redis_error, Conn};
use super::keys::AccountKeys;
use super::scripts::{RECORD, RECORD_MANY};
use super::{unix_millis, RedisStore};
use crate::pb;
use crate::store::{Recorded, StoreError};

/// The most records in one script call (its arguments: ~1 KB each).
pub(super) const MAX_BATCH: usize = 256;
/// The most batches of one lane on their way to Redis at a time.
pub(super) const MAX_IN_FLIGHT: usize = 4;

pub(super) struct RecordQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// The store's command connection (cloned per call; it multiplexes one connection).
    conn: Conn,
    record: Script,
    record_many: Script,
    dedup_ttl_ms: u64,
    /// Each configured account's outbox key, in the store's account order.
    outboxes: Vec<String>,
    /// One for every account on one server; one per account (by index) on a cluster.
    lanes: Vec<Mutex<Queued>>,
}

#[derive(Default)]
struct Queued {
    waiting: Vec<Waiting>,
    /// Batches of this lane between their start and their answers.
    in_flight: usize,
}

struct Waiting {
    /// Index of the record's account.
    account: usize,
    seen: String,
    encoded: Vec<u8>,
    answer: oneshot::Sender<Result<Recorded, StoreError>>,
}

impl RecordQueue {
    /// `cluster`: a lane per account (a script call must stay in one slot).
    pub(super) fn new(
        conn: Conn,
        accounts: &[AccountKeys],
        dedup_ttl_ms: u64,
        cluster: bool,
    ) -> Self {
        let lanes = if cluster { accounts.len() } else { 1 };
        Self {
            inner: Arc::new(Inner {
                conn,
                record: Script::new(RECORD),
                record_many: Script::new(RECORD_MANY),
                dedup_ttl_ms,
                outboxes: accounts.iter().map(|a| a.outbox.clone()).collect(),
                lanes: (0..lanes).map(|_| Mutex::default()).collect(),
            }),
        }
    }

    /// Loads the batch script (at connect, like the store's other scripts, so that the first
    /// batch is not a `NOSCRIPT` and a load).
    pub(super) async fn load(&self) -> Result<(), StoreError> {
        self.inner
            .record_many
            .load_async(&mut self.inner.conn.clone())
            .await
            .map_err(|e| redis_error("load scripts", e))?;
        Ok(())
    }

    /// Queues one record of the account at index `account` and waits for its own answer.
    async fn record(
        &self,
        account: usize,
        seen: String,
        encoded: Vec<u8>,
    ) -> Result<Recorded, StoreError> {
        let (answer, answered) = oneshot::channel();
        let lane = if self.inner.lanes.len() == 1 {
            0
        } else {
            account
        };
        let start = {
            let mut queued = lock(&self.inner.lanes[lane]);
            queued.waiting.push(Waiting {
                account,
                seen,
                encoded,
                answer,
            });
            if queued.in_flight < MAX_IN_FLIGHT {
                queued.in_flight += 1;
                Some(take_batch(&mut queued))
            } else {
                None // a batch on its way takes it when it comes back
            }
        };
        if let Some(batch) = start {
            tokio::spawn(Arc::clone(&self.inner).drive(lane, batch));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the Redis record batch was abandoned".into(),
            ))
        })
    }
}

impl Inner {
    /// Sends `batch`, answers its callers, then takes what queued meanwhile, until nothing has.
    async fn drive(self: Arc<Self>, lane: usize, mut batch: Vec<Waiting>) {
        let lane = &self.lanes[lane];
        loop {
            let answers = self.send(&batch).await;
            for (waiting, answer) in batch.drain(..).zip(answers) {
                // A caller that stopped waiting (its request dropped) is no error here.
                let _ = waiting.answer.send(answer);
            }
            let mut queued = lock(lane);
            if queued.waiting.is_empty() {
                queued.in_flight -= 1;
                return;
            }
            batch = take_batch(&mut queued);
        }
    }

    /// One script call for the whole batch (retried once when the connection had dropped: a
    /// record that did run then finds its mark and answers `Duplicate`, with its event in the
    /// outbox either way, as a lone record's retry does). One answer per record, in order.
    async fn send(&self, batch: &[Waiting]) -> Vec<Result<Recorded, StoreError>> {
        let now = unix_millis();
        let invoke = || {
            let invocation = if let [one] = batch {
                let mut invocation = self.record.key(&one.seen);
                invocation
                    .key(&self.outboxes[one.account])
                    .arg(self.dedup_ttl_ms)
                    .arg(&one.encoded)
                    .arg(now);
                invocation
            } else {
                let mut invocation = self.record_many.prepare_invoke();
                for waiting in batch {
                    invocation
                        .key(&self.outboxes[waiting.account])
                        .key(&waiting.seen);
                }
                invocation.arg(self.dedup_ttl_ms).arg(now);
                for waiting in batch {
                    invocation.arg(&waiting.encoded);
                }
                invocation
            };
            let mut conn = self.conn.clone();
            async move {
                let reply: RedisResult<Value> = invocation.invoke_async(&mut conn).await;
                reply
            }
        };
        let reply = match invoke().await {
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(error = %e, "Redis connection dropped; retrying the records once");
                invoke().await
            }
            reply => reply,
        };
        match reply {
            Ok(Value::Int(one)) if batch.len() == 1 => vec![Ok(recorded(one))],
            Ok(Value::Array(each)) if each.len() == batch.len() => {
                each.into_iter().map(record_answer).collect()
            }
            Ok(_) => batch
                .iter()
                .map(|_| {
                    Err(StoreError::Corrupt(
                        "unexpected reply shape from Redis record".into(),
                    ))
                })
                .collect(),
            Err(e) => {
                let failed = redis_error("record", e).to_string();
                batch
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(failed.clone())))
                    .collect()
            }
        }
    }
}

impl RedisStore {
    /// [`Outbox::record`](crate::store::Outbox::record), through the account's queue.
    pub(super) async fn record_queued(&self, event: &pb::Event) -> Result<Recorded, StoreError> {
        use prost::Message;
        let index = *self.by_id.get(&event.account_id).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "account {:?} is not configured for the Redis store",
                event.account_id
            ))
        })?;
        let seen = self.accounts[index].seen(&event.id);
        self.records
            .record(index, seen, event.encode_to_vec())
            .await
    }
}

fn take_batch(queued: &mut Queued) -> Vec<Waiting> {
    if queued.waiting.len() <= MAX_BATCH {
        std::mem::take(&mut queued.waiting)
    } else {
        queued.waiting.drain(..MAX_BATCH).collect()
    }
}

fn recorded(new: i64) -> Recorded {
    if new == 1 {
        Recorded::New
    } else {
        Recorded::Duplicate
    }
}

/// One record's part of a `RECORD_MANY` reply: 1 new, 0 duplicate, or the error of its own
/// append or mark.
fn record_answer(value: Value) -> Result<Recorded, StoreError> {
    match value {
        Value::Int(new) => Ok(recorded(new)),
        Value::BulkString(message) => Err(StoreError::Unavailable(format!(
            "Redis record failed: {}",
            String::from_utf8_lossy(&message)
        ))),
        Value::SimpleString(message) => Err(StoreError::Unavailable(format!(
            "Redis record failed: {message}"
        ))),
        _ => Err(StoreError::Corrupt(
            "unexpected reply shape from Redis record".into(),
        )),
    }
}

fn lock(queue: &Mutex<Queued>) -> std::sync::MutexGuard<'_, Queued> {
    // The lock is never held across an await or a panic-prone call.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
