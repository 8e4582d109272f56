//! Use cases shared by the admin HTTP API and the gRPC `Gateway` service: each is written once
//! here, takes validated inputs (the account as an [`AccountId`] parsed at the door, the caller
//! as a domain [`Actor`](crate::domain::Actor), bodies parsed or validated before any call to
//! WeChat) and answers with a [`ServiceError`] that both transports map in `crate::error`.

pub mod attribution;
pub mod autoreply;
pub mod broadcast;
pub mod callbacks;
pub mod corp_tags;
pub mod enrich;
pub mod group_chats;
pub mod h5;
pub mod interactions;
pub mod links;
pub mod media;
pub mod menu;
pub mod message;
pub mod plain_signatures;
pub mod qrcode;
pub mod sweep;
pub mod sync;
pub mod tags;
pub mod templates;

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::access::{Access, Caller};
use crate::domain::{AccountId, Actor};
use crate::error::ServiceError;
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
    /// Each account's auto-reply rules and default welcome, for the callback path.
    pub replies: autoreply::Replies,
    /// Tracked links: the public base URL, the allowed target domains, WeChat's OAuth base.
    pub links: crate::config::LinksConfig,
    /// The broadcast runner's settings and wake-up call.
    pub broadcasts: broadcast::Broadcasts,
    /// The audience sync runner's settings and wake-up call.
    pub syncs: sync::Syncs,
    /// The template job runner's settings and wake-up call.
    pub templates: templates::Templates,
}

impl Services {
    pub fn account(&self, id: &AccountId) -> Result<&Arc<Account>, ServiceError> {
        self.accounts
            .get(id.as_str())
            .ok_or_else(|| ServiceError::unknown_account(id.as_str()))
    }
}

/// The account id a caller named (an admin path segment, a gRPC `account_id` field), parsed at
/// the door. An id that does not parse names no configured account, so it is answered like an
/// unknown one (404, `NOT_FOUND`), not as a malformed request.
pub fn account_id(raw: &str) -> Result<AccountId, ServiceError> {
    AccountId::parse(raw).map_err(|_| ServiceError::unknown_account(raw))
}

/// The actor to record for `caller` doing `what` (a route or an rpc) with `access` on `account`
/// (`None`: a route over every account), or a 403 / `PERMISSION_DENIED` when the token's scope
/// does not allow it. Both doors call this after authenticating; the refusal is logged with the
/// token's name (never the token) and the account as the caller wrote it, escaped.
pub fn authorize(
    caller: &Caller,
    account: Option<&str>,
    access: Access,
    what: &str,
) -> Result<Actor, ServiceError> {
    caller.authorize(account, access).map_err(|denial| {
        tracing::warn!(
            actor = %caller.actor,
            account = ?account,
            access = ?access,
            what = ?what,
            reason = denial.as_str(),
            "request refused: outside the token's scope"
        );
        ServiceError::Forbidden(denial.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsable_account_id_is_answered_as_an_unknown_account() {
        for raw in ["no/such", "", "a.b"] {
            let e = account_id(raw).unwrap_err();
            assert!(matches!(e, ServiceError::NotFound(_)));
            assert_eq!(e.to_string(), format!("unknown account {raw:?}"));
        }
        assert_eq!(account_id("acme-mp").unwrap().as_str(), "acme-mp");
    }
}
