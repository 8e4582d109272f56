//! The callback use case, once the envelope has opened and the message is normalized: choose
//! the answer (an auto-reply rule or a welcome, [`autoreply::decide`]), record the event durably
//! (de-duplicated and appended to the outbox, atomically), then send a contact-me welcome once.
//!
//! The answer is chosen before the write, so that the recorded event names it
//! (`reply_rule_id`) and a WeChat retry (a duplicate) gets the same reply again; it leaves only
//! after the write. How the reply travels (plain or sealed) is the envelope's business.

use std::sync::Arc;
use std::time::Instant;

use super::autoreply::{self, Answer};
use super::Services;
use crate::domain::autoreply::Reply;
use crate::pb;
use crate::store::{Recorded, StoreError};

/// A durably recorded callback.
pub struct Accepted {
    pub recorded: Recorded,
    /// The passive reply to send back in the callback's answer, if a rule or a welcome answers.
    pub reply: Option<Reply>,
}

/// Chooses the answer to `event`, records it, and starts a contact-me welcome when its
/// WelcomeCode is new. `received`: when the callback arrived (the code's 20 s count from it).
pub async fn accept(
    svc: &Arc<Services>,
    event: &mut pb::Event,
    received: Instant,
) -> Result<Accepted, StoreError> {
    let answer = autoreply::decide(svc, event).await;
    let recorded = svc.store.record(event).await?;
    let reply = match answer {
        Some(Answer::Passive(reply)) => Some(reply),
        Some(Answer::WelcomeMsg {
            welcome_code,
            reply,
        }) => {
            // A WelcomeCode works once: a retry of the event sends nothing more.
            if recorded == Recorded::New {
                autoreply::send_welcome_soon(
                    svc.clone(),
                    event.account_id.clone(),
                    welcome_code,
                    reply,
                    received,
                );
            }
            None
        }
        None => None,
    };
    Ok(Accepted { recorded, reply })
}
