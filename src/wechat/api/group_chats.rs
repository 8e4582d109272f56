//! WeCom customer groups (客户群, "客户群管理"): the list of a corp's customer groups
//! (`groupchat/list`, paged by cursor), one group with its members (`groupchat/get`), and group
//! join codes (`groupchat/add_join_way`, then `get_join_way` for the QR code). Every call is a
//! POST of `cgi-bin/externalcontact/groupchat/...`.

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// The answer of `groupchat/list`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatList {
    #[serde(default)]
    pub group_chat_list: Vec<ChatRef>,
    /// Empty on the last page.
    #[serde(default)]
    pub next_cursor: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRef {
    pub chat_id: String,
    /// 0 normal, 1 owner left (inheritance pending), 2 inheritance in progress, 3 inherited.
    #[serde(default)]
    pub status: i32,
}

/// The answer of `groupchat/get`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatAnswer {
    pub group_chat: Chat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub chat_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub notice: String,
    #[serde(default)]
    pub member_list: Vec<Member>,
    #[serde(default)]
    pub admin_list: Vec<UserRef>,
    #[serde(default)]
    pub member_version: String,
}

/// One entry of `member_list`.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub userid: String,
    /// 1 a member of the corp, 2 an external contact.
    #[serde(default)]
    pub r#type: i32,
    #[serde(default)]
    pub unionid: String,
    #[serde(default)]
    pub join_time: i64,
    /// 1 invited directly, 2 invited by link, 3 scanned a group QR code.
    #[serde(default)]
    pub join_scene: i32,
    #[serde(default)]
    pub invitor: Option<UserRef>,
    #[serde(default)]
    pub group_nickname: String,
    #[serde(default)]
    pub name: String,
    /// The `state` of the join code the member came through.
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserRef {
    #[serde(default)]
    pub userid: String,
}

#[derive(Serialize)]
struct ListBody<'a> {
    status_filter: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_filter: Option<OwnerFilter<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    cursor: &'a str,
    limit: u32,
}

#[derive(Serialize)]
struct OwnerFilter<'a> {
    userid_list: &'a [String],
}

#[derive(Serialize)]
struct GetBody<'a> {
    chat_id: &'a str,
    need_name: u8,
}

/// What `groupchat/add_join_way` is asked for (checked by the use case before).
#[derive(Debug, Serialize)]
pub struct NewJoinWay<'a> {
    /// 1: a mini-program button, 2: a QR code (the gateway's).
    pub scene: u8,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub remark: &'a str,
    /// 1: a new group is created when the groups are full.
    pub auto_create_room: u8,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub room_base_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_base_id: Option<u32>,
    pub chat_id_list: &'a [String],
    pub state: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JoinWayCreated {
    pub config_id: String,
}

/// The answer of `groupchat/get_join_way`.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinWayAnswer {
    pub join_way: JoinWay,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JoinWay {
    pub config_id: String,
    #[serde(default)]
    pub qr_code: String,
    #[serde(default)]
    pub chat_id_list: Vec<String>,
    #[serde(default)]
    pub state: String,
}

#[derive(Serialize)]
struct ConfigId<'a> {
    config_id: &'a str,
}

/// `externalcontact/groupchat/list`: one page of the corp's customer groups, of `owners`
/// (empty: every owner) with this status (0 all normal ones; 1..3 inheritance states).
pub async fn list(
    tokens: &TokenAuthority,
    account: &Account,
    status: i32,
    owners: &[String],
    cursor: &str,
    limit: u32,
) -> Result<ChatList, TokenError> {
    let body = ListBody {
        status_filter: status,
        owner_filter: (!owners.is_empty()).then_some(OwnerFilter {
            userid_list: owners,
        }),
        cursor,
        limit,
    };
    tokens
        .post(
            account,
            "externalcontact/groupchat/list",
            "/cgi-bin/externalcontact/groupchat/list",
            &body,
        )
        .await
}

/// `externalcontact/groupchat/get` with `need_name=1`: the group and every member's name.
pub async fn get(
    tokens: &TokenAuthority,
    account: &Account,
    chat_id: &str,
) -> Result<ChatAnswer, TokenError> {
    tokens
        .post(
            account,
            "externalcontact/groupchat/get",
            "/cgi-bin/externalcontact/groupchat/get",
            &GetBody {
                chat_id,
                need_name: 1,
            },
        )
        .await
}

/// `externalcontact/groupchat/add_join_way`: sent once, as each call makes a new code.
pub async fn add_join_way(
    tokens: &TokenAuthority,
    account: &Account,
    way: &NewJoinWay<'_>,
) -> Result<JoinWayCreated, TokenError> {
    tokens
        .post_once(
            account,
            "externalcontact/groupchat/add_join_way",
            "/cgi-bin/externalcontact/groupchat/add_join_way",
            way,
        )
        .await
}

/// `externalcontact/groupchat/get_join_way`: the code's QR image URL.
pub async fn get_join_way(
    tokens: &TokenAuthority,
    account: &Account,
    config_id: &str,
) -> Result<JoinWayAnswer, TokenError> {
    tokens
        .post(
            account,
            "externalcontact/groupchat/get_join_way",
            "/cgi-bin/externalcontact/groupchat/get_join_way",
            &ConfigId { config_id },
        )
        .await
}
