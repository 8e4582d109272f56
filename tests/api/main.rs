//! Black-box integration tests: one test binary (so only one executable is linked), real
//! servers on random loopback ports, a real `redis-server`, a real tonic `EventSink`.

mod abuse;
mod admin;
mod callbacks;
mod cli;
mod crash;
mod faults;
mod limits;
mod menus;
mod ops;
mod qrcodes;
mod store;
mod support;
