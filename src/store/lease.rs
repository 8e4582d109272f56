//! The names of leases. A lease lets one owner at a time (an instance, by a name unique to it)
//! do something every instance could do: refresh a token, change a menu, run a broadcast job.
//! Each backend implements the one [`super::Leases`] API over these keys; where a key lives in
//! the backend (and which Redis hash slot) is the backend's business.

use std::fmt;

/// What a lease is for. Its [`fmt::Display`] (`token-refresh/<key>`, `menu/<account>`,
/// `broadcast/<account>/<job>`) names it in logs and in the embedded backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseKey {
    /// Refreshing the WeChat access token cached under a token key (see
    /// [`crate::wechat::tokens`]).
    TokenRefresh { token_key: String },
    /// Changing an account's menu.
    Menu { account: String },
    /// Running one broadcast job of an account.
    BroadcastJob { account: String, job: String },
    /// Running one audience sync of an account.
    Sync { account: String, sync: String },
    /// Running one template or subscription-notice job of an account.
    TemplateJob { account: String, job: String },
}

impl LeaseKey {
    pub fn token_refresh(token_key: &str) -> Self {
        Self::TokenRefresh {
            token_key: token_key.to_owned(),
        }
    }

    pub fn menu(account: &str) -> Self {
        Self::Menu {
            account: account.to_owned(),
        }
    }

    pub fn broadcast_job(account: &str, job: &str) -> Self {
        Self::BroadcastJob {
            account: account.to_owned(),
            job: job.to_owned(),
        }
    }

    pub fn template_job(account: &str, job: &str) -> Self {
        Self::TemplateJob {
            account: account.to_owned(),
            job: job.to_owned(),
        }
    }
}

impl LeaseKey {
    pub fn sync(account: &str, sync: &str) -> Self {
        Self::Sync {
            account: account.to_owned(),
            sync: sync.to_owned(),
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenRefresh { token_key } => write!(f, "token-refresh/{token_key}"),
            Self::Menu { account } => write!(f, "menu/{account}"),
            Self::BroadcastJob { account, job } => write!(f, "broadcast/{account}/{job}"),
            Self::Sync { account, sync } => write!(f, "sync/{account}/{sync}"),
            Self::TemplateJob { account, job } => write!(f, "template/{account}/{job}"),
        }
    }
}
