//! Identity on H5 pages (issue 14): what a CRM's web page inside WeChat needs from the gateway.
//!
//! - [`jsapi_signature`]: the `wx.config` signature of a page URL, from the account's
//!   `jsapi_ticket` (cached and refreshed like the access token, [`crate::wechat::tokens::tickets`]);
//!   on WeCom also the `wx.agentConfig` signature from the application's agent ticket.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::link::new_nonce;
use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::wechat::api::ticket::TicketKind;
use crate::wechat::jssdk;

use super::Services;

/// Longest page URL signed (a page URL longer than this is a mistake).
const MAX_URL_CHARS: usize = 2048;

/// A `wx.config` (and, on WeCom, `wx.agentConfig`) signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsapiSignature {
    /// The Official Account's appid, or the WeCom corp id.
    pub app_id: String,
    pub timestamp: i64,
    pub nonce_str: String,
    pub signature: String,
    /// WeCom: the `wx.agentConfig` signature (same timestamp and nonce), and its `agentid`.
    pub agent: Option<(String, i64)>,
}

/// Checks a page URL: an absolute http(s) URL with a host, no whitespace or control characters.
/// The URL is signed as the caller wrote it (the page signs `location.href.split('#')[0]`), so it
/// is only parsed here, never normalized.
fn check_url(url: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| Err(ServiceError::Validation(format!("url: {why}")));
    if url.is_empty() {
        return bad("required (the page's full URL)");
    }
    if url.chars().count() > MAX_URL_CHARS {
        return bad(&format!("at most {MAX_URL_CHARS} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace or control characters");
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(u) => bad(&format!(
            "must be an http:// or https:// URL with a host, got scheme {:?}",
            u.scheme()
        )),
        Err(e) => bad(&format!("not a URL: {e}")),
    }
}

/// The JS-SDK signature of the page at `url` (its fragment is not signed).
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn jsapi_signature(
    svc: &Services,
    account_id: &AccountId,
    url: &str,
) -> Result<JsapiSignature, ServiceError> {
    let account = svc.account(account_id)?.clone();
    check_url(url)?;
    let ticket = svc.tokens.ticket(&account, TicketKind::Jsapi).await?;
    let agent_ticket = match account.platform {
        Platform::Mp => None,
        Platform::Work => Some(svc.tokens.ticket(&account, TicketKind::Agent).await?),
    };
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let nonce_str = new_nonce();
    let signature = jssdk::signature(ticket.expose(), &nonce_str, timestamp, url);
    let agent = agent_ticket.map(|t| {
        (
            jssdk::signature(t.expose(), &nonce_str, timestamp, url),
            account.agent_id,
        )
    });
    metrics::counter!("wgw_jsapi_signatures_total", "account" => account.id.to_string())
        .increment(1);
    Ok(JsapiSignature {
        app_id: account.receiver_id.clone(),
        timestamp,
        nonce_str,
        signature,
        agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls_are_checked_not_normalized() {
        for ok in [
            "https://shop.acme.com/p?x=1#frag",
            "http://mp.weixin.qq.com?params=value",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "required"),
            ("javascript:alert(1)", "http:// or https://"),
            ("/relative", "not a URL"),
            ("https://a.com/ x", "whitespace"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
