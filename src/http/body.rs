//! Request bodies against slow clients (issue 18): a body must be complete within
//! `http.body_timeout_ms` of its request's headers, or the request is answered 408 and its
//! connection closed.
//!
//! [`BodyDeadline`] wraps every request's payload in a stream that fails with
//! [`PayloadError::Io`] of kind `TimedOut` once the deadline passes while the body is still
//! incomplete; the extractors that read bodies (the callback handlers, the admin JSON bodies)
//! turn that error into their 408 ([`is_timeout`]). Headers have their own deadline, actix's
//! `client_request_timeout`, set in `crate::startup`.
//!
//! Why the middleware also keeps the unread payload: actix closes a connection whose request
//! body was not read to its end, except a chunked body whose reader is gone, which it drains,
//! with no deadline at all. A client trickling a chunked body would keep its connection (and
//! file descriptor) after the 408. So when a body was not read to its end, the payload's reader
//! travels inside the response body: actix sees it alive when the answer is sent, marks the
//! answer `Connection: close` and closes the connection after it.

use std::cell::{Cell, RefCell};
use std::future::{ready, Future as _, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::PayloadError;
use actix_web::http::ConnectionType;
use actix_web::web::Bytes;
use futures::future::LocalBoxFuture;
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// True when reading a body failed because [`BodyDeadline`] cut it off.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// The middleware; `timeout` is `http.body_timeout_ms`.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline {
    pub timeout: Duration,
}

impl<S, B> Transform<S, ServiceRequest> for BodyDeadline
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + Unpin + 'static,
{
    type Response = ServiceResponse<Closing<B>>;
    type Error = actix_web::Error;
    type Transform = BodyDeadlineService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(BodyDeadlineService {
            service: Rc::new(service),
            timeout: self.timeout,
        }))
    }
}

pub struct BodyDeadlineService<S> {
    service: Rc<S>,
    timeout: Duration,
}

/// How far a body got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    Reading,
    Complete,
    TimedOut,
}

/// The payload and its progress, shared by the deadline stream (which the extractor reads and
/// drops) and the middleware (which keeps it when the body was not read to its end).
struct Shared {
    payload: RefCell<Payload>,
    progress: Cell<Progress>,
}

impl<S, B> Service<ServiceRequest> for BodyDeadlineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + Unpin + 'static,
{
    type Response = ServiceResponse<Closing<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let shared = match std::mem::replace(req.parts_mut().1, Payload::None) {
            // No body (a GET): nothing to bound.
            Payload::None => None,
            payload => {
                let shared = Rc::new(Shared {
                    payload: RefCell::new(payload),
                    progress: Cell::new(Progress::Reading),
                });
                req.set_payload(Payload::Stream {
                    payload: Box::pin(DeadlineStream {
                        shared: shared.clone(),
                        deadline: Instant::now() + self.timeout,
                        sleep: None,
                    }),
                });
                Some(shared)
            }
        };
        Box::pin(async move {
            let mut res = service.call(req).await?;
            let unread = shared.filter(|s| s.progress.get() != Progress::Complete);
            if unread.is_some() {
                res.response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            Ok(res.map_body(|_, body| Closing {
                body,
                _payload: unread,
            }))
        })
    }
}

/// The payload as the extractors see it: the request's own, cut off at the deadline.
struct DeadlineStream {
    shared: Rc<Shared>,
    deadline: Instant,
    /// Made on the first wait only: a body that arrives with its headers (a WeChat callback, as
    /// a rule) never starts a timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Stream for DeadlineStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.shared.progress.get() {
            Progress::Complete | Progress::TimedOut => return Poll::Ready(None),
            Progress::Reading => {}
        }
        let polled = Pin::new(&mut *self.shared.payload.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(None) => {
                self.shared.progress.set(Progress::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        self.shared.progress.set(Progress::TimedOut);
                        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body was not complete within http.body_timeout_ms",
                        )))))
                    }
                }
            }
        }
    }
}

/// A response body that may hold its request's unread payload until the answer is sent (see
/// the module's doc): the body itself is passed through unchanged.
pub struct Closing<B> {
    body: B,
    _payload: Option<Rc<Shared>>,
}

impl<B: MessageBody + Unpin> MessageBody for Closing<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
