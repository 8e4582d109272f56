//! Lapsed documents out of the store. The kinds declared lapsing in the registry
//! ([`crate::store::kinds`]: the user cache of `enrichment.user_ttl_seconds`, the link-click
//! mapping, ...) are written with a TTL and read as absent once it passes, but neither backend
//! removes them by itself (Redis 7.0 cannot expire a hash field;
//! redb has no expiry): without a sweep an account would keep a record of every follower it
//! ever looked up, which is both unbounded growth and data nobody may keep any longer.
//!
//! Every `store.sweep_interval_seconds` the sweeper goes through those kinds of every account in
//! steps of [`STEP`] documents, removing the lapsed ones ([`crate::store::Documents::sweep_docs`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Services;
use crate::backoff::PerAccount;
use crate::store::kinds;

/// Documents looked at per store call: small enough that one step never holds up callbacks.
const STEP: usize = 1000;

/// Sweeps every `every` until `shutdown`.
pub async fn run(svc: Arc<Services>, every: Duration, shutdown: CancellationToken) {
    let backoff = PerAccount::new(every, Duration::from_secs(3600).max(every));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        sweep_all(&svc, &backoff, &shutdown).await;
    }
}

/// One pass over every account's lapsing kinds; returns how many documents were removed. A
/// store failure ends that account's pass (the next one starts over), never the sweeper, and
/// the account is skipped for a while (`backoff`), so that one whose part of the store is
/// unreachable (its Redis Cluster slot) does not hold up the others on every pass (issue 17).
pub async fn sweep_all(
    svc: &Services,
    backoff: &PerAccount,
    shutdown: &CancellationToken,
) -> usize {
    let mut total = 0;
    'accounts: for account in svc.accounts.keys().filter(|a| backoff.ready(a)) {
        for kind in kinds::lapsing().map(|k| k.name()) {
            let mut cursor: Option<String> = None;
            loop {
                if shutdown.is_cancelled() {
                    return total;
                }
                match svc
                    .store
                    .sweep_docs(account, kind, cursor.as_deref(), STEP)
                    .await
                {
                    Ok((next, removed)) => {
                        total += removed;
                        if removed > 0 {
                            metrics::counter!("wgw_store_docs_swept_total", "kind" => kind)
                                .increment(removed as u64);
                        }
                        match next {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                    Err(e) => {
                        let (wait, first) = backoff.failed(account);
                        if first {
                            tracing::warn!(account = %account, kind, error = %e,
                                retry_in_s = wait.as_secs(),
                                "cannot sweep lapsed documents; a later pass tries again");
                        }
                        continue 'accounts;
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        if backoff.succeeded(account) {
            tracing::info!(account = %account, "lapsed documents swept again");
        }
    }
    if total > 0 {
        tracing::debug!(removed = total, "lapsed documents swept");
    }
    total
}
