//! tonic adapters: the `Gateway` service the CRM calls ([`gateway`]). The `EventSink` client
//! lives with the forwarder (`crate::outbox::sink`).

mod convert;
pub mod gateway;
mod replies;
