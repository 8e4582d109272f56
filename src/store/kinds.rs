//! The registry of document kinds: every kind's name in the store and whether it lapses,
//! declared here once. A [`super::DocKind`] (the typed view, declared next to its value type)
//! can only be made from a [`Kind`] of this list, and the sweeper goes through the lapsing ones
//! of [`ALL`], so a new lapsing kind cannot be left out of the sweep.
//!
//! The names are the stored data's: renaming one orphans what was written under it.

use super::Lapse;

/// One kind of document: its name and whether it lapses. Made only by [`kinds!`] below, so
/// every kind is in [`ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    name: &'static str,
    lapse: Lapse,
}

impl Kind {
    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub const fn lapse(&self) -> Lapse {
        self.lapse
    }

    pub const fn lapses(&self) -> bool {
        matches!(self.lapse, Lapse::AfterTtl)
    }
}

/// Declares each kind as a constant and lists them all in [`ALL`].
macro_rules! kinds {
    ($($(#[$doc:meta])* $constant:ident = $name:literal, $lapse:ident;)+) => {
        $(
            $(#[$doc])*
            pub const $constant: Kind = Kind { name: $name, lapse: Lapse::$lapse };
        )+

        /// Every kind of document, in declaration order.
        pub static ALL: &[Kind] = &[$($constant),+];
    };
}

kinds! {
    /// The user cache of the forwarder's enrichment: openid → the user's details, for
    /// `enrichment.user_ttl_seconds`.
    USER = "user", AfterTtl;
    /// A short link, by its code.
    LINK = "link", Never;
    /// openid → the codes and times of the follower's last identified link clicks.
    LINK_CLICKS = "link_clicks", AfterTtl;
    /// A tracked link's OAuth `state` that was used (id: its nonce), while the state is valid:
    /// a state is good for one use.
    LINK_OAUTH_STATE = "link-oauth-state", AfterTtl;
    /// An anonymous click on a link by one client address (id: code and a hash of the
    /// address), for `links.anonymous_click_window_seconds`: one event per window.
    LINK_ANONYMOUS_CLICK = "link-anon-click", AfterTtl;
    /// An auto-reply rule, by its id.
    REPLY_RULE = "reply-rule", Never;
    /// The account's default welcome.
    REPLY_WELCOME = "reply-welcome", Never;
    /// A broadcast job and the state of each batch.
    BROADCAST_JOB = "bcast-job", Never;
    /// The recipients of one batch of a broadcast job.
    BROADCAST_BATCH = "bcast-batch", Never;
    /// A broadcast caller's idempotency key → the job id.
    BROADCAST_CLIENT_MSG_ID = "bcast-cmid", Never;
    /// The broadcast jobs the runner still has work on.
    BROADCAST_ACTIVE = "bcast-active", Never;
    /// WeChat's msg_id of a sent batch → its job and batch.
    BROADCAST_MSG_ID = "bcast-msgid", Never;
    /// What WeChat reported for a batch of a broadcast job.
    BROADCAST_RESULT = "bcast-result", Never;
    /// Which instance runs a broadcast job, as earlier versions kept it (a document with a TTL;
    /// it is a [`crate::store::LeaseKey::broadcast_job`] lease now). Nothing writes it any
    /// more: listed so that the sweeper removes what is left of it.
    BROADCAST_LEASE_LEGACY = "bcast-lease", AfterTtl;
    /// A plain-mode callback's `signature` → the hash of the body it came with, for twice the
    /// clock window (`crate::services::plain_signatures`).
    PLAIN_SIGNATURE = "plain-sig", AfterTtl;
    /// A WeCom `change_external_chat` event whose per-member join/leave events were recorded
    /// (id: the event's id), for a day: a retried batch does not read the group again.
    GROUP_MEMBER_EVENTS = "group-member-events", AfterTtl;
    /// An audience sync: its kind, status, progress and cursor (`crate::services::sync`).
    SYNC = "sync", Never;
    /// The account's sync now running (id `current`): one at a time per account.
    SYNC_CURRENT = "sync-current", Never;
    /// A template or subscription-notice job and the state of each page of recipients.
    TEMPLATE_JOB = "tsend-job", Never;
    /// One page of a template job's recipients, each with its status.
    TEMPLATE_PAGE = "tsend-page", Never;
    /// A template job caller's idempotency key → the job id.
    TEMPLATE_CLIENT_MSG_ID = "tsend-cmid", Never;
    /// The template jobs the runner still has work on.
    TEMPLATE_ACTIVE = "tsend-active", Never;
    /// WeChat's msgid of a sent template or notice → its job, page and recipient.
    TEMPLATE_MSG_ID = "tsend-msgid", Never;
    /// What WeChat reported (TEMPLATESENDJOBFINISH, subscribe_msg_sent_event) for the
    /// recipients of one page.
    TEMPLATE_RESULT = "tsend-result", Never;
    /// openid → the follower's last interaction, until the 48-hour window of customer-service
    /// messages closes (`crate::services::interactions`).
    INTERACTION = "interaction", AfterTtl;
    /// An upload by destination, kind and content hash → its media id (`crate::services::media`):
    /// permanent media kept, temporary media lapsing before WeChat forgets them (3 days).
    MEDIA = "media", AfterTtl;
    /// The bytes of a temporary upload by content hash, to upload them again once WeChat
    /// forgot the media id.
    MEDIA_BLOB = "media-blob", Never;
    /// A temporary media id → the upload it came from (hash, kind, name, destination).
    MEDIA_ID = "media-id", Never;
}

/// The kinds whose documents lapse: what the sweeper goes through.
pub fn lapsing() -> impl Iterator<Item = Kind> {
    ALL.iter().copied().filter(Kind::lapses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name() {
        let mut names: Vec<_> = ALL.iter().map(Kind::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }

    #[test]
    fn the_lapsing_kinds_are_the_user_cache_the_link_memories_the_legacy_broadcast_leases_and_plain_signatures(
    ) {
        let names: Vec<_> = lapsing().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "user",
                "link_clicks",
                "link-oauth-state",
                "link-anon-click",
                "bcast-lease",
                "plain-sig",
                "group-member-events",
                "interaction",
                "media",
            ]
        );
    }
}
