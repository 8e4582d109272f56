//! Template messages (模板消息) and subscription notices (订阅通知) as tracked, resumable
//! jobs: one request names a template, its values and many followers; the gateway sends one
//! call per follower, paced, each follower at most once across crashes, and records what
//! WeChat answered and what it reported back (TEMPLATESENDJOBFINISH).
//!
//! **Documents** (under the account; typed kinds in `model.rs`):
//! - `tsend-job/<job>`: the job, the state and counts of each page of recipients. Written by
//!   the creating request, then by whichever instance holds the job's lease (and by a cancel),
//!   always compare-and-swap.
//! - `tsend-page/<job>-<i>`: 100 recipients, each with its status (`pending`, `sent` with
//!   msgid, `failed` with errcode, `unknown`, `cancelled`), and the open window (below).
//!   Written by the creating request, then only by the lease holder.
//! - `tsend-cmid/<client_msg_id>`, `tsend-active/<job>`: as for broadcasts.
//! - `tsend-msgid/<msgid>` → (job, page, recipient), written before the page records the send.
//! - `tsend-result/<job>-<i>`: what WeChat reported per recipient of page `i`, written by the
//!   forwarder (compare-and-swap), never by the runner.
//!
//! **At most once per recipient.** Before the first call of a window of recipients, the page
//! is written with the window `[from, to)` and its start time; after the window its outcomes
//! are written and the window cleared. A window found open (the instance died, or lost its
//! lease, mid-window) names the recipients whose send may have reached WeChat:
//! - a template message carries a `client_msg_id` derived from the job and the openid
//!   ([`recipient_client_msg_id`]); WeChat sends one message per openid and client_msg_id
//!   within 10 minutes, so within 9 minutes of the window's start they are sent again with the
//!   same id (WeChat does not deliver twice); later they become `unknown`;
//! - a notice (`bizsend` has no such key) goes in windows of one, and a recipient in doubt
//!   becomes `unknown`, never sent again.
//!
//! **Quota.** 45009 / 45011 leave the recipient pending, pause the job (`paused`, with the
//! reason and when it resumes) and back off (`template_sends.backoff_*`).
//!
//! [`recipient_client_msg_id`]: crate::domain::template::recipient_client_msg_id

mod jobs;
mod model;
mod persist;
mod reconcile;
mod runner;
mod views;

pub use jobs::{
    cancel_job, create_job, get_job, list_templates, FieldView, SendTemplate, TemplateView,
};
pub use reconcile::TemplateAttachment;
pub use runner::{run, Templates};
pub use views::{CountsView, JobView, PauseView, RecipientView};
