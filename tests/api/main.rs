//! Black-box integration tests: one test binary (so only one executable is linked), real
//! servers on random loopback ports, a real `redis-server`, a real tonic `EventSink`.

mod abuse;
mod admin;
mod authz;
mod broadcasts;
mod callbacks;
mod cli;
mod cluster_outage;
mod corp_tags;
mod crash;
mod crm_example;
mod docs;
mod enrich;
mod envelope;
mod faults;
mod group_chats;
mod group_messages;
mod h5;
mod hardening;
mod limits;
mod links;
mod media;
mod menus;
mod messages;
mod mp_tags;
mod ops;
mod proto_json;
mod qrcodes;
mod replies;
mod routing;
mod sandbox;
mod store;
mod support;
mod syncs;
mod template_sends;
mod tls;
