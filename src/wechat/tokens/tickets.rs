//! JS-SDK tickets, cached and refreshed exactly like the access tokens: one ticket per
//! credential and kind in the store's token cache (key `ticket-<kind>-<token key>`), used while
//! more than the refresh window remains, fetched by the one caller that holds the key's refresh
//! lease across every instance ([`TokenAuthority::single_flight`]). WeChat limits ticket fetches
//! (JS-SDK doc: "the number of API calls to obtain jsapi_ticket is very limited ... developers
//! must cache jsapi_ticket globally"), so a crowd of signature requests costs one fetch.

use crate::domain::Secret;
use crate::store::CachedToken;
use crate::wechat::account::Account;
use crate::wechat::api::ticket::{self, TicketKind};
use crate::wechat::api::ApiError;

use super::{fresh, token_key, unix_ms, TokenAuthority, TokenError};

/// The store key of an account's ticket of `kind`.
pub fn ticket_key(account: &Account, kind: TicketKind) -> String {
    format!("ticket-{}-{}", kind.as_str(), token_key(account))
}

impl TokenAuthority {
    /// The account's current ticket of `kind` (WeCom: [`TicketKind::Agent`] is the
    /// application's; an Official Account has only [`TicketKind::Jsapi`]).
    pub async fn ticket(&self, account: &Account, kind: TicketKind) -> Result<Secret, TokenError> {
        // The access token first, outside the ticket's lease, so that the lease covers only the
        // ticket call.
        self.token(account).await?;
        let key = ticket_key(account, kind);
        self.single_flight(account, &key, "", || {
            self.refresh_ticket(account, &key, kind)
        })
        .await
    }

    /// With the ticket's lease held: fetches a ticket unless one appeared meanwhile.
    async fn refresh_ticket(
        &self,
        account: &Account,
        key: &str,
        kind: TicketKind,
    ) -> Result<Secret, TokenError> {
        let cached = self.store.cached_token(key).await?;
        if let Some(t) = fresh(cached.as_ref(), "", self.policy.refresh_ahead) {
            return Ok(t);
        }
        let issued = ticket::fetch(self, account, kind).await?;
        if issued.ticket.is_empty() {
            return Err(ApiError::BadResponse("an empty ticket".into()).into());
        }
        let next = CachedToken {
            token: issued.ticket.clone(),
            expires_at_ms: unix_ms() + issued.expires_in.saturating_mul(1000),
            ..CachedToken::default()
        };
        self.store.put_token(key, &next).await?;
        tracing::info!(account = %account.id, kind = kind.as_str(),
            expires_in = issued.expires_in, "JS-SDK ticket refreshed");
        Ok(issued.ticket)
    }
}
