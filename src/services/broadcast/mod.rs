//! Broadcasts as tracked, resumable jobs: a CRM fires one request, the gateway sends
//! it to WeChat in batches, paced, exactly once per batch across crashes, and records what
//! WeChat reports back.
//!
//! **Documents** (the store's documents, under the account; each a typed kind declared in
//! `model.rs`, JSON unless said otherwise):
//! - `bcast-job/<job>`: the job and the state of each batch. Written by the creating request,
//!   then by whichever instance holds the job's lease (and by `DELETE`), always
//!   compare-and-swap.
//! - `bcast-batch/<job>-<i>`: the recipients of batch `i`, written once before the job exists.
//! - `bcast-cmid/<client_msg_id>`: the caller's idempotency key → the job id (create-only), as
//!   plain UTF-8 rather than JSON.
//! - `bcast-active/<job>`: the jobs the runner still has work on (the byte `1`: its presence is
//!   what counts).
//! - `bcast-msgid/<msg_id>`: WeChat's msg_id → `(job, batch)`, for the forwarder.
//! - `bcast-result/<job>-<i>`: what WeChat reported for a batch. The forwarder writes it from
//!   a MASSSENDJOBFINISH callback (replacing whatever is there: the callback is the full
//!   report); the runner's `mass/get` check writes it only if absent. So the runner and the
//!   forwarder never overwrite each other's job record.
//!
//! **Lease.** Which instance runs a job is the store's lease
//! [`LeaseKey::broadcast_job`](crate::store::LeaseKey::broadcast_job), taken for a turn on the
//! job and renewed by its holder while the turn lasts.
//!
//! **Exactly one send per batch.** Everything is persisted before the first call to WeChat.
//! Each batch carries a `clientmsgid` derived from the job id and the batch number
//! ([`batch_client_msg_id`]); WeChat de-duplicates by it for 24 hours and answers a repeat with
//! 45065 and the msg_id of the first send. So a batch whose answer was lost (a timeout, a crash
//! between WeChat accepting it and the gateway recording it) is sent again with the same
//! clientmsgid, and 45065 marks it sent. WeCom's `add_msg_template` has no such key, so it is
//! called in one attempt (never repeated inside the call), and a WeCom batch found `sending`
//! (an attempt whose answer was lost) is first *reconciled* ([`Runner::reconcile`]): WeCom's
//! record of group messages since the first attempt is searched for this batch's send; found,
//! it is recorded (`"reconciled": true`); not found, the attempt did not land and the batch is
//! sent again; unsure (the search failed), nothing is sent until a later search answers.
//!
//! **Lifecycle** of a batch: `queued` → `sending` (persisted before each call) → `sent` (WeChat
//! answered a msg_id) → `finished` (its result is in) or `failed` (WeChat refused it: a bad
//! media_id, an invalid openid list), or `cancelled` (never sent). A job is `queued`,
//! `sending`, `sent` (every batch settled, results pending), `finished`, `failed` (no batch
//! could be sent), or `cancelled` (cancelled, and nothing is pending any more).
//!
//! **Cancelling** ([`cancel_job`]) is one compare-and-swap on the job: its queued batches
//! become `cancelled`. The runner marks a batch `sending` only through a compare-and-swap that
//! sees no cancellation, so on any instance either the cancel lands first and the batch is
//! never sent, or the batch was marked first and its attempt (in flight, it cannot be undone)
//! runs to its end and its result is kept. A batch left in doubt by such an attempt is settled
//! without a new send: reconciled on WeCom, `cancelled` (with a note) on Official Accounts.
//!
//! **Where it lives**: `model` (the stored shapes and document kinds), `persist` (loading and
//! the compare-and-swap update of a job), `lease` (which instance runs a job), `jobs` (the use
//! cases both transports call), `views` (what they answer), `runner` (the sending loop) and
//! `reconcile` (what WeChat reports back: callbacks, result checks, the WeCom reconcile).
//!
//! [`batch_client_msg_id`]: crate::domain::broadcast::batch_client_msg_id
//! [`Runner::reconcile`]: runner::Runner::reconcile

mod jobs;
mod lease;
mod model;
mod persist;
mod reconcile;
mod runner;
mod views;

pub use jobs::{cancel_job, create_job, delete_job, get_job, preview, SendBroadcast};
pub use reconcile::JobAttachment;
pub use runner::{run, Broadcasts};
pub use views::{BatchView, JobView};
