//! The token authority: one access token per WeChat credential, shared by every instance
//! through the store, refreshed by one instance at a time.
//!
//! A credential is an Official Account's appid (accounts configured with the same appid share
//! its token) or a WeCom corp with one application secret. Its token key is `mp-<appid>` or
//! `work-<corpid>-<16 hex of SHA-1(secret)>` (the secret itself never reaches the store).
//!
//! - A token is used while more than [`TokenPolicy::refresh_ahead`] of it remains. Inside that
//!   window (or when there is none) a caller takes the credential's refresh lease in the store;
//!   the holder reads the store once more (another instance may just have written a new token),
//!   then asks WeChat, writes the token and releases the lease. Everyone else keeps using the
//!   old token while it is valid, or polls the store until the new one appears: only the lease
//!   holder calls WeChat. Inside one instance, one task at a time goes down that slow path (the
//!   others use the valid token, or wait for that task), so a crowd of requests costs the store
//!   one poll, not one each.
//! - Official Accounts use `cgi-bin/stable_token`, which does not invalidate the token other
//!   systems holding the same appid use. `force_refresh` is asked for only when WeChat rejected
//!   the token that is still the cached one, and only inside WeChat's budget (20 a day, 30 s
//!   apart, counted in the store for every instance); otherwise a normal fetch is made.
//! - A fetch that WeChat refuses (quota, bad secret, IP whitelist) is reported to the requests
//!   that waited for it without asking WeChat again, for [`FAILURE_HOLD`]: never looped on.
//! - A call refused with 40001/40014/42001 is retried once with a fresh token. The rejected
//!   token is evicted compare-and-evict style: only if the cache still holds it, so a token that
//!   another instance (or request) already replaced is not refreshed again.
//! - The JS-SDK tickets ([`tickets`]) are cached and refreshed by the same machinery
//!   ([`TokenAuthority::single_flight`]), under keys of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::domain::{Platform, Secret};
use crate::store::{CachedToken, LeaseKey, Store, StoreError};
use crate::wechat::account::Account;
use crate::wechat::api::token::AccessToken;
use crate::wechat::api::{ApiError, Attempts, Upload, WeChatApi};

pub mod tickets;

/// A token fetch that WeChat refused (quota, bad secret, IP whitelist) is answered from memory
/// this long to the requests that were waiting for it, instead of each asking WeChat again.
const FAILURE_HOLD: Duration = Duration::from_secs(2);

/// WeChat allows this many `force_refresh` calls of `stable_token` per appid and day...
const FORCE_PER_DAY: u32 = 20;
/// ...and no two closer than this.
const FORCE_SPACING: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum TokenError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another instance holds the refresh lease and no token appeared in time.
    #[error("no access token for {0}: another instance is refreshing it and has not finished")]
    Wait(String),
}

#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Refresh this long before the token expires.
    pub refresh_ahead: Duration,
    /// How long a refresh lease lasts if its holder never releases it (it died).
    pub lease: Duration,
    /// How often a waiting instance looks for the new token.
    pub poll: Duration,
}

impl TokenPolicy {
    /// A lease outlasts the slowest refresh `api` can make (every retry included).
    pub fn for_api(api: &WeChatApi) -> Self {
        Self {
            refresh_ahead: Duration::from_secs(300),
            lease: api.policy().worst_case() + Duration::from_secs(1),
            poll: Duration::from_millis(25),
        }
    }
}

/// Why a token is being obtained.
struct Rejected<'a> {
    /// The token WeChat refused: not to be handed out again.
    token: &'a str,
    /// This caller evicted it (it was still the cached one): `force_refresh` is warranted.
    evicted: bool,
}

pub struct TokenAuthority {
    api: WeChatApi,
    store: Arc<dyn Store>,
    /// This instance's name on the leases it takes.
    owner: String,
    policy: TokenPolicy,
    /// One slow path per token key in this process.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Token key → the last refused fetch and when, see [`FAILURE_HOLD`].
    refused: Mutex<HashMap<String, (tokio::time::Instant, ApiError)>>,
}

impl TokenAuthority {
    pub fn new(api: WeChatApi, store: Arc<dyn Store>, owner: String) -> Self {
        let policy = TokenPolicy::for_api(&api);
        Self {
            api,
            store,
            owner,
            policy,
            refreshing: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    pub fn api(&self) -> &WeChatApi {
        &self.api
    }

    /// POSTs `body` to an action API of the account with its access token; a rejected token
    /// is replaced and the call made once more. For the typed functions of
    /// [`crate::wechat::api`]'s areas: a use case calls those.
    pub(in crate::wechat) async fn post<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, TokenError> {
        self.call(account, api, path, &[], Some(body), Attempts::Retried)
            .await
    }

    /// [`Self::post`] in one attempt: a timeout, a 5xx or an errcode -1 is reported, not sent
    /// again (a rejected token still is: WeChat did not act on the request). For a send that
    /// WeChat does not de-duplicate, see [`Attempts::Once`].
    pub(in crate::wechat) async fn post_once<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, TokenError> {
        self.call(account, api, path, &[], Some(body), Attempts::Once)
            .await
    }

    /// A GET of a read API of the account, with `query` besides the access token.
    pub(in crate::wechat) async fn get<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        query: &[(&'static str, &str)],
    ) -> Result<T, TokenError> {
        self.call(account, api, path, query, None::<&()>, Attempts::Retried)
            .await
    }

    /// [`Self::post`] with `extra` query parameters (WeCom's `agentid`), and a GET when there
    /// is no body.
    pub(in crate::wechat) async fn call<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        extra: &[(&'static str, &str)],
        body: Option<&(impl Serialize + ?Sized)>,
        attempts: Attempts,
    ) -> Result<T, TokenError> {
        self.call_or_upload(account, api, path, extra, body, None, attempts)
            .await
    }

    /// A multipart upload of a file (`media/upload` and the like), with `extra` query
    /// parameters (`type`), retried like [`Self::post`]: WeChat keeps a file sent twice as two
    /// media ids, which costs nothing but the second copy.
    pub(in crate::wechat) async fn upload<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        extra: &[(&'static str, &str)],
        upload: &Upload,
    ) -> Result<T, TokenError> {
        self.call_or_upload(
            account,
            api,
            path,
            extra,
            None::<&()>,
            Some(upload),
            Attempts::Retried,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_or_upload<T: DeserializeOwned>(
        &self,
        account: &Account,
        api: &'static str,
        path: &'static str,
        extra: &[(&'static str, &str)],
        body: Option<&(impl Serialize + ?Sized)>,
        upload: Option<&Upload>,
        attempts: Attempts,
    ) -> Result<T, TokenError> {
        let id = account.id.as_str();
        let platform = account.platform;
        let token = self.token(account).await?;
        match self
            .api
            .with_token(
                id, platform, api, path, &token, extra, body, upload, attempts,
            )
            .await
        {
            Err(ApiError::TokenRejected { errcode, .. }) => {
                let key = token_key(account);
                let evicted = self.store.evict_token(&key, token.expose()).await?;
                tracing::info!(
                    account = id,
                    api,
                    errcode,
                    evicted,
                    "WeChat rejected the access token; calling again with a fresh one"
                );
                metrics::counter!("wgw_wechat_token_rejections_total", "account" => id.to_owned())
                    .increment(1);
                let fresh = self
                    .obtain(
                        account,
                        Some(Rejected {
                            token: token.expose(),
                            evicted,
                        }),
                    )
                    .await?;
                Ok(self
                    .api
                    .with_token(
                        id, platform, api, path, &fresh, extra, body, upload, attempts,
                    )
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// The account's current access token.
    pub async fn token(&self, account: &Account) -> Result<Secret, TokenError> {
        self.obtain(account, None).await
    }

    async fn obtain(
        &self,
        account: &Account,
        rejected: Option<Rejected<'_>>,
    ) -> Result<Secret, TokenError> {
        let key = token_key(account);
        let bad = rejected.as_ref().map_or("", |r| r.token);
        self.single_flight(account, &key, bad, || {
            self.refresh(account, &key, rejected.as_ref())
        })
        .await
    }

    /// The credential under `key` in the store, refreshed by one caller across every instance
    /// (see the module comment): the fast path, this process's gate, the store's lease, and
    /// `refresh` run only by the lease holder. `bad` is a value never to hand out (a token
    /// WeChat just rejected). The access tokens and the JS-SDK tickets ([`tickets`]) share it.
    pub(in crate::wechat) async fn single_flight<F, Fut>(
        &self,
        account: &Account,
        key: &str,
        bad: &str,
        refresh: F,
    ) -> Result<Secret, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Secret, TokenError>>,
    {
        // Fast path: a value with time left, read without any lock.
        let cached = self.store.cached_token(key).await?;
        if let Some(token) = fresh(cached.as_ref(), bad, self.policy.refresh_ahead) {
            return Ok(token);
        }
        let gate = self.gate(key);
        let _one_at_a_time = match gate.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                // Another request of this instance is refreshing: the valid value serves.
                if let Some(token) = fresh(cached.as_ref(), bad, Duration::ZERO) {
                    return Ok(token);
                }
                gate.lock_owned().await
            }
        };
        if let Some(e) = self.recently_refused(key) {
            return Err(e.into());
        }
        let deadline = tokio::time::Instant::now() + self.policy.lease + self.policy.poll;
        loop {
            let cached = self.store.cached_token(key).await?;
            if let Some(token) = fresh(cached.as_ref(), bad, self.policy.refresh_ahead) {
                return Ok(token);
            }
            if self
                .store
                .try_lease(
                    &LeaseKey::token_refresh(key),
                    &self.owner,
                    self.policy.lease,
                )
                .await?
            {
                break;
            }
            // Another instance refreshes: a value that is still valid serves meanwhile.
            if let Some(token) = fresh(cached.as_ref(), bad, Duration::ZERO) {
                return Ok(token);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::Wait(account.id.to_string()));
            }
            tokio::time::sleep(self.policy.poll).await;
        }
        let result = refresh().await;
        if result.is_err() {
            metrics::counter!("wgw_token_refresh_failures_total",
                "account" => account.id.to_string())
            .increment(1);
        }
        if let Err(TokenError::Api(e)) = &result {
            if !matches!(e, ApiError::Busy { .. } | ApiError::Unreachable { .. }) {
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.to_owned(), (tokio::time::Instant::now(), e.clone()));
            }
        }
        if let Err(e) = self
            .store
            .release_lease(&LeaseKey::token_refresh(key), &self.owner)
            .await
        {
            // It lapses by itself; until then the others wait for nothing.
            tracing::warn!(account = %account.id, error = %e, "cannot release a token lease");
        }
        result
    }

    fn recently_refused(&self, key: &str) -> Option<ApiError> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .get(key)
            .filter(|(at, _)| at.elapsed() < FAILURE_HOLD)
            .map(|(_, e)| e.clone())
    }

    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// With the lease held: fetches a token from WeChat unless one appeared meanwhile.
    async fn refresh(
        &self,
        account: &Account,
        key: &str,
        rejected: Option<&Rejected<'_>>,
    ) -> Result<Secret, TokenError> {
        let bad = rejected.map_or("", |r| r.token);
        let cached = self.store.cached_token(key).await?.unwrap_or_default();
        if let Some(token) = fresh(Some(&cached), bad, self.policy.refresh_ahead) {
            return Ok(token);
        }
        let now = unix_ms();
        let mut next = cached.clone();
        let issued: AccessToken = match account.platform {
            Platform::Mp => {
                let force = rejected.is_some_and(|r| r.evicted) && {
                    let allowed = force_allowed(&cached, now);
                    if !allowed {
                        tracing::warn!(account = %account.id,
                            "WeChat rejected the token but the force_refresh budget (20 a day, \
                             30 s apart) is spent; fetching without force_refresh");
                    }
                    allowed
                };
                if force {
                    let today = now / 86_400_000;
                    next.forced_today = if cached.forced_day == today {
                        cached.forced_today + 1
                    } else {
                        1
                    };
                    next.forced_day = today;
                    next.forced_at_ms = now;
                }
                self.api
                    .stable_token(
                        account.id.as_str(),
                        &account.receiver_id,
                        &account.secret,
                        force,
                    )
                    .await?
            }
            Platform::Work => {
                self.api
                    .work_token(account.id.as_str(), &account.receiver_id, &account.secret)
                    .await?
            }
        };
        if issued.access_token.is_empty() {
            return Err(ApiError::BadResponse("an empty access_token".into()).into());
        }
        if issued.access_token.expose() == bad {
            // WeChat handed back the token it refuses (no force_refresh was possible): report
            // it instead of calling again.
            return Err(ApiError::TokenRejected {
                errcode: 40001,
                errmsg: "WeChat keeps issuing the token it rejects, and the force_refresh \
                         budget is spent"
                    .into(),
            }
            .into());
        }
        next.token = issued.access_token.clone();
        next.expires_at_ms = now + issued.expires_in.saturating_mul(1000);
        self.store.put_token(key, &next).await?;
        tracing::info!(account = %account.id, expires_in = issued.expires_in,
            forced = next.forced_at_ms == now, "access token refreshed");
        Ok(issued.access_token)
    }
}

/// The cached token if it is not `bad` and has more than `ahead` left.
fn fresh(cached: Option<&CachedToken>, bad: &str, ahead: Duration) -> Option<Secret> {
    let c = cached?;
    let usable = !c.token.is_empty()
        && c.token.expose() != bad
        && c.expires_at_ms > unix_ms() + ahead.as_millis() as u64;
    usable.then(|| c.token.clone())
}

/// Whether WeChat's `force_refresh` budget allows one more now.
fn force_allowed(cached: &CachedToken, now_ms: u64) -> bool {
    let today = now_ms / 86_400_000;
    let spaced = cached.forced_at_ms == 0
        || now_ms.saturating_sub(cached.forced_at_ms) >= FORCE_SPACING.as_millis() as u64;
    let under_quota = cached.forced_day != today || cached.forced_today < FORCE_PER_DAY;
    spaced && under_quota
}

/// The store key of an account's credential (see the module comment).
pub fn token_key(account: &Account) -> String {
    match account.platform {
        Platform::Mp => format!("mp-{}", account.receiver_id),
        Platform::Work => {
            let digest = Sha1::digest(account.secret.expose().as_bytes());
            format!(
                "work-{}-{}",
                account.receiver_id,
                &hex::encode(digest)[..16]
            )
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str, expires_in_ms: u64) -> CachedToken {
        CachedToken {
            token: Secret::new(t),
            expires_at_ms: unix_ms() + expires_in_ms,
            ..Default::default()
        }
    }

    #[test]
    fn a_token_is_used_until_the_refresh_window_and_never_when_rejected() {
        let ahead = Duration::from_secs(300);
        assert!(fresh(Some(&token("a", 3_600_000)), "", ahead).is_some());
        assert!(fresh(Some(&token("a", 200_000)), "", ahead).is_none());
        assert!(fresh(Some(&token("a", 200_000)), "", Duration::ZERO).is_some());
        assert!(fresh(Some(&token("a", 3_600_000)), "a", ahead).is_none());
        assert!(fresh(Some(&token("", 3_600_000)), "", ahead).is_none());
        assert!(fresh(None, "", ahead).is_none());
    }

    #[test]
    fn force_refresh_stays_inside_wechats_budget() {
        let now = 100 * 86_400_000 + 50_000_000;
        let mut c = CachedToken::default();
        assert!(force_allowed(&c, now));
        c.forced_at_ms = now - 10_000;
        c.forced_day = now / 86_400_000;
        c.forced_today = 1;
        assert!(!force_allowed(&c, now), "30 s apart");
        c.forced_at_ms = now - 31_000;
        assert!(force_allowed(&c, now));
        c.forced_today = FORCE_PER_DAY;
        assert!(!force_allowed(&c, now), "20 a day");
        assert!(force_allowed(&c, now + 86_400_000), "a new day");
    }
}
