//! Identity on H5 pages (issue 14): what a CRM's web page inside WeChat needs from the gateway.
//!
//! - [`jsapi_signature`]: the `wx.config` signature of a page URL, from the account's
//!   `jsapi_ticket` (cached and refreshed like the access token, [`crate::wechat::tokens::tickets`]);
//!   on WeCom also the `wx.agentConfig` signature from the application's agent ticket.
//! - [`start_oauth`] and [`finish_oauth`]: the public OAuth entry `GET /oauth/{account}`. The
//!   follower's browser goes to WeChat's web OAuth with a signed `state` (the tracked links'
//!   state, [`crate::domain::link::sign_state`], bound to the scope and the return URL, keyed
//!   with `links.identity_secret`); WeChat sends it back to `/oauth/{account}/callback`, where
//!   the state is checked and claimed for its one use (the links' store of used states), the
//!   code exchanged (`sns/oauth2/access_token`, then `sns/userinfo` for `snsapi_userinfo`), an
//!   `h5_identified` event recorded through the outbox, and the browser sent to the return URL
//!   with a signed identity token ([`crate::domain::identity`]) in `identity_token`.
//!   The return URL must be https on `links.allowed_domains` (the tracked links' rule), checked
//!   again on the way back: the entry is no open redirect. WeCom's web OAuth differs
//!   (`snsapi_privateinfo`, user tickets) and is not offered: a WeCom account answers 400.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::domain::identity::{self, IdentityClaims, ISSUER, TOKEN_TTL_SECONDS};
use crate::domain::link::{new_nonce, oauth_authorize_url, sign_state, verify_state, LinkTarget};
use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::pb::{self, event::Kind};
use crate::store::StoreError;
use crate::wechat::api::ticket::TicketKind;
use crate::wechat::api::ApiError;
use crate::wechat::jssdk;

use super::{links, Services};

/// How long the follower has to come back from WeChat's OAuth page.
pub const OAUTH_STATE_TTL: Duration = Duration::from_secs(600);
/// The query parameter of the return URL that carries the identity token.
pub const TOKEN_PARAM: &str = "identity_token";

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

/// Why the OAuth entry or its callback did not identify the follower: each is a page for the
/// follower's browser (`crate::http::oauth` maps them) and an `outcome` of
/// `wgw_identity_oauth_total`.
#[derive(Debug, Error)]
pub enum OAuthError {
    #[error("unknown account")]
    UnknownAccount,
    /// A WeCom application: its web OAuth is not offered.
    #[error("the OAuth entry is for Official Accounts; WeCom accounts are not supported")]
    NotSupported,
    /// `links.identity_secret` or `links.public_base_url` is not set.
    #[error("the OAuth entry is off: {0}")]
    Off(&'static str),
    /// A bad scope or return URL, or a callback without a code.
    #[error("{0}")]
    BadRequest(String),
    /// A state this gateway did not sign for this scope and return URL, or expired.
    #[error("this sign-in link is invalid or expired ({0}); please open the page again")]
    BadState(&'static str),
    /// The state was used already (a replayed or reloaded callback).
    #[error("this sign-in step was already used; please open the page again")]
    Replayed,
    /// WeChat refused the code (40029 invalid, 40163 used) or the profile.
    #[error("WeChat refused the sign-in: {0}")]
    WeChat(#[from] ApiError),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl OAuthError {
    /// The `outcome` label of `wgw_identity_oauth_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownAccount | Self::NotSupported | Self::BadRequest(_) => "bad_request",
            Self::Off(_) => "off",
            Self::BadState(_) => "bad_state",
            Self::Replayed => "replayed",
            Self::WeChat(_) => "wechat_error",
            Self::Store(_) => "unavailable",
        }
    }
}

/// The OAuth scopes of WeChat's web OAuth for Official Accounts.
fn parse_scope(raw: Option<&str>) -> Result<&'static str, OAuthError> {
    match raw {
        None | Some("snsapi_base") => Ok("snsapi_base"),
        Some("snsapi_userinfo") => Ok("snsapi_userinfo"),
        Some(other) => Err(OAuthError::BadRequest(format!(
            "scope: snsapi_base or snsapi_userinfo, got {:?}",
            crate::domain::Untrusted(other)
        ))),
    }
}

/// The account, the key and the public base URL, or why the entry is off for it.
fn entry<'s>(
    svc: &'s Services,
    account: &str,
) -> Result<(&'s crate::wechat::account::Account, &'s [u8], &'s str), OAuthError> {
    let acct = svc
        .accounts
        .get(account)
        .ok_or(OAuthError::UnknownAccount)?;
    if acct.platform == Platform::Work {
        return Err(OAuthError::NotSupported);
    }
    let key = svc
        .links
        .identity_secret
        .as_ref()
        .ok_or(OAuthError::Off("set links.identity_secret"))?;
    let base = svc
        .links
        .public_base_url
        .as_deref()
        .ok_or(OAuthError::Off("set links.public_base_url"))?;
    Ok((acct, key.expose().as_bytes(), base))
}

/// What the state is bound to besides the account: the entry, the scope and the return URL.
fn binding(scope: &str, return_url: &str) -> String {
    format!("h5-oauth\n{scope}\n{return_url}")
}

/// Where WeChat sends the browser back.
fn callback_url(base: &str, account: &str, scope: &str, return_url: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("scope", scope)
        .append_pair("return", return_url)
        .finish();
    format!("{base}/oauth/{account}/callback?{query}")
}

/// `GET /oauth/{account}?scope=..&return=..`: WeChat's authorize URL to redirect to.
pub fn start_oauth(
    svc: &Services,
    account: &str,
    scope: Option<&str>,
    return_url: Option<&str>,
) -> Result<String, OAuthError> {
    let (acct, key, base) = entry(svc, account)?;
    let scope = parse_scope(scope)?;
    let target = LinkTarget::parse(return_url.unwrap_or_default(), &svc.links.allowed_domains)
        .map_err(|e| OAuthError::BadRequest(e.replacen("target", "return", 1)))?;
    let nonce = new_nonce();
    let expires_at = unix_now() + OAUTH_STATE_TTL.as_secs();
    let state = sign_state(
        key,
        account,
        &binding(scope, target.as_str()),
        &nonce,
        expires_at,
    );
    let callback = callback_url(base, account, scope, target.as_str());
    Ok(oauth_authorize_url(
        &svc.links.oauth_base,
        &acct.receiver_id,
        &callback,
        scope,
        &state,
    ))
}

/// The callback's query, as WeChat sends the browser back.
#[derive(Debug, Default)]
pub struct Callback<'q> {
    pub scope: Option<&'q str>,
    pub return_url: Option<&'q str>,
    pub code: Option<&'q str>,
    pub state: Option<&'q str>,
}

/// `GET /oauth/{account}/callback`: the return URL with the identity token, once the follower
/// is identified and the `h5_identified` event recorded.
#[tracing::instrument(skip_all, fields(account = %crate::domain::Untrusted(account)))]
pub async fn finish_oauth(
    svc: &Services,
    account: &str,
    q: Callback<'_>,
) -> Result<String, OAuthError> {
    let (acct, key, _) = entry(svc, account)?;
    let scope = parse_scope(q.scope)?;
    let target = LinkTarget::parse(q.return_url.unwrap_or_default(), &svc.links.allowed_domains)
        .map_err(|_| OAuthError::BadState("return URL"))?;
    let nonce = verify_state(
        key,
        account,
        &binding(scope, target.as_str()),
        q.state.unwrap_or_default(),
        unix_now(),
    )
    .map_err(OAuthError::BadState)?;
    // One use per state, across instances, before any WeChat call.
    if !links::claim_oauth_state(&*svc.store, &acct.id, nonce, OAUTH_STATE_TTL).await? {
        return Err(OAuthError::Replayed);
    }
    let code = q.code.filter(|c| !c.is_empty()).ok_or_else(|| {
        OAuthError::BadRequest("WeChat sent no code (the follower did not agree)".into())
    })?;
    let api = svc.tokens.api();
    let who = api
        .oauth_identity(account, &acct.receiver_id, &acct.secret, code)
        .await?;
    if who.openid.is_empty() {
        return Err(ApiError::BadResponse("sns/oauth2/access_token gave no openid".into()).into());
    }
    let profile = if scope == "snsapi_userinfo" {
        Some(
            api.oauth_profile(account, &who.access_token, &who.openid)
                .await?,
        )
    } else {
        None
    };
    let union_id = profile
        .as_ref()
        .map(|p| p.unionid.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or(who.unionid);
    let host = reqwest::Url::parse(target.as_str())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = pb::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    };
    let p = profile.unwrap_or_default();
    let event = pb::Event {
        id: event_id(account, nonce),
        account_id: account.to_owned(),
        platform: pb::Platform::Mp as i32,
        occurred_at: Some(at),
        received_at: Some(at),
        open_id: who.openid.clone(),
        union_id: union_id.clone(),
        kind: Some(Kind::H5Identified(pb::H5Identified {
            scope: scope.to_owned(),
            return_host: host.clone(),
            nickname: p.nickname,
            avatar_url: p.headimgurl,
            sex: p.sex,
            province: p.province,
            city: p.city,
            country: p.country,
            privilege: p.privilege,
        })),
        ..Default::default()
    };
    svc.store.record(&event).await?;
    let claims = IdentityClaims {
        iss: ISSUER,
        sub: who.openid,
        union_id,
        account: account.to_owned(),
        scope: scope.to_owned(),
        aud: host,
        iat: now.as_secs(),
        exp: now.as_secs() + TOKEN_TTL_SECONDS,
        jti: nonce.to_owned(),
    };
    let token = identity::issue(key, &claims);
    let mut back = reqwest::Url::parse(target.as_str())
        .map_err(|e| OAuthError::BadRequest(format!("return: {e}")))?;
    back.query_pairs_mut().append_pair(TOKEN_PARAM, &token);
    tracing::info!(scope, "a follower identified on an H5 page");
    Ok(back.to_string())
}

/// The event id of one sign-in: stable for its state's nonce.
fn event_id(account: &str, nonce: &str) -> String {
    let mut h = Sha1::new();
    for part in [account, "h5_identified", nonce] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(h.finalize())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_wechats_two_and_default_to_the_silent_one() {
        assert_eq!(parse_scope(None).unwrap(), "snsapi_base");
        assert_eq!(
            parse_scope(Some("snsapi_userinfo")).unwrap(),
            "snsapi_userinfo"
        );
        assert!(parse_scope(Some("snsapi_login")).is_err());
    }

    #[test]
    fn a_state_binds_the_scope_and_the_return_url() {
        let nonce = new_nonce();
        let state = sign_state(
            b"k",
            "a",
            &binding("snsapi_base", "https://acme.com/"),
            &nonce,
            9,
        );
        assert!(verify_state(
            b"k",
            "a",
            &binding("snsapi_base", "https://acme.com/"),
            &state,
            1
        )
        .is_ok());
        assert!(verify_state(
            b"k",
            "a",
            &binding("snsapi_userinfo", "https://acme.com/"),
            &state,
            1
        )
        .is_err());
        assert!(verify_state(
            b"k",
            "a",
            &binding("snsapi_base", "https://acme.com/x"),
            &state,
            1
        )
        .is_err());
    }

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
