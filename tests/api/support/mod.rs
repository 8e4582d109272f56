//! Test helpers shared by every suite: a `redis-server` per test run, a fake CRM, the app.

pub mod app;
pub mod crm;
pub mod fake_wechat;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod python;
pub mod redis;
pub mod sandbox;
