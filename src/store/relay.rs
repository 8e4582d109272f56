//! Answers the embedded store's writes on the thread that asked, one wake per commit.
//!
//! The store's writer thread commits the writes of many callbacks at once (group commit), then
//! answers each. A task woken from another thread costs its runtime one `eventfd` write and
//! wake-up: with ~40 callbacks a commit, that was ~1 `write` syscall per callback (`strace -f`
//! during a load), most of them on the actix worker threads' behalf. A relay is a task on a
//! worker's own runtime: the writer hands it all of that worker's answers of a commit in one
//! message (one wake), and the relay completes them there, where waking a task is a push on a
//! local queue.
//!
//! A thread has a relay only if it called [`install`] from inside a current-thread runtime that
//! lives as long as the thread (actix's worker threads). Elsewhere (tests, the gRPC runtime)
//! answers go straight to the caller, as before.

use std::cell::RefCell;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// One write's answer and where it goes.
pub(crate) type Completion = (
    oneshot::Sender<Result<bool, StoreError>>,
    Result<bool, StoreError>,
);

/// A handle on one thread's relay task.
#[derive(Clone, Debug)]
pub(crate) struct Relay(mpsc::UnboundedSender<Vec<Completion>>);

thread_local! {
    static RELAY: RefCell<Option<Relay>> = const { RefCell::new(None) };
}

/// Starts this thread's relay on the current runtime. Call it on a thread that runs one
/// current-thread runtime for its whole life; anywhere else it does nothing.
pub fn install() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    RELAY.with(|relay| {
        let mut relay = relay.borrow_mut();
        if relay.as_ref().is_some_and(|r| !r.0.is_closed()) {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Completion>>();
        runtime.spawn(async move {
            while let Some(batch) = rx.recv().await {
                complete(batch);
            }
        });
        *relay = Some(Relay(tx));
    });
}

/// This thread's relay, if it has a live one.
pub(crate) fn current() -> Option<Relay> {
    RELAY.with(|relay| relay.borrow().clone().filter(|r| !r.0.is_closed()))
}

impl Relay {
    pub(crate) fn same(&self, other: &Relay) -> bool {
        self.0.same_channel(&other.0)
    }

    /// Hands a commit's answers to the relay; if its runtime is gone, answers them here.
    pub(crate) fn deliver(&self, batch: Vec<Completion>) {
        if let Err(mpsc::error::SendError(batch)) = self.0.send(batch) {
            complete(batch);
        }
    }
}

/// A caller that went away (a cancelled request) needs no answer.
pub(crate) fn complete(batch: Vec<Completion>) {
    for (reply, outcome) in batch {
        let _ = reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_answers_on_its_own_runtime_and_falls_back_once_that_is_gone() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let relay = rt.block_on(async {
            install();
            current().expect("a current-thread runtime gets a relay")
        });
        let (tx, rx) = oneshot::channel();
        let answered = std::thread::spawn({
            let relay = relay.clone();
            move || relay.deliver(vec![(tx, Ok(true))])
        });
        answered.join().unwrap();
        assert!(rt.block_on(rx).unwrap().unwrap());

        // The runtime is dropped with its relay task: answers are completed by the deliverer.
        drop(rt);
        let (tx, mut rx) = oneshot::channel();
        relay.deliver(vec![(tx, Ok(false))]);
        assert!(!rx.try_recv().unwrap().unwrap());
        assert!(current().is_none(), "a closed relay is not handed out");
    }

    #[test]
    fn a_multi_thread_runtime_gets_no_relay() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        rt.block_on(async { install() });
        assert!(current().is_none());
    }
}
