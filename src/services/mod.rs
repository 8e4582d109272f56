//! Use cases shared by the admin HTTP API and the gRPC `Gateway` service: each is written once
//! here, takes validated inputs (or validates them before any call to WeChat) and answers with
//! an [`AdminError`] that both transports map in `crate::error`.

pub mod attribution;
pub mod autoreply;
pub mod broadcast;
pub mod callbacks;
pub mod enrich;
pub mod links;
pub mod menu;
pub mod message;
pub mod qrcode;
pub mod sweep;
pub mod tags;

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::AdminError;
use crate::store::Store;
use crate::wechat::account::Account;
use crate::wechat::tokens::TokenAuthority;

/// What the use cases need; one per process, shared by actix workers and the tonic server.
pub struct Services {
    pub accounts: HashMap<String, Arc<Account>>,
    pub store: Arc<dyn Store>,
    pub tokens: TokenAuthority,
    /// Serializes each account's menu changes.
    pub menu_locks: menu::MenuLocks,
    /// Each account's auto-reply rules and default welcome, for the callback path (issue 8).
    pub replies: autoreply::Replies,
    /// Tracked links: the public base URL, the allowed target domains, WeChat's OAuth base.
    pub links: crate::config::LinksConfig,
    /// The broadcast runner's settings and wake-up call.
    pub broadcasts: broadcast::Broadcasts,
}

impl Services {
    pub fn account(&self, id: &str) -> Result<&Arc<Account>, AdminError> {
        self.accounts
            .get(id)
            .ok_or_else(|| AdminError::NotFound(format!("unknown account {id:?}")))
    }
}
