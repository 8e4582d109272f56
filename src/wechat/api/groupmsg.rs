//! WeCom customer group messages (客户群发, `externalcontact/*groupmsg*`): a message becomes a
//! task for the sending member (`add_msg_template`), who confirms it in WeCom; the lists and
//! results tell what became of it, and `cancel_groupmsg_send` stops it for the members who have
//! not sent it yet.
//!
//! `add_msg_template` is sent once ([`super::Attempts::Once`]): WeCom does not de-duplicate it, so a
//! repeat would be a second task for the sender; a caller whose answer was lost looks for the
//! send in `get_groupmsg_list_v2` and `get_groupmsg_send_result` instead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::Empty;

/// Most entries WeCom lists on one page of `get_groupmsg_send_result` and `get_groupmsg_task`.
const RESULT_PAGE: u32 = 1000;
/// Most group messages on one page of `get_groupmsg_list_v2`.
const LIST_PAGE: u32 = 100;

/// The answer of `add_msg_template`.
#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    pub msgid: String,
    /// The external contacts the message cannot reach.
    #[serde(default)]
    pub fail_list: Vec<String>,
}

/// A page of `get_groupmsg_list_v2`.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupMsgList {
    #[serde(default)]
    pub group_msg_list: Vec<GroupMsg>,
    /// Empty on the last page.
    #[serde(default)]
    pub next_cursor: String,
}

/// A group message as `get_groupmsg_list_v2` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupMsg {
    pub msgid: String,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub attachments: Vec<Value>,
}

/// A page of `get_groupmsg_send_result`.
#[derive(Debug, Clone, Deserialize)]
pub struct SendResult {
    #[serde(default)]
    pub send_list: Vec<SendEntry>,
    /// Empty on the last page.
    #[serde(default)]
    pub next_cursor: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SendEntry {
    #[serde(default)]
    pub external_userid: String,
    /// The customer group, for a message of `chat_type` group.
    #[serde(default)]
    pub chat_id: String,
}

/// The answer of `get_groupmsg_task`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tasks {
    #[serde(default)]
    pub task_list: Vec<Task>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    pub userid: String,
    /// 2: the member sent (confirmed) it.
    #[serde(default)]
    pub status: i64,
}

/// One `add_msg_template` call (developer.work.weixin.qq.com/document/path/92135): the
/// recipients of one batch, what the job adds to every call, and the message in WeCom's shape
/// (`{"text": {"content"}, "attachments": [...]}`).
#[derive(Debug, Clone, Copy)]
pub struct GroupMessageCall<'a> {
    /// `single` (customers) or `group` (customer groups).
    pub chat_type: &'a str,
    /// external_userids (`single`) or chat_ids (`group`) of this batch; empty: none listed.
    pub recipients: &'a [String],
    pub sender: &'a str,
    pub tag_filter: Option<&'a Value>,
    pub allow_select: bool,
    pub content: &'a Value,
}

#[derive(Serialize)]
struct AddMsgTemplate<'a> {
    chat_type: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    external_userid: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    chat_id_list: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_filter: Option<&'a Value>,
    sender: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    allow_select: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<&'a Value>,
}

impl<'a> From<GroupMessageCall<'a>> for AddMsgTemplate<'a> {
    fn from(c: GroupMessageCall<'a>) -> Self {
        let group = c.chat_type == "group";
        Self {
            chat_type: c.chat_type,
            external_userid: if group { &[] } else { c.recipients },
            chat_id_list: if group { c.recipients } else { &[] },
            tag_filter: c.tag_filter,
            sender: c.sender,
            allow_select: c.allow_select,
            text: c.content.get("text"),
            attachments: c.content.get("attachments"),
        }
    }
}

#[derive(Serialize)]
struct ListV2<'a> {
    chat_type: &'a str,
    start_time: u64,
    end_time: u64,
    /// 0: created by anyone.
    filter_type: u8,
    limit: u32,
    cursor: &'a str,
}

#[derive(Serialize)]
struct SendResultQuery<'a> {
    msgid: &'a str,
    userid: &'a str,
    limit: u32,
    cursor: &'a str,
}

#[derive(Serialize)]
struct TaskQuery<'a> {
    msgid: &'a str,
    limit: u32,
}

#[derive(Serialize)]
struct Cancel<'a> {
    msgid: &'a str,
}

/// `cgi-bin/externalcontact/add_msg_template`: a group message, as a task for the member
/// `sender`. Sent once (see the module comment).
pub async fn add_msg_template(
    tokens: &TokenAuthority,
    account: &Account,
    call: GroupMessageCall<'_>,
) -> Result<Template, TokenError> {
    tokens
        .post_once(
            account,
            "externalcontact/add_msg_template",
            "/cgi-bin/externalcontact/add_msg_template",
            &AddMsgTemplate::from(call),
        )
        .await
}

/// `cgi-bin/externalcontact/get_groupmsg_list_v2`: a page of the group messages of `chat_type`
/// (`single` or `group`) created between `start_time` and `end_time` (unix seconds) by anyone,
/// from `cursor` (empty: the first page).
pub async fn get_groupmsg_list_v2(
    tokens: &TokenAuthority,
    account: &Account,
    chat_type: &str,
    start_time: u64,
    end_time: u64,
    cursor: &str,
) -> Result<GroupMsgList, TokenError> {
    let body = ListV2 {
        chat_type,
        start_time,
        end_time,
        filter_type: 0,
        limit: LIST_PAGE,
        cursor,
    };
    tokens
        .post(
            account,
            "externalcontact/get_groupmsg_list_v2",
            "/cgi-bin/externalcontact/get_groupmsg_list_v2",
            &body,
        )
        .await
}

/// `cgi-bin/externalcontact/get_groupmsg_send_result`: a page of whom the member `userid` sent
/// the group message `msgid` to, from `cursor` (empty: the first page).
pub async fn get_groupmsg_send_result(
    tokens: &TokenAuthority,
    account: &Account,
    msgid: &str,
    userid: &str,
    cursor: &str,
) -> Result<SendResult, TokenError> {
    let body = SendResultQuery {
        msgid,
        userid,
        limit: RESULT_PAGE,
        cursor,
    };
    tokens
        .post(
            account,
            "externalcontact/get_groupmsg_send_result",
            "/cgi-bin/externalcontact/get_groupmsg_send_result",
            &body,
        )
        .await
}

/// `cgi-bin/externalcontact/get_groupmsg_task`: which members have sent the group message.
pub async fn get_groupmsg_task(
    tokens: &TokenAuthority,
    account: &Account,
    msgid: &str,
) -> Result<Tasks, TokenError> {
    let body = TaskQuery {
        msgid,
        limit: RESULT_PAGE,
    };
    tokens
        .post(
            account,
            "externalcontact/get_groupmsg_task",
            "/cgi-bin/externalcontact/get_groupmsg_task",
            &body,
        )
        .await
}

/// `cgi-bin/externalcontact/cancel_groupmsg_send`: stops the group message for the members
/// who have not sent it yet.
pub async fn cancel_groupmsg_send(
    tokens: &TokenAuthority,
    account: &Account,
    msgid: &str,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "externalcontact/cancel_groupmsg_send",
            "/cgi-bin/externalcontact/cancel_groupmsg_send",
            &Cancel { msgid },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_chat_type_sends_the_fields_wecom_documents_for_it() {
        let ids = ["wm1".to_owned()];
        let content = json!({"text": {"content": "hi"},
            "attachments": [{"msgtype": "image", "image": {"media_id": "M"}}]});
        let filter = json!({"group_list": [{"tag_list": ["et1"]}]});
        let single = GroupMessageCall {
            chat_type: "single",
            recipients: &ids,
            sender: "zhangsan",
            tag_filter: Some(&filter),
            allow_select: true,
            content: &content,
        };
        assert_eq!(
            serde_json::to_value(AddMsgTemplate::from(single)).unwrap(),
            json!({"chat_type": "single", "external_userid": ["wm1"], "sender": "zhangsan",
                "tag_filter": filter, "allow_select": true, "text": {"content": "hi"},
                "attachments": [{"msgtype": "image", "image": {"media_id": "M"}}]})
        );
        let chats = ["wrChat1".to_owned()];
        let text = json!({"text": {"content": "hi"}});
        let group = GroupMessageCall {
            chat_type: "group",
            recipients: &chats,
            sender: "owner",
            tag_filter: None,
            allow_select: false,
            content: &text,
        };
        assert_eq!(
            serde_json::to_value(AddMsgTemplate::from(group)).unwrap(),
            json!({"chat_type": "group", "chat_id_list": ["wrChat1"], "sender": "owner",
                "text": {"content": "hi"}})
        );
        let every_group = GroupMessageCall {
            recipients: &[],
            ..group
        };
        assert_eq!(
            serde_json::to_value(AddMsgTemplate::from(every_group)).unwrap(),
            json!({"chat_type": "group", "sender": "owner", "text": {"content": "hi"}})
        );
    }
}
