//! Template messages (模板消息, `message/template/send`) and subscription notices (订阅通知,
//! `message/subscribe/bizsend`), one recipient per call, and the account's templates of each
//! (`template/get_all_private_template`, `wxaapi/newtmpl/gettemplate`).
//!
//! `template/send` takes a `client_msg_id` (防重入id): "for the same openid and client_msg_id,
//! only one message is sent; valid for 10 minutes" (developers.weixin.qq.com/doc/offiaccount/
//! Message_Management/Template_Message_Interface.html, as silenceper/wechat PR 651 quotes it).
//! So a send whose answer was lost may be repeated with the same id within that window, and
//! it is retried inside the call like any other. `bizsend` has no such key: it is called once
//! ([`TokenAuthority::post_once`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// One template of `template/get_all_private_template`.
#[derive(Debug, Clone, Deserialize)]
pub struct PrivateTemplate {
    pub template_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub primary_industry: String,
    #[serde(default)]
    pub deputy_industry: String,
    /// `{{first.DATA}}\n商品：{{keyword1.DATA}}...`: the fields are named in it.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub example: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PrivateTemplates {
    #[serde(default)]
    pub template_list: Vec<PrivateTemplate>,
}

/// One template of `wxaapi/newtmpl/gettemplate` (the account's subscription-notice templates).
#[derive(Debug, Clone, Deserialize)]
pub struct SubscribeTemplate {
    #[serde(rename = "priTmplId")]
    pub template_id: String,
    #[serde(default)]
    pub title: String,
    /// `{{thing1.DATA}}` etc.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub example: String,
    /// 2 one-off, 3 long-term.
    #[serde(default, rename = "type")]
    pub kind: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscribeTemplates {
    #[serde(default)]
    pub data: Vec<SubscribeTemplate>,
}

/// The answer of `template/send` (and of `bizsend`, which may carry a msgid too).
#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    #[serde(default)]
    pub msgid: Option<i64>,
}

/// A `template/send` request; `message` holds `template_id`, `data` and `url` or
/// `miniprogram` as the job keeps them.
#[derive(Serialize)]
struct TemplateSend<'a> {
    touser: &'a str,
    client_msg_id: &'a str,
    #[serde(flatten)]
    message: &'a Value,
}

#[derive(Serialize)]
struct BizSend<'a> {
    touser: &'a str,
    #[serde(flatten)]
    message: &'a Value,
}

/// `cgi-bin/template/get_all_private_template`.
pub async fn private_templates(
    tokens: &TokenAuthority,
    account: &Account,
) -> Result<PrivateTemplates, TokenError> {
    tokens
        .get(
            account,
            "template/get_all_private_template",
            "/cgi-bin/template/get_all_private_template",
            &[],
        )
        .await
}

/// `wxaapi/newtmpl/gettemplate`: the subscription-notice templates the account added.
pub async fn subscribe_templates(
    tokens: &TokenAuthority,
    account: &Account,
) -> Result<SubscribeTemplates, TokenError> {
    tokens
        .get(
            account,
            "newtmpl/gettemplate",
            "/wxaapi/newtmpl/gettemplate",
            &[],
        )
        .await
}

/// `cgi-bin/message/template/send` to one follower.
pub async fn send(
    tokens: &TokenAuthority,
    account: &Account,
    open_id: &str,
    client_msg_id: &str,
    message: &Value,
) -> Result<Sent, TokenError> {
    let body = TemplateSend {
        touser: open_id,
        client_msg_id,
        message,
    };
    tokens
        .post(
            account,
            "template/send",
            "/cgi-bin/message/template/send",
            &body,
        )
        .await
}

/// `cgi-bin/message/subscribe/bizsend` to one follower, in one attempt (no de-duplication
/// key: a repeat would be a second notice).
pub async fn bizsend(
    tokens: &TokenAuthority,
    account: &Account,
    open_id: &str,
    message: &Value,
) -> Result<Sent, TokenError> {
    let body = BizSend {
        touser: open_id,
        message,
    };
    tokens
        .post_once(
            account,
            "subscribe/bizsend",
            "/cgi-bin/message/subscribe/bizsend",
            &body,
        )
        .await
}
