//! Which accounts' part of the store the forwarder can reach. On a Redis Cluster with a master
//! down, the accounts whose slots it served cannot be claimed or acknowledged while the others
//! go on (issue 17): `wgw_store_account_unavailable{account}` says which, and the log says it
//! once per change (WARN when an account becomes unreachable, INFO when it is back), not on
//! every retry.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::store::StoreError;

#[derive(Default)]
pub(super) struct Availability {
    /// The accounts last seen unreachable.
    down: Mutex<HashSet<String>>,
}

impl Availability {
    /// A store step of these accounts failed with `error`. Only an unreachable store counts:
    /// corrupt data is no outage.
    pub(super) fn failed(&self, accounts: &[String], error: &StoreError) {
        if !matches!(error, StoreError::Unavailable(_)) {
            return;
        }
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        for account in accounts {
            if down.insert(account.clone()) {
                metrics::gauge!("wgw_store_account_unavailable", "account" => account.clone())
                    .set(1.0);
                tracing::warn!(account = %account, error = %error,
                    "the store is unreachable for this account: its events wait in the outbox \
                     (and its callbacks are answered 503) until it is back; other accounts go on");
            }
        }
    }

    /// A store step of these accounts succeeded.
    pub(super) fn succeeded(&self, accounts: &[String]) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_empty() {
            return;
        }
        for account in accounts {
            if down.remove(account) {
                metrics::gauge!("wgw_store_account_unavailable", "account" => account.clone())
                    .set(0.0);
                tracing::info!(account = %account,
                    "the store is reachable again for this account; its delivery resumes");
            }
        }
    }
}
