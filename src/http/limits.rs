//! Concurrency limits of the callback path: at most `callbacks.max_in_flight` callbacks at once
//! in the whole instance and `callbacks.max_in_flight_per_account` per account, so that one
//! flooded account (a campaign gone viral, a retry storm) cannot take every slot and starve the
//! others.
//!
//! Over a limit the callback is answered `503` at once, before anything is parsed or stored:
//! WeChat gives up on an answer after 5 seconds and retries the callback (three times in all,
//! per its "被动回复" documentation), so queueing a callback behind others would only turn it
//! into a timeout that WeChat retries anyway, later and with less of the window left. A 503 is
//! the same signal, sent while WeChat still listens, and nothing of it was stored. The counters
//! are plain atomics taken with a compare-and-swap and given back when the [`Permit`] drops:
//! nothing waits, nothing allocates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::LimitScope;

/// Slots of one scope (the instance, or one account).
#[derive(Debug)]
struct Slots {
    in_flight: AtomicUsize,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot if one is free; never waits.
    fn try_take(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limits of one instance, shared by every actix worker.
#[derive(Debug)]
pub struct CallbackLimits {
    global: Arc<Slots>,
    per_account: HashMap<String, Arc<Slots>>,
}

/// One callback's slots; they are given back when it drops (however the handler ends).
#[derive(Debug)]
pub struct Permit {
    global: Arc<Slots>,
    account: Option<Arc<Slots>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(account) = &self.account {
            account.give_back();
        }
        self.global.give_back();
    }
}

impl CallbackLimits {
    /// `accounts` are the configured account ids; each gets its own `per_account` slots.
    pub fn new<'a>(
        max_in_flight: usize,
        per_account: usize,
        accounts: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            global: Slots::new(max_in_flight),
            per_account: accounts
                .into_iter()
                .map(|id| (id.to_owned(), Slots::new(per_account)))
                .collect(),
        }
    }

    /// Takes a slot of the account and one of the instance, or neither. An account id that is
    /// not configured (it comes from the URL and will be answered 404) takes only an instance
    /// slot: a flood of unknown ids is bounded by the instance limit and cannot grow the map.
    pub fn try_acquire(&self, account: &str) -> Result<Permit, LimitScope> {
        let account = self.per_account.get(account).cloned();
        if let Some(slots) = &account {
            if !slots.try_take() {
                return Err(LimitScope::Account);
            }
        }
        if !self.global.try_take() {
            if let Some(slots) = &account {
                slots.give_back();
            }
            return Err(LimitScope::Instance);
        }
        Ok(Permit {
            global: self.global.clone(),
            account,
        })
    }

    /// Callbacks in flight now, in the whole instance.
    pub fn in_flight(&self) -> usize {
        self.global.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_at_its_limit_is_refused_while_the_others_still_get_slots() {
        let limits = CallbackLimits::new(10, 2, ["a", "b"]);
        let a1 = limits.try_acquire("a").unwrap();
        let _a2 = limits.try_acquire("a").unwrap();
        assert_eq!(limits.try_acquire("a").unwrap_err(), LimitScope::Account);
        let _b1 = limits.try_acquire("b").unwrap();
        assert_eq!(limits.in_flight(), 3, "the refused one took no slot");
        drop(a1);
        let _a3 = limits
            .try_acquire("a")
            .expect("a dropped permit frees its slot");
    }

    #[test]
    fn the_instance_limit_refuses_every_account_and_gives_the_account_slot_back() {
        let limits = CallbackLimits::new(3, 2, ["a", "b", "c"]);
        let _held = [
            limits.try_acquire("a").unwrap(),
            limits.try_acquire("a").unwrap(),
            limits.try_acquire("b").unwrap(),
        ];
        assert_eq!(limits.try_acquire("c").unwrap_err(), LimitScope::Instance);
        assert_eq!(
            limits.try_acquire("unknown").unwrap_err(),
            LimitScope::Instance,
            "unknown ids count against the instance"
        );
        // c's account slot was given back when the instance refused it: after one instance slot
        // frees, c can take two more.
        drop(_held);
        let _c = [
            limits.try_acquire("c").unwrap(),
            limits.try_acquire("c").unwrap(),
        ];
        assert_eq!(limits.try_acquire("c").unwrap_err(), LimitScope::Account);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limits() {
        let limits = Arc::new(CallbackLimits::new(8, 5, ["a", "b"]));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (limits, peak) = (limits.clone(), peak.clone());
                std::thread::spawn(move || {
                    let account = if t % 2 == 0 { "a" } else { "b" };
                    for _ in 0..10_000 {
                        if let Ok(permit) = limits.try_acquire(account) {
                            peak.fetch_max(limits.in_flight(), Ordering::Relaxed);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 8);
        assert_eq!(limits.in_flight(), 0, "every slot was given back");
    }
}
