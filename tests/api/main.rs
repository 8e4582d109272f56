//! Black-box integration tests: one test binary (so only one executable is linked), real
//! servers on random loopback ports, a real `redis-server`, a real tonic `EventSink`.

mod abuse;
mod admin;
mod broadcasts;
mod callbacks;
mod cli;
mod crash;
mod crm_example;
mod docs;
mod enrich;
mod faults;
mod limits;
mod links;
mod menus;
mod ops;
mod qrcodes;
mod replies;
mod routing;
mod sandbox;
mod store;
mod support;
