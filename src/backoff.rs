//! Capped exponential backoff, shared by every retry loop (the forwarder, the WeChat API client,
//! the broadcast runner), so that they grow and cap the same way.

use std::time::Duration;

use rand::Rng;

/// `min · 2^doublings`, never above `max` (doublings beyond 20 change nothing but overflow).
pub fn exponential(min: Duration, max: Duration, doublings: u32) -> Duration {
    min.saturating_mul(1u32 << doublings.min(20)).min(max)
}

/// A random wait in [d/2, d], so that instances retrying the same thing spread out.
pub fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod tests {
    use super::*;

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
