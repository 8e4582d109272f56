//! A fake CRM: a real tonic `EventSink` server on a random loopback port that records what it
//! accepts, and can be told to be down (answers UNAVAILABLE) or to reject the events of given users.
//! It may speak TLS (with a certificate from [`super::pki`]), demand a client certificate, and
//! demand a bearer token as a real CRM would.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::{Certificate, ServerTlsConfig};
use tonic::{Request, Response, Status};
use wechat_gateway::pb::event_sink_server::{EventSink, EventSinkServer};
use wechat_gateway::pb::{DeliverRequest, DeliverResponse, Event, Rejection};

use super::pki::Leaf;

/// How a fake CRM is reached and what it demands.
#[derive(Clone, Default)]
pub struct CrmOptions {
    /// Serve TLS with this certificate (the endpoint is then `https://`).
    pub tls: Option<Leaf>,
    /// With `tls`: require a client certificate signed by this CA (PEM).
    pub client_ca_pem: Option<String>,
    /// Answer UNAUTHENTICATED unless `authorization: Bearer <token>` is presented.
    pub token: Option<String>,
}

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Event>>,
    /// When each event id was first accepted.
    first_accepted: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    down: AtomicBool,
    reject: Mutex<HashSet<String>>,
    /// Refuse a whole request that holds a rejected user's event with INVALID_ARGUMENT,
    /// instead of listing it in `rejected`.
    invalid_status: AtomicBool,
    calls: AtomicU64,
    /// Milliseconds every Deliver waits before it answers (a slow CRM).
    delay_ms: AtomicU64,
    /// The bearer token demanded, if any.
    token: Option<String>,
    /// Deliver calls refused for a missing or wrong token.
    unauthenticated: AtomicU64,
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl EventSink for Service {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(token) = &self.0.token {
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if presented != Some(format!("Bearer {token}").as_str()) {
                self.0.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return Err(Status::unauthenticated(
                    "fake CRM: no or wrong bearer token",
                ));
            }
        }
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
        let mut first = self.0.first_accepted.lock().unwrap();
        let now = std::time::Instant::now();
        for event in request.events {
            if reject.contains(&event.open_id) {
                rejected.push(Rejection {
                    event_id: event.id,
                    reason: "fake CRM refuses this event".into(),
                });
            } else {
                first.entry(event.id.clone()).or_insert(now);
                accepted.push(event);
            }
        }
        Ok(Response::new(DeliverResponse { rejected }))
    }
}

pub struct FakeCrm {
    addr: SocketAddr,
    tls: bool,
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
        Self::start_with(addr, CrmOptions::default()).await
    }

    /// Listens on `addr` (port 0: any) as `options` say.
    pub async fn start_with(addr: SocketAddr, options: CrmOptions) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            token: options.token,
            ..Shared::default()
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let service = EventSinkServer::new(Service(shared.clone()));
        let mut server = tonic::transport::Server::builder();
        if let Some(leaf) = &options.tls {
            let mut tls = ServerTlsConfig::new().identity(leaf.identity());
            if let Some(ca) = &options.client_ca_pem {
                tls = tls.client_ca_root(Certificate::from_pem(ca));
            }
            server = server.tls_config(tls).unwrap();
        }
        tokio::spawn(server.add_service(service).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            tls: options.tls.is_some(),
            shared,
            _stop: stop,
        }
    }

    /// `https://127.0.0.1:port` when it speaks TLS, `http://...` otherwise.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Deliver calls refused for a missing or wrong bearer token.
    pub fn unauthenticated(&self) -> u64 {
        self.shared.unauthenticated.load(Ordering::Relaxed)
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

    /// When each event id accepted so far was first accepted.
    pub fn first_accepted(&self) -> std::collections::HashMap<String, std::time::Instant> {
        self.shared.first_accepted.lock().unwrap().clone()
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
