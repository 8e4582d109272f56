//! tonic adapters: the `Gateway` service the CRM calls ([`gateway`]), with the protobuf ↔ use
//! case conversions in one place ([`convert`]). The `EventSink` client lives with the forwarder
//! (`crate::outbox::sink`).

mod convert;
pub mod gateway;
mod media;
mod templates;
