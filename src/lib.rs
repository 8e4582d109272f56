//! wechat-gateway: owns the WeChat callback URL of Official Accounts and WeCom applications,
//! turns every callback into a normalized [`pb::Event`], stores it durably, and forwards it to
//! the CRM's `EventSink` at least once.
//!
//! Data flows one way:
//! `http::callbacks` → `wechat::{crypto, xml, normalize}` → `pb::Event` →
//! `store` (de-duplicate + outbox, atomically) → `outbox` (forwarder) → the CRM.
//!
//! - [`config`]: TOML + `WGW_` environment + `${NAME}` secrets, checked into domain types once.
//! - [`domain`]: validated identifiers and secrets; no I/O.
//! - [`wechat`]: WeChat's wire protocol (signatures, AES, XML, event names), its HTTP API
//!   client and the access-token authority; no actix, no tonic.
//! - [`store`]: the storage interface and its embedded (redb) and Redis backends.
//! - [`outbox`]: the forwarder and the sinks it delivers to (gRPC `EventSink`, or JSON lines).
//! - [`services`]: the use cases (QR codes, messages, menus, broadcast jobs and their runner,
//!   tags) that the admin API and gRPC share.
//! - [`http`]: actix-web adapters: callbacks, the admin API, health, metrics.
//! - [`grpc`]: tonic adapters: the `Gateway` service.
//! - [`backoff`]: the capped exponential backoff every retry loop uses.
//! - [`tls`]: the PEM files and tonic TLS settings of the CRM client and the Gateway server.
//! - [`startup`]: binds listeners, wires state, spawns workers, one shutdown path.
//! - [`simulate`]: the `simulate` command, a stand-in for the WeChat platform.
//! - [`sandbox`]: the `sandbox` command, the gateway with a fake WeChat API in the process.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod outbox;
pub mod pb;
pub mod sandbox;
pub mod services;
pub mod simulate;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wechat;
