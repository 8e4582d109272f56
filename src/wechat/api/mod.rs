//! The WeChat HTTP API client, for Official Accounts (`wechat.mp_api_base`) and WeCom
//! (`wechat.work_api_base`): this module is its core (one request, its retries and metrics, and
//! the mapping of WeChat's errcodes to [`ApiError`]); its children are WeChat's own areas, one
//! typed function per endpoint the gateway uses, with its request and answer structs:
//!
//! - [`token`]: the access tokens (`stable_token`, WeCom's `gettoken`), and [`oauth`]: the web
//!   OAuth code exchange. These take the account's secret, not a token.
//! - [`mass`] (Official Account mass sends), [`groupmsg`] (WeCom customer group messages),
//!   [`menu`], [`tags`], [`user`] (user and external contact lookups), [`qrcode`] (parametric
//!   QR codes, WeCom contact ways), [`welcome`] (WeCom contact welcomes), [`message`] (a
//!   message to one user), [`corp_tags`] (WeCom corp tags) and [`group_chats`] (WeCom customer
//!   groups and their join codes). These go through the token authority
//!   ([`crate::wechat::tokens::TokenAuthority`]), which adds the access token and calls once
//!   more with a fresh one when WeChat rejects it, so a use case writes
//!   `tags::create(&svc.tokens, &account, name)` and never sees a path or a JSON shape.
//!
//! Every call has a deadline (`wechat.timeout_ms`), is counted in
//! `wgw_wechat_api_calls_total{account,api,errcode}` (one count per attempt; `errcode` is WeChat's
//! code, `0` on success, or `network`/`timeout`/`http_<status>`/`bad_response` when no code came
//! back), and is retried with capped, jittered backoff when the failure is transient: the network,
//! a 5xx, or errcode -1 ("系统繁忙"), unless its endpoint is sent [`Attempts::Once`]. WeChat's
//! other codes become typed [`ApiError`]s and are not retried here: a rejected token is the token
//! authority's to handle ([`crate::wechat::tokens`]), a quota is reported, never looped on.
//!
//! Secrets travel in query strings (`access_token`, `corpsecret`) and request bodies (`secret`):
//! no URL, query or body is ever logged, and reqwest's errors are stripped of their URL.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::{Platform, Secret};

pub mod audience;
pub mod corp_tags;
pub mod group_chats;
pub mod groupmsg;
pub mod mass;
pub mod media;
pub mod menu;
pub mod message;
pub mod oauth;
pub mod qrcode;
pub mod tags;
pub mod template;
pub mod ticket;
pub mod token;
pub mod user;
pub mod welcome;

/// A WeChat API failure, classified as the callers need it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ApiError {
    /// 40001 (invalid credential), 40014 (invalid access_token), 42001 (access_token expired):
    /// the token must be replaced, and the call may be tried once more with the new one.
    #[error("WeChat refused the access token: errcode {errcode}: {errmsg}")]
    TokenRejected { errcode: i64, errmsg: String },
    /// 45009 (daily API quota reached), 45011 (API minute quota): retrying only burns more.
    #[error("WeChat quota exhausted: errcode {errcode}: {errmsg}")]
    QuotaExceeded { errcode: i64, errmsg: String },
    /// 40164: the gateway's egress IP is not in the account's API IP whitelist (IP白名单).
    #[error(
        "WeChat refused this server's IP (errcode 40164): add it to the account's API IP \
         whitelist: {errmsg}"
    )]
    IpNotWhitelisted { errmsg: String },
    /// errcode -1, still after every retry.
    #[error("WeChat is busy (errcode -1) after {attempts} attempts: {errmsg}")]
    Busy { attempts: u32, errmsg: String },
    /// Any other errcode: the request itself was refused (bad openid, bad media id, ...).
    #[error("WeChat refused: errcode {errcode}: {errmsg}")]
    Refused { errcode: i64, errmsg: String },
    /// No usable answer (network, deadline, 5xx), still after every retry.
    #[error("WeChat API unreachable after {attempts} attempts: {reason}")]
    Unreachable { attempts: u32, reason: String },
    /// An answer that is not what WeChat documents (not JSON, missing fields, a 4xx).
    #[error("unexpected answer from WeChat: {0}")]
    BadResponse(String),
}

impl ApiError {
    /// Classifies a non-zero errcode.
    pub fn from_errcode(errcode: i64, errmsg: String) -> Self {
        match errcode {
            40001 | 40014 | 42001 => Self::TokenRejected { errcode, errmsg },
            45009 | 45011 => Self::QuotaExceeded { errcode, errmsg },
            40164 => Self::IpNotWhitelisted { errmsg },
            -1 => Self::Busy {
                attempts: 1,
                errmsg,
            },
            _ => Self::Refused { errcode, errmsg },
        }
    }
}

/// Timeouts and retries of every call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// First backoff; doubles per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            attempts: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// The longest a call can take with all its retries: what a token lease must outlast.
    pub fn worst_case(&self) -> Duration {
        self.timeout * self.attempts + self.backoff_max * self.attempts.saturating_sub(1)
    }

    /// Wait before attempt `n + 1` (n ≥ 1 failures so far): random in [d/2, d].
    fn backoff(&self, failures: u32) -> Duration {
        crate::backoff::jittered(crate::backoff::exponential(
            self.backoff_min,
            self.backoff_max,
            failures.saturating_sub(1),
        ))
    }
}

/// An answer with nothing but errcode/errmsg (checked before this is decoded).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Empty {}

/// A message of any type as the mass and group message APIs carry it:
/// `{"msgtype": "<type>", "<type>": {...}}`, the body as the job stored it.
#[derive(Debug, Clone, Copy)]
pub struct Typed<'a> {
    pub msgtype: &'a str,
    pub body: &'a serde_json::Value,
}

impl Serialize for Typed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("msgtype", self.msgtype)?;
        map.serialize_entry(self.msgtype, self.body)?;
        map.end()
    }
}

/// One request to WeChat. `query` and `body` may hold secrets: never logged.
struct Request<'a, B: ?Sized> {
    account: &'a str,
    platform: Platform,
    /// Metric label and log field, e.g. `qrcode/create`.
    api: &'static str,
    path: &'static str,
    query: Vec<(&'static str, &'a str)>,
    /// A POST of this as JSON, or a GET without one.
    body: Option<&'a B>,
    /// A POST of a file as multipart/form-data instead (the media uploads).
    upload: Option<&'a Upload>,
    attempts: Attempts,
}

/// A file for a media upload: `multipart/form-data` with the file under `field` (WeChat's
/// `media`) and any text fields beside it (`add_material`'s video `description`). Rebuilt for
/// each attempt, with its length, since WeChat wants a Content-Length.
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: &'static str,
    pub filename: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    pub fields: Vec<(&'static str, String)>,
}

impl Upload {
    fn form(&self) -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::bytes(self.bytes.clone())
            .file_name(self.filename.clone())
            .mime_str(self.content_type)
            .unwrap_or_else(|_| reqwest::multipart::Part::bytes(self.bytes.clone()));
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in &self.fields {
            form = form.text(*name, value.clone());
        }
        form.part(self.field, part)
    }
}

/// How often a call may be sent when the answer is a timeout, a 5xx or an errcode -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Up to the retry policy's attempts: for the calls WeChat de-duplicates or that are safe
    /// to repeat.
    Retried,
    /// Once, the failure reported at once: for a call WeChat does not de-duplicate (WeCom's
    /// `add_msg_template`), whose caller must first find out whether an attempt landed.
    Once,
}

/// Where and how patiently to call WeChat: the `[wechat]` settings, built by `crate::config`.
#[derive(Debug, Clone)]
pub struct WechatConfig {
    pub mp_api_base: String,
    pub work_api_base: String,
    /// Deadline of one HTTP call to WeChat (each retry gets its own).
    pub timeout: Duration,
    /// Where followers are sent for web OAuth (`connect/oauth2/authorize`); overridable so
    /// that tests can point it at a fake.
    pub oauth_base: String,
}

/// reqwest (this client) and tonic (the CRM sink, the gRPC server's clients in tests) use rustls
/// with the `ring` provider, which must be installed once per process before the first client is
/// built (idempotent).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Cheap to clone: the HTTP client shares one connection pool.
#[derive(Clone)]
pub struct WeChatApi {
    http: reqwest::Client,
    mp_base: String,
    work_base: String,
    policy: RetryPolicy,
}

impl WeChatApi {
    /// Needs the rustls provider installed ([`install_tls_provider`]).
    pub fn new(cfg: &WechatConfig) -> anyhow::Result<Self> {
        let policy = RetryPolicy::new(cfg.timeout);
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .build()?;
        Ok(Self {
            http,
            mp_base: cfg.mp_api_base.clone(),
            work_base: cfg.work_api_base.clone(),
            policy,
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// A call with `?access_token=` and `extra` query parameters (WeCom's `agentid`): a POST of
    /// `body`, a multipart upload of `upload`, or a GET without either (the read and delete APIs
    /// of menus are GETs). Only the token authority calls it, for the typed functions of this
    /// module's children.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::wechat) async fn with_token<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        account: &str,
        platform: Platform,
        api: &'static str,
        path: &'static str,
        token: &Secret,
        extra: &[(&'static str, &str)],
        body: Option<&B>,
        upload: Option<&Upload>,
        attempts: Attempts,
    ) -> Result<T, ApiError> {
        let mut query = vec![("access_token", token.expose())];
        query.extend_from_slice(extra);
        self.call(Request {
            account,
            platform,
            api,
            path,
            query,
            body,
            upload,
            attempts,
        })
        .await
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        req: Request<'_, B>,
    ) -> Result<T, ApiError> {
        let base = match req.platform {
            Platform::Mp => &self.mp_base,
            Platform::Work => &self.work_base,
        };
        let url = format!("{base}{}", req.path);
        let mut failures = 0;
        loop {
            let (label, outcome) = self.attempt::<B, T>(&url, &req).await;
            metrics::counter!("wgw_wechat_api_calls_total",
                "account" => req.account.to_owned(), "api" => req.api, "errcode" => label.clone())
            .increment(1);
            let transient = match outcome {
                Ok(value) => return Ok(value),
                Err(Attempt::Final(e)) => {
                    tracing::warn!(account = req.account, api = req.api, errcode = %label,
                        error = %e, "WeChat API call failed");
                    return Err(e);
                }
                Err(Attempt::Transient(e)) => e,
            };
            failures += 1;
            if req.attempts == Attempts::Once || failures >= self.policy.attempts {
                let e = match transient {
                    ApiError::Busy { errmsg, .. } => ApiError::Busy {
                        attempts: failures,
                        errmsg,
                    },
                    ApiError::Unreachable { reason, .. } => ApiError::Unreachable {
                        attempts: failures,
                        reason,
                    },
                    other => other,
                };
                tracing::warn!(account = req.account, api = req.api, errcode = %label,
                    error = %e, "WeChat API call failed; no retries left");
                return Err(e);
            }
            let wait = self.policy.backoff(failures);
            tracing::info!(account = req.account, api = req.api, errcode = %label,
                retry_in_ms = wait.as_millis() as u64, "transient WeChat API failure; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: its metric label and its outcome.
    async fn attempt<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        req: &Request<'_, B>,
    ) -> (String, Result<T, Attempt>) {
        let builder = match (req.upload, req.body) {
            (Some(upload), _) => self.http.post(url).multipart(upload.form()),
            (None, Some(body)) => self.http.post(url).json(body),
            (None, None) => self.http.get(url),
        };
        let response = match builder.query(&req.query).send().await {
            Ok(r) => r,
            Err(e) => return network(e),
        };
        let status = response.status();
        if status.is_server_error() {
            return (
                format!("http_{}", status.as_u16()),
                Err(Attempt::Transient(ApiError::Unreachable {
                    attempts: 1,
                    reason: format!("HTTP {status}"),
                })),
            );
        }
        if !status.is_success() {
            return (
                format!("http_{}", status.as_u16()),
                Err(Attempt::Final(ApiError::BadResponse(format!(
                    "HTTP {status}"
                )))),
            );
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return network(e),
        };
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return (
                    "bad_response".into(),
                    Err(Attempt::Final(ApiError::BadResponse(format!(
                        "not JSON: {e}"
                    )))),
                )
            }
        };
        let errcode = value.get("errcode").and_then(|c| c.as_i64()).unwrap_or(0);
        if errcode != 0 && !is_already_sent(errcode, &value) {
            let errmsg = value
                .get("errmsg")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            let e = ApiError::from_errcode(errcode, errmsg);
            let outcome = if errcode == -1 {
                Attempt::Transient(e)
            } else {
                Attempt::Final(e)
            };
            return (errcode.to_string(), Err(outcome));
        }
        match serde_json::from_value(value) {
            Ok(v) => (errcode.to_string(), Ok(v)),
            Err(e) => (
                "bad_response".into(),
                Err(Attempt::Final(ApiError::BadResponse(format!(
                    "{} answer: {e}",
                    req.api
                )))),
            ),
        }
    }
}

/// 45065 on a mass send: "a send with this clientmsgid exists (within 24 hours)". It carries the
/// `msg_id` of that send, so it is an answer, not a failure: it is decoded like a success, and
/// [`mass::Sent::already_sent`] reads it.
const ALREADY_SENT: i64 = 45065;

fn is_already_sent(errcode: i64, value: &serde_json::Value) -> bool {
    errcode == ALREADY_SENT && value.get("msg_id").is_some()
}

enum Attempt {
    /// Worth another attempt.
    Transient(ApiError),
    Final(ApiError),
}

fn network<T>(e: reqwest::Error) -> (String, Result<T, Attempt>) {
    let label = if e.is_timeout() { "timeout" } else { "network" };
    // The URL may carry `access_token` or `corpsecret`.
    let reason = e.without_url().to_string();
    (
        label.into(),
        Err(Attempt::Transient(ApiError::Unreachable {
            attempts: 1,
            reason,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_as_documented() {
        let c = |code| ApiError::from_errcode(code, "m".into());
        for code in [40001, 40014, 42001] {
            assert!(matches!(c(code), ApiError::TokenRejected { .. }), "{code}");
        }
        for code in [45009, 45011] {
            assert!(matches!(c(code), ApiError::QuotaExceeded { .. }), "{code}");
        }
        assert!(matches!(c(40164), ApiError::IpNotWhitelisted { .. }));
        assert!(matches!(c(-1), ApiError::Busy { .. }));
        assert!(matches!(c(40003), ApiError::Refused { errcode: 40003, .. }));
    }

    #[tokio::test]
    async fn an_unreachable_api_is_retried_and_its_error_never_shows_the_token_or_secret() {
        install_tls_provider();
        // A port nothing listens on: every attempt is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let api = WeChatApi::new(&WechatConfig {
            mp_api_base: base.clone(),
            work_api_base: base,
            timeout: Duration::from_millis(500),
            oauth_base: "http://127.0.0.1:1".into(),
        })
        .unwrap();
        let token = Secret::new("ACCESS-TOKEN-VALUE-1");
        let e = api
            .with_token::<_, Empty>(
                "acme",
                Platform::Mp,
                "x",
                "/x",
                &token,
                &[],
                Some(&serde_json::json!({})),
                None,
                Attempts::Retried,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApiError::Unreachable { attempts: 3, .. }),
            "{e:?}"
        );
        let secret = Secret::new("APP-SECRET-VALUE-2");
        let e2 = api.work_token("acme", "ww1", &secret).await.unwrap_err();
        for shown in [
            e.to_string(),
            format!("{e:?}"),
            e2.to_string(),
            format!("{e2:?}"),
        ] {
            assert!(
                !shown.contains("ACCESS-TOKEN") && !shown.contains("APP-SECRET"),
                "{shown}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy::new(Duration::from_secs(1));
        for n in 1..30 {
            let d = p.backoff(n);
            assert!(d <= p.backoff_max, "{n}: {d:?}");
            assert!(d >= p.backoff_min / 2, "{n}: {d:?}");
        }
        assert!(p.worst_case() >= Duration::from_secs(3));
    }
}
