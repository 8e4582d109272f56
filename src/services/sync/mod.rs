//! Audience syncs (issue 14, item 1): the whole audience of an account, read from WeChat once,
//! each person forwarded to the CRM as one snapshot event, resumable, paced, one sync at a time
//! per account, surviving a SIGKILL of any instance like a broadcast job.
//!
//! - **Followers** (an Official Account, `{"kind": "followers"}`): `user/get` pages of up to
//!   10,000 openids by `next_openid`, then `user/info/batchget` by 100; one
//!   `follower_snapshot` per follower still following.
//! - **External contacts** (WeCom, `{"kind": "external_contacts"}`):
//!   `externalcontact/get_follow_user_list`, then `externalcontact/batch/get_by_user` for each
//!   member, 100 rows a page by its cursor; one `external_contact_snapshot` per (customer,
//!   member) pair, as WeCom lists them (events.proto says why they are not merged).
//!
//! **Documents** (typed kinds in `model.rs`):
//! - `sync/<sync_id>`: the sync, its progress and its cursor. Written by the start request, then
//!   by whichever instance holds the sync's lease, always compare-and-swap.
//! - `sync-current/current`: the sync now running on the account (`{"sync_id", "at"}`), written
//!   if absent by the start request: the one-at-a-time rule (a second start is 409 `conflict`,
//!   gRPC `ALREADY_EXISTS`). Removed when the sync ends; one left behind by a crash (its sync
//!   ended, or never written) is replaced.
//!
//! **Exactly one event per person.** An event's id is the SHA-1 of the account, the sync and
//! the person, and its `occurred_at` the sync's start, so the store's de-duplication key of a
//! snapshot is the same whenever it is recorded again. Each page of 100 is recorded with one
//! store write ([`crate::store::Outbox::record_batch`]) *before* the cursor moves past it; a
//! crash between the two makes the next holder read that page again, and its events are
//! dropped as duplicates (within `store.dedup_ttl_seconds`, a day by default). Progress counts
//! move with the cursor in one compare-and-swap, so they count each person once too.
//!
//! **Cursor.** Followers: the `next_openid` the current `user/get` page was asked with, and
//! how many of its openids are done (a multiple of 100): a resume asks for the same page again
//! and skips those. External contacts: the member list (read once), the member being read and
//! the cursor of its next page.
//!
//! **Pace and pauses.** Every WeChat call of this instance's syncs waits its turn
//! (`syncs.calls_per_minute`). A quota answer (45009, 45011, WeCom 45033), a busy WeChat (-1)
//! or no answer at all pauses the sync (`paused`, `paused_until`) for `syncs.backoff_min_ms`
//! doubling up to `syncs.backoff_max_seconds`, then it resumes where it was: never a failure. A
//! rejected token (40001, 42001) is replaced by the token authority and the call made again.
//! Any other refusal of a profile batch or of one member's customers is counted in `failures`
//! (with `last_error`) and skipped; a refusal of the list itself (`user/get`,
//! `get_follow_user_list`) fails the sync.
//!
//! **Cancelling** is one compare-and-swap on the sync's document (`cancelled`); the runner's
//! next compare-and-swap sees it and stops, so at most the page in flight is still recorded.
//!
//! **Where it lives**: `model` (stored shapes, the view), `jobs` (start and get, for both
//! transports), `snapshot` (the events), `runner` (the loop, the lease, the pace).

mod jobs;
mod model;
mod runner;
mod snapshot;

pub use jobs::{cancel_sync, get_sync, start_sync};
pub use model::SyncView;
pub use runner::{run, Syncs};
pub use snapshot::is_snapshot;
