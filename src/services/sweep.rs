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
use crate::store::kinds;

/// Documents looked at per store call: small enough that one step never holds up callbacks.
const STEP: usize = 1000;

/// Sweeps every `every` until `shutdown`.
pub async fn run(svc: Arc<Services>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        sweep_all(&svc, &shutdown).await;
    }
}

/// One pass over every account's lapsing kinds; returns how many documents were removed. A
/// store failure ends that kind's pass (the next one starts over), never the sweeper.
pub async fn sweep_all(svc: &Services, shutdown: &CancellationToken) -> usize {
    let mut total = 0;
    for account in svc.accounts.keys() {
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
                        tracing::warn!(account = %account, kind, error = %e,
                            "cannot sweep lapsed documents; the next pass tries again");
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
        }
    }
    if total > 0 {
        tracing::debug!(removed = total, "lapsed documents swept");
    }
    total
}
