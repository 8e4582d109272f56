//! The fake's mass sends, tags and WeCom group messages, as WeChat documents them:
//! - `message/mass/send` takes 2 to 10,000 openids (40130 otherwise) and `mass/sendall` a
//!   `filter` (`is_to_all` or `tag_id`); both need a message of the named `msgtype` (40008
//!   otherwise). A `clientmsgid` already used by this account within 24 hours is not sent
//!   again: the answer is 45065 with the msg_id of the first send.
//! - `mass/preview` (one `touser`), `mass/delete`, `mass/get` (`msg_status` SEND_SUCCESS, or
//!   DELETE once deleted).
//! - `tags/create` (45158 name over 30 characters, 45157 name taken),
//!   `tags/members/batchtagging` / `batchuntagging` (at most 50 openids: 40032; unknown tag:
//!   45159), `tags/get` (WeChat's reserved tag 2 星标组 first, then the account's, with member
//!   counts), `tags/update` and `tags/delete` (45058 for the reserved tags 0, 1 and 2, 45159 for
//!   an unknown tag, 45157 / 45158 for the name), `tags/getidlist` (40003 for an openid that is
//!   not one, else the ids of the openid's tags).
//! - WeCom `externalcontact/add_msg_template`, checked as developer.work.weixin.qq.com/document/
//!   path/92135 documents it (40058 for a request outside it): `chat_type` single (at most
//!   10,000 `external_userid`, or a `tag_filter` of groups of at most 100 tags; contacts whose
//!   id starts with `wmFail` land in `fail_list`) or group (a `sender` is required; at most
//!   2,000 `chat_id_list`, or every customer group the sender owns in the corp's profile);
//!   `text.content` at most 4,000 bytes; at most 9 `attachments`, each image (`media_id` or
//!   `pic_url`), link (`title` ≤ 128 bytes, `url`, `desc` ≤ 512 bytes), miniprogram (`title`
//!   ≤ 64 bytes, `pic_media_id`, `appid`, `page`), video or file (`media_id`). A media id the
//!   fake was told WeCom forgot ([`FakeWeChat::forget_media`]) is 40007.
//!   `get_groupmsg_task` (the sender's task, status 0 until
//!   [`FakeWeChat::confirm_group_message`], then 2); `cancel_groupmsg_send` stops a group
//!   message (41063 for an unknown msgid).
//! - WeCom's record of group messages, as developer.work.weixin.qq.com/document/path/93338
//!   documents it: `get_groupmsg_list_v2` (`chat_type`, `start_time`/`end_time` at most a
//!   month apart, `creator`, `filter_type` 0 enterprise / 1 personal / 2 all, `limit` at most
//!   100, default 50, `cursor` → `next_cursor`, empty on the last page; a message created
//!   through the API has no `creator`, so a `creator` filter does not find it; a message is
//!   listed under its own `chat_type` only) and `get_groupmsg_send_result` (`msgid`, `userid`,
//!   `limit` at most 1000, default 500, `cursor`; `send_list` of `external_userid` (or
//!   `chat_id` for a message to customer groups), `userid`, `status` 0 not sent / 1 sent).
//!   [`FakeWeChat::lose_group_message_answers`] makes `add_msg_template` create the message
//!   and then never answer in time, as when the answer is lost.
//!
//! Every mass-send answer is recorded ([`MassSend`]), accepted or not, so that a test can count
//! the sends WeChat *accepted* per clientmsgid, which is what reaches followers. Answers can be
//! slowed after the send was accepted ([`FakeWeChat::slow_mass_sends`]): the send happened, its
//! answer arrives late (or never, for a client that gave up), as with a timeout.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};

use wechat_gateway::sandbox::wecom_profile::Profile;

use super::FakeWeChat;

/// One answered `mass/send` / `mass/sendall` call.
#[derive(Debug, Clone)]
pub struct MassSend {
    pub path: String,
    pub clientmsgid: String,
    pub touser: Vec<String>,
    pub filter: Value,
    /// 0 when accepted; 45065 for a repeat of a clientmsgid; another errcode when refused.
    pub errcode: i64,
    pub msg_id: i64,
}

impl MassSend {
    pub fn accepted(&self) -> bool {
        self.errcode == 0
    }
}

#[derive(Default)]
pub(super) struct Mass {
    sends: Vec<MassSend>,
    /// (credential, clientmsgid) → msg_id.
    by_cmid: HashMap<(String, String), i64>,
    next_id: i64,
    deleted: HashSet<i64>,
    previews: Vec<Value>,
    /// Delays of the next accepted sends' answers.
    slow: VecDeque<Duration>,
    /// credential → tag name → id.
    tags: HashMap<String, HashMap<String, u64>>,
    /// (credential, tag id) → openids.
    members: HashMap<(String, u64), HashSet<String>>,
    /// WeCom group messages, in creation order.
    group_msgs: Vec<GroupMsg>,
    template_bodies: Vec<Value>,
    /// How many coming `add_msg_template` answers are lost.
    lose_templates: usize,
    /// Media ids WeCom no longer knows (40007).
    forgotten_media: HashSet<String>,
}

/// A WeCom group message as WeCom keeps it; every one is created through the API (the fake
/// has no members creating their own), so none has a `creator`.
struct GroupMsg {
    credential: String,
    msgid: String,
    /// `single` or `group`.
    chat_type: String,
    sender: String,
    /// Made by [`FakeWeChat::seed_group_message`], not by the gateway.
    seeded: bool,
    /// The contacts it can reach (the request's, without its `fail_list`).
    recipients: Vec<String>,
    text: Value,
    attachments: Value,
    create_time: u64,
    confirmed: bool,
    cancelled: bool,
}

/// How long a lost `add_msg_template` answer is held: far past any gateway deadline.
const LOST: Duration = Duration::from_secs(120);

const MSGTYPES: &[&str] = &["mpnews", "text", "voice", "image", "mpvideo", "wxcard"];

pub(super) fn handles(path: &str) -> bool {
    path.starts_with("/cgi-bin/message/mass/")
        || path.starts_with("/cgi-bin/tags/")
        || path == "/cgi-bin/externalcontact/add_msg_template"
        || path == "/cgi-bin/externalcontact/get_groupmsg_task"
        || path == "/cgi-bin/externalcontact/cancel_groupmsg_send"
        || path == "/cgi-bin/externalcontact/get_groupmsg_list_v2"
        || path == "/cgi-bin/externalcontact/get_groupmsg_send_result"
}

fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

/// The answer, and how long to hold it back.
pub(super) fn answer(
    m: &mut Mass,
    profile: Option<&Profile>,
    credential: &str,
    path: &str,
    body: &Value,
) -> (Value, Option<Duration>) {
    if m.next_id == 0 {
        m.next_id = 1_000_000_001;
    }
    match path {
        "/cgi-bin/message/mass/send" | "/cgi-bin/message/mass/sendall" => {
            mass_send(m, credential, path, body)
        }
        "/cgi-bin/message/mass/preview" => {
            if !body["touser"].is_string() {
                return (error(40003, "invalid openid"), None);
            }
            if let Err(e) = check_message(body) {
                return (e, None);
            }
            m.previews.push(body.clone());
            m.next_id += 1;
            (
                json!({"errcode": 0, "errmsg": "preview success", "msg_id": m.next_id}),
                None,
            )
        }
        "/cgi-bin/message/mass/delete" => {
            let Some(id) = body["msg_id"].as_i64() else {
                return (error(44002, "empty post data"), None);
            };
            m.deleted.insert(id);
            (ok(), None)
        }
        "/cgi-bin/message/mass/get" => {
            let Some(id) = body["msg_id"].as_i64() else {
                return (error(44002, "empty post data"), None);
            };
            let status = if m.deleted.contains(&id) {
                "DELETE"
            } else {
                "SEND_SUCCESS"
            };
            (json!({"msg_id": id, "msg_status": status}), None)
        }
        "/cgi-bin/tags/create" => {
            let name = body["tag"]["name"].as_str().unwrap_or_default();
            if name.is_empty() || name.chars().count() > 30 {
                return (error(45158, "tag name too long"), None);
            }
            let tags = m.tags.entry(credential.to_owned()).or_default();
            if tags.contains_key(name) {
                return (error(45157, "invalid tag name"), None);
            }
            // Never an id used before, also after a delete.
            let id = tags.values().max().map_or(100, |last| last + 1);
            tags.insert(name.to_owned(), id);
            (json!({"tag": {"id": id, "name": name}}), None)
        }
        "/cgi-bin/tags/members/batchtagging" | "/cgi-bin/tags/members/batchuntagging" => {
            let list: Vec<String> = body["openid_list"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if list.is_empty() || list.len() > 50 {
                return (error(40032, "invalid openid list length"), None);
            }
            let tag = body["tagid"].as_u64().unwrap_or(0);
            let known = m
                .tags
                .get(credential)
                .is_some_and(|t| t.values().any(|id| *id == tag));
            if !known {
                return (error(45159, "invalid tag id"), None);
            }
            let members = m.members.entry((credential.to_owned(), tag)).or_default();
            for id in list {
                if path.ends_with("batchtagging") {
                    members.insert(id);
                } else {
                    members.remove(&id);
                }
            }
            (ok(), None)
        }
        "/cgi-bin/tags/get" => (list_tags(m, credential), None),
        "/cgi-bin/tags/update" | "/cgi-bin/tags/delete" => {
            (change_tag(m, credential, path, body), None)
        }
        "/cgi-bin/tags/getidlist" => {
            let openid = body["openid"].as_str().unwrap_or_default();
            if !openid.starts_with('o') || openid.len() < 2 {
                return (error(40003, "invalid openid"), None);
            }
            let mut ids: Vec<u64> = m
                .members
                .iter()
                .filter(|((c, _), members)| c == credential && members.contains(openid))
                .map(|((_, id), _)| *id)
                .collect();
            ids.sort_unstable();
            (json!({"tagid_list": ids}), None)
        }
        "/cgi-bin/externalcontact/add_msg_template" => {
            let (chat_type, reach) = match check_group_message(m, profile, body) {
                Ok(checked) => checked,
                Err(e) => return (e, None),
            };
            let sender = body["sender"].as_str().unwrap_or_default();
            m.template_bodies.push(body.clone());
            let (fail, reach): (Vec<String>, Vec<String>) =
                reach.into_iter().partition(|i| i.starts_with("wmFail"));
            let msgid = new_group_msg(m, credential, chat_type, sender, false, reach, body);
            let lost = (m.lose_templates > 0).then(|| {
                m.lose_templates -= 1;
                LOST
            });
            (
                json!({"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": msgid}),
                lost,
            )
        }
        "/cgi-bin/externalcontact/get_groupmsg_task" => {
            let msgid = body["msgid"].as_str().unwrap_or_default();
            match group_msg(m, credential, msgid) {
                Some(g) => (
                    json!({"errcode": 0, "errmsg": "ok", "task_list": [
                        {"userid": g.sender, "status": if g.confirmed { 2 } else { 0 }}
                    ]}),
                    None,
                ),
                None => (error(41063, "msgid not found"), None),
            }
        }
        "/cgi-bin/externalcontact/cancel_groupmsg_send" => {
            let msgid = body["msgid"].as_str().unwrap_or_default();
            match m
                .group_msgs
                .iter_mut()
                .find(|g| g.credential == credential && g.msgid == msgid && !g.cancelled)
            {
                Some(g) => {
                    g.cancelled = true;
                    (ok(), None)
                }
                None => (error(41063, "msgid not found"), None),
            }
        }
        "/cgi-bin/externalcontact/get_groupmsg_list_v2" => {
            (group_msg_list(m, credential, body), None)
        }
        "/cgi-bin/externalcontact/get_groupmsg_send_result" => {
            (group_msg_send_result(m, credential, body), None)
        }
        _ => (error(48001, "api unauthorized"), None),
    }
}

/// `add_msg_template`'s checks (module comment): its `chat_type` and whom it reaches, or the
/// error WeCom answers.
fn check_group_message(
    m: &Mass,
    profile: Option<&Profile>,
    body: &Value,
) -> Result<(&'static str, Vec<String>), Value> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let sender = body["sender"].as_str().unwrap_or_default();
    let chat_type = match body["chat_type"].as_str().unwrap_or("single") {
        "single" => "single",
        "group" => "group",
        _ => return Err(error(40058, "invalid chat_type")),
    };
    let reach = if chat_type == "group" {
        if sender.is_empty() {
            return Err(error(40058, "sender required for chat_type group"));
        }
        let chats = strings(&body["chat_id_list"]);
        if chats.len() > 2000 {
            return Err(error(40058, "chat_id_list exceeds 2000"));
        }
        if chats.is_empty() {
            profile.map(|p| p.chats_of(sender)).unwrap_or_default()
        } else {
            chats
        }
    } else {
        let ids = strings(&body["external_userid"]);
        if ids.len() > 10_000 {
            return Err(error(40058, "external_userid exceeds 10000"));
        }
        let groups = body["tag_filter"]["group_list"].as_array();
        if body.get("tag_filter").is_some()
            && groups.is_none_or(|g| {
                g.is_empty()
                    || g.iter().any(|g| {
                        g["tag_list"]
                            .as_array()
                            .is_none_or(|t| t.is_empty() || t.len() > 100)
                    })
            })
        {
            return Err(error(40058, "invalid tag_filter"));
        }
        if ids.is_empty() && groups.is_none() {
            return Err(error(40058, "external_userid or tag_filter required"));
        }
        ids
    };
    let text = body["text"]["content"].as_str();
    if body.get("text").is_some() && text.is_none_or(|t| t.is_empty() || t.len() > 4000) {
        return Err(error(40058, "invalid text.content"));
    }
    let attachments = match body.get("attachments") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 9 => a.clone(),
        Some(_) => return Err(error(40058, "attachments: at most 9")),
    };
    if text.is_none() && attachments.is_empty() {
        return Err(error(41048, "text or attachments required"));
    }
    for a in &attachments {
        let kind = a["msgtype"].as_str().unwrap_or_default();
        let f = &a[kind];
        let has = |k: &str| f[k].as_str().is_some_and(|s| !s.is_empty());
        let len = |k: &str| f[k].as_str().map_or(0, str::len);
        let ok = match kind {
            "image" => has("media_id") || has("pic_url"),
            "link" => has("title") && has("url") && len("title") <= 128 && len("desc") <= 512,
            "miniprogram" => {
                has("title")
                    && len("title") <= 64
                    && has("pic_media_id")
                    && has("appid")
                    && has("page")
            }
            "video" | "file" => has("media_id"),
            _ => false,
        };
        if !ok {
            return Err(error(40058, &format!("invalid attachment {kind}")));
        }
        for key in ["media_id", "pic_media_id"] {
            if f[key]
                .as_str()
                .is_some_and(|id| m.forgotten_media.contains(id))
            {
                return Err(error(40007, "invalid media_id"));
            }
        }
    }
    Ok((chat_type, reach))
}

fn new_group_msg(
    m: &mut Mass,
    credential: &str,
    chat_type: &str,
    sender: &str,
    seeded: bool,
    recipients: Vec<String>,
    body: &Value,
) -> String {
    m.next_id += 1;
    let msgid = format!("msgGCAAA{}", m.next_id);
    m.group_msgs.push(GroupMsg {
        credential: credential.to_owned(),
        msgid: msgid.clone(),
        chat_type: chat_type.to_owned(),
        sender: sender.to_owned(),
        seeded,
        recipients,
        text: body["text"].clone(),
        attachments: body["attachments"].clone(),
        create_time: unix_now(),
        confirmed: false,
        cancelled: false,
    });
    msgid
}

/// A group message that `get_groupmsg_task` and `cancel_groupmsg_send` still know.
fn group_msg<'a>(m: &'a Mass, credential: &str, msgid: &str) -> Option<&'a GroupMsg> {
    m.group_msgs
        .iter()
        .find(|g| g.credential == credential && g.msgid == msgid && !g.cancelled)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A page size as 93338 documents it: over the maximum (or absent) is the default.
fn page_limit(body: &Value, default: usize, max: usize) -> usize {
    match body["limit"].as_u64() {
        Some(n) if n >= 1 && n as usize <= max => n as usize,
        _ => default,
    }
}

/// The offset a cursor of ours stands for; an empty or absent cursor is the first page.
fn page_start(body: &Value) -> Result<usize, Value> {
    match body["cursor"].as_str().unwrap_or_default() {
        "" => Ok(0),
        c => c
            .strip_prefix("CURSOR")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| error(40058, "invalid cursor")),
    }
}

fn next_cursor(end: usize, total: usize) -> String {
    if end < total {
        format!("CURSOR{end}")
    } else {
        String::new()
    }
}

/// `get_groupmsg_list_v2` (93338).
fn group_msg_list(m: &Mass, credential: &str, body: &Value) -> Value {
    let (Some(start), Some(end)) = (body["start_time"].as_u64(), body["end_time"].as_u64()) else {
        return error(40058, "start_time and end_time required");
    };
    if end < start || end - start > 31 * 24 * 3600 {
        return error(
            40058,
            "the interval between start_time and end_time exceeds one month",
        );
    }
    let chat_type = body["chat_type"].as_str().unwrap_or("single");
    // Every message here was created through the API: by the enterprise (filter_type 0 or 2,
    // not 1 "personal"), with no creator (so a creator filter matches none of them).
    let personal = body["filter_type"].as_u64() == Some(1);
    let by_creator = !body["creator"].as_str().unwrap_or_default().is_empty();
    let matching: Vec<&GroupMsg> = m
        .group_msgs
        .iter()
        .filter(|g| g.credential == credential && !personal && !by_creator)
        .filter(|g| g.chat_type == chat_type)
        .filter(|g| (start..=end).contains(&g.create_time))
        .collect();
    let from = match page_start(body) {
        Ok(n) => n.min(matching.len()),
        Err(e) => return e,
    };
    let to = (from + page_limit(body, 50, 100)).min(matching.len());
    let list: Vec<Value> = matching[from..to]
        .iter()
        .map(|g| {
            let mut v = json!({"msgid": g.msgid, "create_time": g.create_time, "create_type": 0});
            if !g.text.is_null() {
                v["text"] = g.text.clone();
            }
            if !g.attachments.is_null() {
                v["attachments"] = g.attachments.clone();
            }
            v
        })
        .collect();
    json!({"errcode": 0, "errmsg": "ok", "next_cursor": next_cursor(to, matching.len()),
           "group_msg_list": list})
}

/// `get_groupmsg_send_result` (93338): one entry per contact of the sender's task.
fn group_msg_send_result(m: &Mass, credential: &str, body: &Value) -> Value {
    let msgid = body["msgid"].as_str().unwrap_or_default();
    let userid = body["userid"].as_str().unwrap_or_default();
    if userid.is_empty() {
        return error(40058, "userid required");
    }
    let Some(g) = m
        .group_msgs
        .iter()
        .find(|g| g.credential == credential && g.msgid == msgid)
    else {
        return error(41063, "msgid not found");
    };
    let listed: &[String] = if g.sender == userid {
        &g.recipients
    } else {
        &[]
    };
    let from = match page_start(body) {
        Ok(n) => n.min(listed.len()),
        Err(e) => return e,
    };
    let to = (from + page_limit(body, 500, 1000)).min(listed.len());
    let list: Vec<Value> = listed[from..to]
        .iter()
        .map(|id| {
            let to = if g.chat_type == "group" {
                "chat_id"
            } else {
                "external_userid"
            };
            json!({to: id, "userid": g.sender, "status": if g.confirmed { 1 } else { 0 }})
        })
        .collect();
    json!({"errcode": 0, "errmsg": "ok", "next_cursor": next_cursor(to, listed.len()),
           "send_list": list})
}

fn check_message(body: &Value) -> Result<(), Value> {
    let msgtype = body["msgtype"].as_str().unwrap_or_default();
    if !MSGTYPES.contains(&msgtype) || !body[msgtype].is_object() {
        return Err(error(40008, "invalid message type"));
    }
    Ok(())
}

fn mass_send(
    m: &mut Mass,
    credential: &str,
    path: &str,
    body: &Value,
) -> (Value, Option<Duration>) {
    let touser: Vec<String> = body["touser"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let clientmsgid = body["clientmsgid"].as_str().unwrap_or_default().to_owned();
    let mut record = MassSend {
        path: path.to_owned(),
        clientmsgid: clientmsgid.clone(),
        touser: touser.clone(),
        filter: body["filter"].clone(),
        errcode: 0,
        msg_id: 0,
    };
    let refused = if path.ends_with("/send") && !(2..=10_000).contains(&touser.len()) {
        Some(error(
            40130,
            "invalid openid list size, at least two openid",
        ))
    } else if path.ends_with("/sendall") && !body["filter"].is_object() {
        Some(error(44002, "empty post data"))
    } else {
        check_message(body).err()
    };
    if let Some(e) = refused {
        record.errcode = e["errcode"].as_i64().unwrap_or(-1);
        m.sends.push(record);
        return (e, None);
    }
    let key = (credential.to_owned(), clientmsgid.clone());
    if !clientmsgid.is_empty() {
        if let Some(&existing) = m.by_cmid.get(&key) {
            record.errcode = 45065;
            record.msg_id = existing;
            m.sends.push(record);
            return (
                json!({"errcode": 45065, "errmsg": "clientmsgid exist", "msg_id": existing}),
                None,
            );
        }
    }
    m.next_id += 1;
    let msg_id = m.next_id;
    if !clientmsgid.is_empty() {
        m.by_cmid.insert(key, msg_id);
    }
    record.msg_id = msg_id;
    m.sends.push(record);
    (
        json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id,
               "msg_data_id": msg_id + 5_000_000_000}),
        m.slow.pop_front(),
    )
}

impl FakeWeChat {
    /// Every answered mass send, in order (accepted, repeated and refused alike).
    pub fn mass_sends(&self) -> Vec<MassSend> {
        self.state().mass.sends.clone()
    }

    /// The next `times` accepted mass sends answer only after `delay` (queued after earlier
    /// calls: `Duration::ZERO` first leaves a send as it is and slows the one after).
    pub fn slow_mass_sends(&self, times: usize, delay: Duration) {
        self.state()
            .mass
            .slow
            .extend(std::iter::repeat_n(delay, times));
    }

    /// The openids the tag has now.
    pub fn tag_members(&self, credential: &str, tag: u64) -> HashSet<String> {
        self.state()
            .mass
            .members
            .get(&(credential.to_owned(), tag))
            .cloned()
            .unwrap_or_default()
    }

    /// Every `mass/preview` body received.
    pub fn previews(&self) -> Vec<Value> {
        self.state().mass.previews.clone()
    }

    /// Every `add_msg_template` body accepted.
    pub fn group_messages(&self) -> Vec<Value> {
        self.state().mass.template_bodies.clone()
    }

    /// The msgids of the group messages `add_msg_template` created, in order.
    pub fn group_message_ids(&self) -> Vec<String> {
        self.state()
            .mass
            .group_msgs
            .iter()
            .filter(|g| !g.seeded)
            .map(|g| g.msgid.clone())
            .collect()
    }

    /// The sender confirms the WeCom group message `msgid` in their client.
    pub fn confirm_group_message(&self, msgid: &str) {
        let mut state = self.state();
        if let Some(g) = state.mass.group_msgs.iter_mut().find(|g| g.msgid == msgid) {
            g.confirmed = true;
        }
    }

    /// The next `times` `add_msg_template` calls create their group message, then hold the
    /// answer far past the gateway's deadline: the answer is lost.
    pub fn lose_group_message_answers(&self, times: usize) {
        self.state().mass.lose_templates += times;
    }

    /// A group message to customer groups (`chat_type` group) created for `corp` by another
    /// system through the API, with `content` (`{"text", "attachments"}`); returns its msgid.
    pub fn seed_group_chat_message(
        &self,
        corp: &str,
        sender: &str,
        content: &Value,
        chats: &[&str],
    ) -> String {
        let mut state = self.state();
        let m = &mut state.mass;
        if m.next_id == 0 {
            m.next_id = 1_000_000_001;
        }
        let chats = chats.iter().map(|r| (*r).to_owned()).collect();
        new_group_msg(m, corp, "group", sender, true, chats, content)
    }

    /// From now on WeCom answers 40007 (invalid media_id) for a group message naming
    /// `media_id`: its 3 days are over.
    pub fn forget_media(&self, media_id: &str) {
        self.state()
            .mass
            .forgotten_media
            .insert(media_id.to_owned());
    }

    /// A text group message created for `corp` by another system through the API, as WeCom
    /// would list it; returns its msgid.
    pub fn seed_group_message(
        &self,
        corp: &str,
        sender: &str,
        content: &str,
        recipients: &[&str],
    ) -> String {
        let mut state = self.state();
        let m = &mut state.mass;
        if m.next_id == 0 {
            m.next_id = 1_000_000_001;
        }
        let body = json!({"text": {"content": content}});
        let recipients = recipients.iter().map(|r| (*r).to_owned()).collect();
        new_group_msg(m, corp, "single", sender, true, recipients, &body)
    }
}

fn list_tags(m: &Mass, credential: &str) -> Value {
    let count = |id: u64| {
        m.members
            .get(&(credential.to_owned(), id))
            .map_or(0, HashSet::len)
    };
    let mut tags: Vec<(u64, &String)> = m
        .tags
        .get(credential)
        .map(|t| t.iter().map(|(name, id)| (*id, name)).collect())
        .unwrap_or_default();
    tags.sort_unstable();
    let star = "星标组".to_owned();
    let list: Vec<Value> = std::iter::once((2, &star))
        .chain(tags)
        .map(|(id, name)| json!({"id": id, "name": name, "count": count(id)}))
        .collect();
    json!({"tags": list})
}

/// `tags/update` and `tags/delete`.
fn change_tag(m: &mut Mass, credential: &str, path: &str, body: &Value) -> Value {
    let Some(id) = body["tag"]["id"].as_u64() else {
        return error(44002, "empty post data");
    };
    if id <= 2 {
        return error(45058, "can't modify sys tag");
    }
    let tags = m.tags.entry(credential.to_owned()).or_default();
    let Some(old) = tags.iter().find(|(_, t)| **t == id).map(|(n, _)| n.clone()) else {
        return error(45159, "invalid tag id");
    };
    if path.ends_with("delete") {
        tags.remove(&old);
        m.members.remove(&(credential.to_owned(), id));
        return ok();
    }
    let name = body["tag"]["name"].as_str().unwrap_or_default();
    if name.is_empty() || name.chars().count() > 30 {
        return error(45158, "tag name too long");
    }
    if name != old && tags.contains_key(name) {
        return error(45157, "invalid tag name");
    }
    tags.remove(&old);
    tags.insert(name.to_owned(), id);
    ok()
}
