//! Capped exponential backoff, shared by every retry loop (the forwarder, the WeChat API client,
//! the broadcast runner), so that they grow and cap the same way; and [`PerAccount`], the
//! backoff of the runners that go through every account in turn.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// `min · 2^doublings`, never above `max` (doublings beyond 20 change nothing but overflow).
pub fn exponential(min: Duration, max: Duration, doublings: u32) -> Duration {
    min.saturating_mul(1u32 << doublings.min(20)).min(max)
}

/// A random wait in [d/2, d], so that instances retrying the same thing spread out.
pub fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// One backoff per account, for a runner that goes through every account in turn (the
/// broadcast runner, the document sweeper, the reply-rule refresher): an account whose part of
/// the store fails (its Redis Cluster slot unreachable) is skipped until its backoff is over, so
/// that it does not hold up the others on every pass (issue 17). Its first failure in a row and
/// its recovery are the state changes worth a log line; the retries between them are not.
pub struct PerAccount {
    min: Duration,
    max: Duration,
    /// Failing accounts: consecutive failures, and when the account may be tried again.
    failing: Mutex<HashMap<String, (u32, Instant)>>,
}

impl PerAccount {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failing: Mutex::default(),
        }
    }

    /// Whether `account` may be tried now (it is not waiting out a backoff).
    pub fn ready(&self, account: &str) -> bool {
        self.lock()
            .get(account)
            .is_none_or(|(_, until)| *until <= Instant::now())
    }

    /// Records a failure of `account`: returns the wait before it is tried again, and whether
    /// this is its first failure in a row (it just became unavailable).
    pub fn failed(&self, account: &str) -> (Duration, bool) {
        let mut failing = self.lock();
        let entry = failing
            .entry(account.to_owned())
            .or_insert((0, Instant::now()));
        let first = entry.0 == 0;
        let wait = jittered(exponential(self.min, self.max, entry.0));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now() + wait;
        (wait, first)
    }

    /// Records a success of `account`: true when it had been failing (it just recovered).
    pub fn succeeded(&self, account: &str) -> bool {
        self.lock().remove(account).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_account_backs_off_the_failing_account_only_and_forgets_on_success() {
        let b = PerAccount::new(Duration::from_millis(50), Duration::from_millis(200));
        assert!(b.ready("a") && b.ready("b"));
        let (wait, first) = b.failed("a");
        assert!(first);
        assert!(wait >= Duration::from_millis(25) && wait <= Duration::from_millis(50));
        assert!(!b.ready("a"), "a waits out its backoff");
        assert!(b.ready("b"), "b is not held back by a");
        let (_, first) = b.failed("a");
        assert!(!first, "the second failure in a row is not a state change");
        for _ in 0..10 {
            let (wait, _) = b.failed("a");
            assert!(wait <= Duration::from_millis(200), "{wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(b.ready("a"), "tried again once the backoff is over");
        assert!(b.succeeded("a"), "a recovered");
        assert!(!b.succeeded("a"), "recovering twice is no state change");
        assert!(!b.succeeded("b"));
        assert!(
            b.failed("a").1,
            "failing again after a success is a state change"
        );
    }

    #[test]
    fn doubles_from_min_and_stops_at_max() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(exponential(min, max, 0), min);
        assert_eq!(exponential(min, max, 3), Duration::from_millis(800));
        assert_eq!(exponential(min, max, 5), max);
        assert_eq!(exponential(min, max, u32::MAX), max);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let d = Duration::from_millis(800);
        for _ in 0..100 {
            let j = jittered(d);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
    }
}
