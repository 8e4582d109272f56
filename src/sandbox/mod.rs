//! `wechat-gateway sandbox`: the gateway with a fake of the WeChat APIs it calls, in the same
//! process, so that every admin route and Gateway rpc works offline on the configured (example)
//! accounts. Nothing else changes: it is `serve` with `wechat.mp_api_base`, `work_api_base`
//! and `oauth_base` pointed at the fake, and, with the embedded store, a fresh store in a
//! temporary directory (removed on exit), so that sandbox data never mixes with real data and
//! every run starts from the same state.
//!
//! - [`model`]: WeChat's state and answers (tokens, QR codes, contact ways, menus, tags, mass
//!   sends, WeCom group messages, users, OAuth), deterministic and in memory.
//! - [`wecom_profile`]: WeCom corp tags, customer tags and customer groups (with demo data).
//! - [`sync`]: the audience lists of audience syncs (demo followers, WeCom customers).
//! - [`server`]: the fake as an HTTP server on a loopback port, which also posts the
//!   MASSSENDJOBFINISH callbacks a mass send owes the gateway.
//! - [`templates`]: template messages and subscription notices, and the TEMPLATESENDJOBFINISH
//!   a template message owes the gateway.
//!
//! docs/sandbox.md lists what the sandbox fakes and what it does not.

pub mod media;
pub mod messages;
pub mod model;
pub mod server;
pub mod sync;
pub mod templates;
pub mod wecom_profile;

use std::path::PathBuf;

use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, StoreBackend};
use crate::startup::Application;
use crate::wechat::api::install_tls_provider;

/// `broadcasts.check_after_seconds` in the sandbox, at most.
const SANDBOX_CHECK_AFTER: Duration = Duration::from_secs(2);

/// Points `cfg` at the fake at `base` (`http://127.0.0.1:<port>`).
pub fn point_at(cfg: &mut Config, base: &str) {
    cfg.wechat.mp_api_base = format!("{base}/mp");
    cfg.wechat.work_api_base = format!("{base}/work");
    cfg.wechat.oauth_base = format!("{base}/mp");
    cfg.links.oauth_base = cfg.wechat.oauth_base.clone();
}

/// Runs the gateway against the fake until it is stopped (SIGTERM, Ctrl-C).
pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    install_tls_provider();
    let fake = server::FakeServer::start(&cfg.accounts).context("cannot start the fake WeChat")?;
    let base = format!("http://{}", fake.addr());
    point_at(&mut cfg, &base);
    // The fake settles a send at once: look at a batch's result (WeCom's confirmations, which
    // no callback reports) after seconds, not the half hour real sends are given.
    cfg.broadcasts.check_after = cfg.broadcasts.check_after.min(SANDBOX_CHECK_AFTER);
    let temporary = match &mut cfg.store.backend {
        StoreBackend::Embedded { path } => {
            let dir = std::env::temp_dir().join(format!(
                "wechat-gateway-sandbox-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            *path = dir.clone();
            Some(dir)
        }
        StoreBackend::Redis { .. } => {
            tracing::warn!(
                "SANDBOX: store.backend is redis: the sandbox writes its jobs, tokens and events \
                 into that Redis; use a Redis of its own"
            );
            None
        }
    };
    let app = Application::build(cfg).await;
    let outcome = match app {
        Ok(app) => {
            fake.callbacks_to(app.http_addr());
            tracing::warn!(
                fake_wechat = %base,
                http = %app.http_addr(),
                grpc = %app.grpc_addr(),
                store = temporary.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
                "SANDBOX: this gateway talks to a FAKE WeChat in this process, not to WeChat. \
                 Nothing reaches real followers; nothing it shows came from WeChat"
            );
            app.run_until_stopped().await
        }
        Err(e) => Err(e),
    };
    fake.stop().await;
    if let Some(dir) = temporary {
        remove(dir);
    }
    outcome
}

fn remove(dir: PathBuf) {
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the sandbox's store");
    }
}
