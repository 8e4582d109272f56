//! Who a user is: an Official Account follower's profile (`user/info/batchget`, up to 100
//! openids a call) and a WeCom external contact (`externalcontact/get`, one a call).

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// The answer of `user/info/batchget`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfos {
    #[serde(default)]
    pub user_info_list: Vec<UserInfo>,
}

/// One entry of `user_info_list`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    pub openid: String,
    #[serde(default)]
    pub unionid: String,
    #[serde(default)]
    pub subscribe_time: i64,
    #[serde(default)]
    pub subscribe_scene: String,
    #[serde(default)]
    pub qr_scene: i64,
    #[serde(default)]
    pub qr_scene_str: String,
    #[serde(default)]
    pub tagid_list: Vec<i64>,
}

#[derive(Serialize)]
struct BatchGet<'a> {
    user_list: Vec<UserRef<'a>>,
}

#[derive(Serialize)]
struct UserRef<'a> {
    openid: &'a str,
    lang: &'static str,
}

/// The answer of `externalcontact/get`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalContactAnswer {
    pub external_contact: ExternalContact,
    /// The members who have the contact as a customer.
    #[serde(default)]
    pub follow_user: Vec<FollowUser>,
}

/// One entry of `follow_user` (externalcontact/get): a member who has the customer, as they see
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUser {
    pub userid: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub description: String,
    /// Unix seconds.
    #[serde(default)]
    pub createtime: i64,
    #[serde(default)]
    pub tags: Vec<FollowUserTag>,
    #[serde(default)]
    pub remark_corp_name: String,
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    #[serde(default)]
    pub oper_userid: String,
    #[serde(default)]
    pub add_way: i32,
    #[serde(default)]
    pub state: String,
}

/// One entry of `follow_user[].tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUserTag {
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub tag_name: String,
    /// Corp tags only.
    #[serde(default)]
    pub tag_id: String,
    /// 1 corp tag, 2 personal tag, 3 rule-group tag.
    #[serde(default)]
    pub r#type: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExternalContact {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub unionid: String,
}

/// `cgi-bin/user/info/batchget`: the profiles of at most 100 followers, in Chinese (`zh_CN`).
/// WeChat refuses the whole call for one openid it does not know (40003).
pub async fn batchget(
    tokens: &TokenAuthority,
    account: &Account,
    open_ids: &[String],
) -> Result<UserInfos, TokenError> {
    let body = BatchGet {
        user_list: open_ids
            .iter()
            .map(|openid| UserRef {
                openid,
                lang: "zh_CN",
            })
            .collect(),
    };
    tokens
        .post(
            account,
            "user/info/batchget",
            "/cgi-bin/user/info/batchget",
            &body,
        )
        .await
}

/// WeCom `cgi-bin/externalcontact/get`: one external contact (customer) of the corp.
pub async fn external_contact(
    tokens: &TokenAuthority,
    account: &Account,
    external_userid: &str,
) -> Result<ExternalContactAnswer, TokenError> {
    tokens
        .get(
            account,
            "externalcontact/get",
            "/cgi-bin/externalcontact/get",
            &[("external_userid", external_userid)],
        )
        .await
}
