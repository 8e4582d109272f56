//! JS-SDK tickets (`jsapi_ticket`): what a page's `wx.config` signature is made from. An Official
//! Account has one (`ticket/getticket?type=jsapi`); a WeCom corp has one for `wx.config`
//! (`get_jsapi_ticket`) and each application one for `wx.agentConfig`
//! (`ticket/get?type=agent_config`). WeChat limits how often a ticket may be fetched, so only the
//! token authority's ticket cache ([`crate::wechat::tokens::tickets`]) asks for them.

use serde::Deserialize;

use crate::domain::{Platform, Secret};
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// A ticket as WeChat issued it.
#[derive(Debug, Clone, Deserialize)]
pub struct Ticket {
    pub ticket: Secret,
    /// Seconds from now (7200 as WeChat documents it).
    pub expires_in: u64,
}

/// Which ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    /// The `wx.config` ticket: the Official Account's, or the WeCom corp's.
    Jsapi,
    /// WeCom only: the application's `wx.agentConfig` ticket.
    Agent,
}

impl TicketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsapi => "jsapi",
            Self::Agent => "agent",
        }
    }
}

/// Fetches a fresh ticket of `kind` with the account's access token (a rejected token is
/// replaced and the call made again, like every call of the authority).
pub async fn fetch(
    tokens: &TokenAuthority,
    account: &Account,
    kind: TicketKind,
) -> Result<Ticket, TokenError> {
    match (account.platform, kind) {
        // https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/JS-SDK.html (附录1)
        (Platform::Mp, _) => {
            tokens
                .get(
                    account,
                    "ticket/getticket",
                    "/cgi-bin/ticket/getticket",
                    &[("type", "jsapi")],
                )
                .await
        }
        // https://developer.work.weixin.qq.com/document/path/90506
        (Platform::Work, TicketKind::Jsapi) => {
            tokens
                .get(
                    account,
                    "get_jsapi_ticket",
                    "/cgi-bin/get_jsapi_ticket",
                    &[],
                )
                .await
        }
        (Platform::Work, TicketKind::Agent) => {
            tokens
                .get(
                    account,
                    "ticket/get",
                    "/cgi-bin/ticket/get",
                    &[("type", "agent_config")],
                )
                .await
        }
    }
}
