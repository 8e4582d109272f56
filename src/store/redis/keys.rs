//! The key names of the Redis store (listed in the module documentation of [`super`]). They
//! are the stored data's: renaming one orphans what was written under it. Every key of an
//! account carries the account in a hash tag, so all of them share one Cluster slot.

use crate::store::LeaseKey;

pub(super) fn token_hash(key: &str) -> String {
    format!("wgw:{{{key}}}:token")
}

pub(super) fn scenes_hash(account: &str) -> String {
    format!("wgw:{{{account}}}:scenes")
}

pub(super) fn menu_versions_hash(account: &str) -> String {
    format!("wgw:{{{account}}}:menu:versions")
}

/// One hash per account and document kind: id → the document as [`super::encode_doc`] lays it
/// out (Redis 7.0 cannot expire a hash field, so a lapsed document is skipped on read and
/// removed when next written or deleted, or by [`crate::store::Documents::sweep_docs`]).
pub(super) fn docs_hash(account: &str, kind: &str) -> String {
    format!("wgw:{{{account}}}:docs:{kind}")
}

/// A lease of [`crate::store::Leases`], in the slot of what it guards. The token refresh and menu
/// leases keep the names they had before the leases were one API, so instances of both versions
/// exclude each other during a rolling upgrade.
pub(super) fn lease_key(key: &LeaseKey) -> String {
    match key {
        LeaseKey::TokenRefresh { token_key } => format!("wgw:{{{token_key}}}:token:lease"),
        LeaseKey::Menu { account } => format!("wgw:{{{account}}}:menu:lease"),
        LeaseKey::BroadcastJob { account, job } => format!("wgw:{{{account}}}:bcast:lease:{job}"),
        LeaseKey::Sync { account, sync } => format!("wgw:{{{account}}}:sync:lease:{sync}"),
        LeaseKey::TemplateJob { account, job } => format!("wgw:{{{account}}}:tsend:lease:{job}"),
    }
}

/// The keys of one account.
pub(super) struct AccountKeys {
    pub(super) id: String,
    pub(super) lease: String,
    pub(super) outbox: String,
    pub(super) dead: String,
    pub(super) dead_ids: String,
}

impl AccountKeys {
    pub(super) fn new(id: String) -> Self {
        Self {
            lease: format!("wgw:{{{id}}}:lease"),
            outbox: format!("wgw:{{{id}}}:outbox"),
            dead: format!("wgw:{{{id}}}:dead"),
            dead_ids: format!("wgw:{{{id}}}:dead:ids"),
            id,
        }
    }

    pub(super) fn seen(&self, event_id: &str) -> String {
        format!("wgw:{{{}}}:seen:{event_id}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot-defining part of a key: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_an_account_shares_its_hash_tag() {
        let keys = AccountKeys::new("acme-mp".into());
        for key in [
            &keys.seen("abc"),
            &keys.outbox,
            &keys.dead,
            &keys.dead_ids,
            &scenes_hash("acme-mp"),
            &menu_versions_hash("acme-mp"),
            &lease_key(&LeaseKey::menu("acme-mp")),
            &lease_key(&LeaseKey::broadcast_job("acme-mp", "j1")),
        ] {
            assert_eq!(hash_tag(key), "acme-mp", "{key}");
        }
        assert_eq!(hash_tag(&token_hash("mp-wx1")), "mp-wx1");
        assert_eq!(
            hash_tag(&lease_key(&LeaseKey::token_refresh("mp-wx1"))),
            "mp-wx1"
        );
    }
}
