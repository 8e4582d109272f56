//! The fake's mass sends, tags and WeCom group messages, as WeChat documents them:
//! - `message/mass/send` takes 2 to 10,000 openids (40130 otherwise) and `mass/sendall` a
//!   `filter` (`is_to_all` or `tag_id`); both need a message of the named `msgtype` (40008
//!   otherwise). A `clientmsgid` already used by this account within 24 hours is not sent
//!   again: the answer is 45065 with the msg_id of the first send.
//! - `mass/preview` (one `touser`), `mass/delete`, `mass/get` (`msg_status` SEND_SUCCESS, or
//!   DELETE once deleted).
//! - `tags/create` (45158 name over 30 characters, 45157 name taken),
//!   `tags/members/batchtagging` / `batchuntagging` (at most 50 openids: 40032; unknown tag:
//!   45159).
//! - WeCom `externalcontact/add_msg_template` (at most 10,000 `external_userid`; a `sender`;
//!   contacts whose id starts with `wmFail` land in `fail_list`) and `get_groupmsg_task` (the
//!   sender's task, status 0 until [`FakeWeChat::confirm_group_message`], then 2);
//!   `cancel_groupmsg_send` stops a group message (41063 for an unknown msgid).
//!
//! Every mass-send answer is recorded ([`MassSend`]), accepted or not, so that a test can count
//! the sends WeChat *accepted* per clientmsgid, which is what reaches followers. Answers can be
//! slowed after the send was accepted ([`FakeWeChat::slow_mass_sends`]): the send happened, its
//! answer arrives late (or never, for a client that gave up), as with a timeout.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};

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
    /// WeCom msgid → (sender, confirmed).
    templates: HashMap<String, (String, bool)>,
    template_bodies: Vec<Value>,
}

const MSGTYPES: &[&str] = &["mpnews", "text", "voice", "image", "mpvideo", "wxcard"];

pub(super) fn handles(path: &str) -> bool {
    path.starts_with("/cgi-bin/message/mass/")
        || path.starts_with("/cgi-bin/tags/")
        || path == "/cgi-bin/externalcontact/add_msg_template"
        || path == "/cgi-bin/externalcontact/get_groupmsg_task"
        || path == "/cgi-bin/externalcontact/cancel_groupmsg_send"
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
            let id = 100 + tags.len() as u64;
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
        "/cgi-bin/externalcontact/add_msg_template" => {
            let ids: Vec<String> = body["external_userid"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if ids.len() > 10_000 {
                return (error(40058, "external_userid exceeds 10000"), None);
            }
            let sender = body["sender"].as_str().unwrap_or_default();
            if body["chat_type"] == "single" && sender.is_empty() {
                return (error(40058, "sender required for chat_type single"), None);
            }
            if body.get("text").is_none() && body.get("attachments").is_none() {
                return (error(41048, "text or attachments required"), None);
            }
            m.template_bodies.push(body.clone());
            m.next_id += 1;
            let msgid = format!("msgGCAAA{}", m.next_id);
            m.templates
                .insert(msgid.clone(), (sender.to_owned(), false));
            let fail: Vec<&String> = ids.iter().filter(|i| i.starts_with("wmFail")).collect();
            (
                json!({"errcode": 0, "errmsg": "ok", "fail_list": fail, "msgid": msgid}),
                None,
            )
        }
        "/cgi-bin/externalcontact/get_groupmsg_task" => {
            let msgid = body["msgid"].as_str().unwrap_or_default();
            match m.templates.get(msgid) {
                Some((sender, confirmed)) => (
                    json!({"errcode": 0, "errmsg": "ok", "task_list": [
                        {"userid": sender, "status": if *confirmed { 2 } else { 0 }}
                    ]}),
                    None,
                ),
                None => (error(41063, "msgid not found"), None),
            }
        }
        "/cgi-bin/externalcontact/cancel_groupmsg_send" => {
            let msgid = body["msgid"].as_str().unwrap_or_default();
            if m.templates.remove(msgid).is_some() {
                (ok(), None)
            } else {
                (error(41063, "msgid not found"), None)
            }
        }
        _ => (error(48001, "api unauthorized"), None),
    }
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

    /// The sender confirms the WeCom group message `msgid` in their client.
    pub fn confirm_group_message(&self, msgid: &str) {
        if let Some(t) = self.state().mass.templates.get_mut(msgid) {
            t.1 = true;
        }
    }
}
