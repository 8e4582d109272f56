//! Black-box integration tests: one test binary (so only one executable is linked), real
//! servers on random loopback ports, a real `redis-server`, a real tonic `EventSink`.

mod abuse;
mod admin;
mod authz;
mod broadcasts;
mod callbacks;
mod cli;
mod crash;
mod crm_example;
mod docs;
mod enrich;
mod envelope;
mod faults;
mod hardening;
mod limits;
mod links;
mod media;
mod menus;
mod messages;
mod ops;
mod proto_json;
mod qrcodes;
mod replies;
mod routing;
mod sandbox;
mod store;
mod support;
mod tls;
