//! Web OAuth (`sns/oauth2/access_token`): who opened a tracked link's page. It takes the
//! account's secret and the code WeChat handed to the follower's browser, not an access token.

use serde::Deserialize;

use crate::domain::{Platform, Secret};

use super::{ApiError, Attempts, Request, WeChatApi};

/// The answer of `sns/oauth2/access_token`: who opened the page. Its `access_token` (a web
/// token, unrelated to the account's) is not kept.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthIdentity {
    pub openid: String,
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
