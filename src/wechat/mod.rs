//! WeChat's wire protocol: signatures and AES ([`crypto`]), the callback XML ([`xml`]) and the
//! mapping of every message and event name to a [`crate::pb::Event`] ([`normalize`]).
//! Nothing here knows about actix or tonic.

pub mod crypto;
pub mod normalize;
pub mod xml;
