//! Web OAuth (`sns/oauth2/access_token`): who opened a tracked link's page. It takes the
//! account's secret and the code WeChat handed to the follower's browser, not an access token.

use serde::Deserialize;

use crate::domain::{Platform, Secret};

use super::{ApiError, Attempts, Request, WeChatApi};

/// The answer of `sns/oauth2/access_token`: who opened the page. Its `access_token` (a web
/// token, unrelated to the account's) is used once, for `sns/userinfo`, and not kept.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthIdentity {
    pub openid: String,
    #[serde(default)]
    pub access_token: Secret,
    /// The scope the follower granted (`snsapi_base`, `snsapi_userinfo`).
    #[serde(default)]
    pub scope: String,
    /// Only where the account is bound to an open platform (and, by WeChat's rule, mostly with
    /// `snsapi_userinfo`); enrichment fills it otherwise.
    #[serde(default)]
    pub unionid: String,
}

impl WeChatApi {
    /// `sns/oauth2/access_token`: exchanges the `code` that WeChat's web OAuth handed to the
    /// follower's browser for the follower's openid (40029 invalid code, 40163 code already
    /// used: a code is good for one exchange, within 5 minutes).
    pub async fn oauth_identity(
        &self,
        account: &str,
        app_id: &str,
        secret: &Secret,
        code: &str,
    ) -> Result<OAuthIdentity, ApiError> {
        self.call(Request::<()> {
            account,
            platform: Platform::Mp,
            api: "sns/oauth2/access_token",
            path: "/sns/oauth2/access_token",
            query: vec![
                ("appid", app_id),
                ("secret", secret.expose()),
                ("code", code),
                ("grant_type", "authorization_code"),
            ],
            body: None,
            upload: None,
            attempts: Attempts::Retried,
        })
        .await
    }
}

/// The answer of `sns/userinfo` (snsapi_userinfo): the profile the follower agreed to share.
/// Since October 2021 WeChat answers `sex` 0 and empty places for new authorizations.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OAuthProfile {
    pub openid: String,
    #[serde(default)]
    pub nickname: String,
    #[serde(default)]
    pub sex: i32,
    #[serde(default)]
    pub province: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub headimgurl: String,
    #[serde(default)]
    pub privilege: Vec<String>,
    #[serde(default)]
    pub unionid: String,
}

impl WeChatApi {
    /// `sns/userinfo`: the profile of the follower who granted `snsapi_userinfo`, with the web
    /// access token of the code exchange (40001 / 42001 there mean that web token is bad, not
    /// the account's: nothing to refresh).
    pub async fn oauth_profile(
        &self,
        account: &str,
        web_token: &Secret,
        open_id: &str,
    ) -> Result<OAuthProfile, ApiError> {
        self.call(Request::<()> {
            account,
            platform: Platform::Mp,
            api: "sns/userinfo",
            path: "/sns/userinfo",
            query: vec![
                ("access_token", web_token.expose()),
                ("openid", open_id),
                ("lang", "zh_CN"),
            ],
            body: None,
            upload: None,
            attempts: Attempts::Retried,
        })
        .await
    }
}
