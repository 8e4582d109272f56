//! WeChat's wire protocol: signatures and AES ([`crypto`]), the callback XML ([`xml`]) and the
//! mapping of every message and event name to a [`crate::pb::Event`] ([`normalize`]); the
//! HTTP API client ([`api`]) and the access tokens it needs ([`tokens`]).
//! Nothing here knows about actix or tonic.

pub mod api;
pub mod crypto;
pub mod normalize;
pub mod tokens;
pub mod xml;
