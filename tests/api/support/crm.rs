//! A fake CRM: a real tonic `EventSink` server on a random loopback port that records what it
//! accepts, and can be told to be down (answers UNAVAILABLE) or to reject the events of given users.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use wechat_gateway::pb::event_sink_server::{EventSink, EventSinkServer};
use wechat_gateway::pb::{DeliverRequest, DeliverResponse, Event, Rejection};

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Event>>,
    down: AtomicBool,
    reject: Mutex<HashSet<String>>,
    /// Refuse a whole request that holds a rejected user's event with INVALID_ARGUMENT,
    /// instead of listing it in `rejected`.
    invalid_status: AtomicBool,
    calls: AtomicU64,
    /// Milliseconds every Deliver waits before it answers (a slow CRM).
    delay_ms: AtomicU64,
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl EventSink for Service {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let delay = self.0.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake CRM is down"));
        }
        let reject = self.0.reject.lock().unwrap().clone();
        let request = request.into_inner();
        if self.0.invalid_status.load(Ordering::SeqCst)
            && request.events.iter().any(|e| reject.contains(&e.open_id))
        {
            return Err(Status::invalid_argument("fake CRM refuses this request"));
        }
        let mut rejected = Vec::new();
        let mut accepted = self.0.accepted.lock().unwrap();
        for event in request.events {
            if reject.contains(&event.open_id) {
                rejected.push(Rejection {
                    event_id: event.id,
                    reason: "fake CRM refuses this event".into(),
                });
            } else {
                accepted.push(event);
            }
        }
        Ok(Response::new(DeliverResponse { rejected }))
    }
}

pub struct FakeCrm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl FakeCrm {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr`: a port a gateway was already configured with, so that the CRM is
    /// unreachable (connection refused) until it starts.
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = EventSinkServer::new(Service(shared.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            addr,
            shared,
            _stop: stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While down, every Deliver answers UNAVAILABLE (the gateway must keep and retry).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Makes every Deliver wait this long before it answers (zero: answer at once). A wait
    /// past the gateway's `crm.timeout_ms` is a CRM that answers too late: the gateway gives up
    /// on the call (tonic then drops it here, unrecorded) and retries.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Rejects the events of this openid as invalid from now on (or accepts them again).
    pub fn reject_user(&self, open_id: &str, reject: bool) {
        let mut set = self.shared.reject.lock().unwrap();
        if reject {
            set.insert(open_id.to_owned());
        } else {
            set.remove(open_id);
        }
    }

    /// Refuse requests holding a rejected user's event as a whole, with INVALID_ARGUMENT.
    pub fn refuse_whole_requests(&self, on: bool) {
        self.shared.invalid_status.store(on, Ordering::SeqCst);
    }

    /// Number of Deliver calls received (accepted or not).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Every event accepted so far, in arrival order (duplicates included).
    pub fn accepted(&self) -> Vec<Event> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Polls until `done(accepted)` holds; panics with what arrived after `timeout`.
    pub async fn wait_for(&self, done: impl Fn(&[Event]) -> bool, timeout: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.accepted();
            if done(&events) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the fake CRM did not get the expected events within {timeout:?}; got {} event(s): {:?}",
                    events.len(),
                    events.iter().map(|e| (&e.id, &e.kind)).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
