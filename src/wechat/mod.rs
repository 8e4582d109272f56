//! WeChat's wire protocol: the callback [`envelope`] (open a request: its [`query`], signature,
//! clock and AES; seal a passive reply), with its signatures and AES ([`crypto`]) and the
//! callback XML, read and written ([`xml`]); the mapping of every message and event name to a
//! [`crate::pb::Event`] ([`normalize`]); the HTTP API client ([`api`]) and the access tokens it
//! needs ([`tokens`]); the runtime [`account`] they all read. Nothing here knows about actix or tonic.

pub mod account;
pub mod api;
pub mod crypto;
pub mod envelope;
pub mod jssdk;
pub mod normalize;
pub mod query;
pub mod tokens;
pub mod xml;
