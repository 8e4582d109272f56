//! Access tokens: `stable_token` for Official Accounts and WeCom's `gettoken`. Only the token
//! authority ([`crate::wechat::tokens`]) asks for them; every other call carries what it got.

use serde::{Deserialize, Serialize};

use crate::domain::{Platform, Secret};

use super::{ApiError, Attempts, Request, WeChatApi};

/// An access token as WeChat issued it.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessToken {
    pub access_token: Secret,
    /// Seconds from now (7200 as WeChat documents it).
    pub expires_in: u64,
}

/// The body of `stable_token`.
#[derive(Serialize)]
struct StableToken<'a> {
    grant_type: &'static str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

impl WeChatApi {
    /// `cgi-bin/stable_token`: the Official Account token that other holders of the same appid
    /// share; `force_refresh` invalidates the previous one (WeChat allows 20 a day, 30 s apart).
    pub async fn stable_token(
        &self,
        account: &str,
        app_id: &str,
        secret: &Secret,
        force_refresh: bool,
    ) -> Result<AccessToken, ApiError> {
        let body = StableToken {
            grant_type: "client_credential",
            appid: app_id,
            secret: secret.expose(),
            force_refresh,
        };
        self.call(Request {
            account,
            platform: Platform::Mp,
            api: "stable_token",
            path: "/cgi-bin/stable_token",
            query: Vec::new(),
            body: Some(&body),
            upload: None,
            attempts: Attempts::Retried,
        })
        .await
    }

    /// WeCom `cgi-bin/gettoken`: one token per corp and application secret.
    pub async fn work_token(
        &self,
        account: &str,
        corp_id: &str,
        secret: &Secret,
    ) -> Result<AccessToken, ApiError> {
        self.call(Request::<()> {
            account,
            platform: Platform::Work,
            api: "gettoken",
            path: "/cgi-bin/gettoken",
            query: vec![("corpid", corp_id), ("corpsecret", secret.expose())],
            body: None,
            upload: None,
            attempts: Attempts::Retried,
        })
        .await
    }
}
