//! Broadcast (mass-send) requests, checked once at the edge: the audience, the message, and the
//! plan of batches that a job sends. No I/O here.
//!
//! WeChat's rules (群发接口: `mass/sendall`, `mass/send`): an openid list takes 2 to 10,000
//! openids a call; `clientmsgid` is at most 64 bytes and de-duplicates a send for 24 hours; the
//! message types of a mass send are mpnews, text, voice, image, mpvideo and wxcard;
//! `send_ignore_reprint` is 0 or 1.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::group_message::GroupMessage;
use super::Platform;

/// Most openids one `mass/send` call takes.
pub const MAX_BATCH: usize = 10_000;
/// Fewest openids one `mass/send` call takes.
pub const MIN_BATCH: usize = 2;
/// Longest `clientmsgid` WeChat accepts.
pub const MAX_CLIENT_MSG_ID: usize = 64;

/// Who receives a broadcast on an Official Account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every follower with this tag (`mass/sendall` with `filter.tag_id`).
    Tag(u64),
    /// Every follower (`mass/sendall` with `is_to_all`).
    All,
    /// An explicit list, de-duplicated, in batches (`mass/send`).
    OpenIds(Vec<String>),
}

impl Audience {
    /// Parses `{"tag_id": 2}`, `{"all": true}` or `{"open_ids": [...]}`.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let Some(obj) = v.as_object() else {
            return Err(
                "audience must be an object: {\"tag_id\": N}, {\"all\": true} or \
                        {\"open_ids\": [...]}"
                    .into(),
            );
        };
        let present: Vec<&str> = ["tag_id", "all", "open_ids"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if present.len() != 1 {
            return Err(format!(
                "audience needs exactly one of tag_id, all and open_ids; got {}",
                if present.is_empty() {
                    "none".to_owned()
                } else {
                    present.join(", ")
                }
            ));
        }
        match present[0] {
            "tag_id" => obj["tag_id"]
                .as_u64()
                .map(Self::Tag)
                .ok_or_else(|| "audience.tag_id must be a non-negative integer".to_owned()),
            "all" => Self::all(obj["all"].as_bool() == Some(true)),
            _ => {
                let list = obj["open_ids"]
                    .as_array()
                    .ok_or("audience.open_ids must be an array of openids")?;
                let mut ids = Vec::with_capacity(list.len());
                for (i, id) in list.iter().enumerate() {
                    let id = id
                        .as_str()
                        .ok_or_else(|| format!("audience.open_ids[{i}] must be a string"))?;
                    check_listed_open_id(i, id)?;
                    ids.push(id.to_owned());
                }
                Ok(Self::OpenIds(ids))
            }
        }
    }

    /// `all`: only `true` means everyone.
    pub fn all(all: bool) -> Result<Self, String> {
        if all {
            Ok(Self::All)
        } else {
            Err("audience.all must be true (leave it out otherwise)".into())
        }
    }

    /// An explicit list, each an openid.
    pub fn open_ids(ids: Vec<String>) -> Result<Self, String> {
        for (i, id) in ids.iter().enumerate() {
            check_listed_open_id(i, id)?;
        }
        Ok(Self::OpenIds(ids))
    }
}

fn check_listed_open_id(i: usize, id: &str) -> Result<(), String> {
    if is_open_id(id) {
        return Ok(());
    }
    Err(format!(
        "audience.open_ids[{i}] {id:?} is not an openid (1 to 64 characters of letters, digits, \
         '-' and '_')"
    ))
}

/// The shape of a WeCom audience, quoted by every refusal of one.
const EXTERNAL_SHAPE: &str = "on a WeCom account the audience is {\"external_user_ids\": [...], \
     \"sender\": \"userid\"} (optionally with \"tag_filter\" and \"allow_select\"), or \
     {\"chat_type\": \"group\", \"sender\": \"owner userid\"} (optionally with \"chat_ids\")";

/// Most external_userids one `add_msg_template` takes ("最多可一次指定1万个客户").
pub const MAX_EXTERNAL_BATCH: usize = 10_000;
/// Most customer groups one `add_msg_template` takes (`chat_id_list`, "最多可一次指定2000个客户群").
pub const MAX_CHAT_BATCH: usize = 2_000;
/// Most tags in one group of a `tag_filter` ("每组最多指定100个标签").
pub const MAX_TAGS_PER_GROUP: usize = 100;

/// WeCom's `chat_type` of a group message: to customers (`single`, the default) or to customer
/// groups (`group`, 客户群).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    #[default]
    Single,
    Group,
}

impl ChatType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Group => "group",
        }
    }

    /// `single` (also empty: the default) or `group`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "single" => Ok(Self::Single),
            "group" => Ok(Self::Group),
            other => Err(format!(
                "audience.chat_type must be \"single\" (customers) or \"group\" (customer \
                 groups), not {other:?}"
            )),
        }
    }
}

/// The audience of a broadcast on a WeCom account (客户群发, `externalcontact/add_msg_template`,
/// developer.work.weixin.qq.com/document/path/92135): the member in whose name the message goes
/// out (who must confirm it in the WeCom client before it is sent) and either
/// - `chat_type` single: external contacts, listed (batched by 10,000) and/or filtered by the
///   sender's customers' corp tags (`tag_filter`: tags within a group are OR-ed, groups AND-ed,
///   at most 100 tags a group), with `allow_select` letting the member change the list; or
/// - `chat_type` group: the customer groups the sender owns, all of them or those listed in
///   `chat_ids` (batched by 2,000). WeCom requires the sender for a group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAudience {
    pub chat_type: ChatType,
    pub external_user_ids: Vec<String>,
    pub chat_ids: Vec<String>,
    pub sender: String,
    /// `tag_filter.group_list[].tag_list`; empty: no filter.
    pub tag_filter: Vec<Vec<String>>,
    pub allow_select: bool,
}

impl ExternalAudience {
    /// Parses `{"external_user_ids": [...], "sender": "userid", "tag_filter": {"group_list":
    /// [{"tag_list": [...]}]}, "allow_select": bool}` or `{"chat_type": "group", "sender":
    /// "userid", "chat_ids": [...]}`.
    pub fn parse(v: &Value) -> Result<Self, String> {
        const KEYS: [&str; 6] = [
            "external_user_ids",
            "sender",
            "chat_type",
            "chat_ids",
            "tag_filter",
            "allow_select",
        ];
        let Some(obj) = v.as_object() else {
            return Err(EXTERNAL_SHAPE.into());
        };
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("audience.{k} is not allowed: {EXTERNAL_SHAPE}"));
        }
        let chat_type = match obj.get("chat_type") {
            None => ChatType::Single,
            Some(Value::String(s)) => ChatType::parse(s)?,
            Some(_) => return Err(ChatType::parse("?").unwrap_err()),
        };
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match obj.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(list)) => Ok(list
                    .iter()
                    .map(|s| s.as_str().unwrap_or_default().to_owned())
                    .collect()),
                Some(_) => Err(format!("audience.{key} must be an array: {EXTERNAL_SHAPE}")),
            }
        };
        let tag_filter = match obj.get("tag_filter") {
            None => Vec::new(),
            Some(f) => parse_tag_filter(f)?,
        };
        let allow_select = match obj.get("allow_select") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("audience.allow_select must be true or false".into()),
        };
        Self {
            chat_type,
            external_user_ids: strings("external_user_ids")?,
            chat_ids: strings("chat_ids")?,
            sender: obj
                .get("sender")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            tag_filter,
            allow_select,
        }
        .check()
    }

    /// External contacts and the sending member, each checked.
    pub fn new(external_user_ids: Vec<String>, sender: String) -> Result<Self, String> {
        Self {
            chat_type: ChatType::Single,
            external_user_ids,
            chat_ids: Vec::new(),
            sender,
            tag_filter: Vec::new(),
            allow_select: false,
        }
        .check()
    }

    /// Checks every rule of the module comment, in the order the JSON parse reports them.
    pub fn check(self) -> Result<Self, String> {
        check_sender(&self.sender)?;
        match self.chat_type {
            ChatType::Single => {
                if !self.chat_ids.is_empty() {
                    return Err(
                        "audience.chat_ids is for chat_type \"group\" (customer groups)".into(),
                    );
                }
                for (i, id) in self.external_user_ids.iter().enumerate() {
                    check_external_user_id(i, id)?;
                }
                if self.external_user_ids.is_empty() && self.tag_filter.is_empty() {
                    return Err(format!(
                        "audience.external_user_ids must name at least one external contact \
                         (or give a tag_filter): {EXTERNAL_SHAPE}"
                    ));
                }
            }
            ChatType::Group => {
                for (key, set) in [
                    ("external_user_ids", !self.external_user_ids.is_empty()),
                    ("tag_filter", !self.tag_filter.is_empty()),
                    ("allow_select", self.allow_select),
                ] {
                    if set {
                        return Err(format!(
                            "audience.{key} is for chat_type \"single\" (customers); a group \
                             message goes to the sender's customer groups (chat_ids)"
                        ));
                    }
                }
                for (i, id) in self.chat_ids.iter().enumerate() {
                    if id.is_empty()
                        || id.len() > 64
                        || !id.is_ascii()
                        || id.contains(char::is_control)
                    {
                        return Err(format!(
                            "audience.chat_ids[{i}] is not a customer group chat_id (1 to 64 \
                             ASCII characters)"
                        ));
                    }
                }
            }
        }
        check_tag_filter(&self.tag_filter)?;
        Ok(self)
    }

    /// The recipients of each `add_msg_template` call: external_userids by 10,000, or chat_ids
    /// by 2,000, de-duplicated (first occurrence wins); one call with no list when the audience
    /// is a tag filter alone, or every group of the sender.
    pub fn plan_batches(&self) -> Vec<Vec<String>> {
        let (ids, max) = match self.chat_type {
            ChatType::Single => (&self.external_user_ids, MAX_EXTERNAL_BATCH),
            ChatType::Group => (&self.chat_ids, MAX_CHAT_BATCH),
        };
        let unique = dedup(ids);
        if unique.is_empty() {
            return vec![Vec::new()];
        }
        unique.chunks(max).map(<[String]>::to_vec).collect()
    }

    /// `tag_filter` in WeCom's shape, when there is one.
    pub fn tag_filter_json(&self) -> Option<Value> {
        (!self.tag_filter.is_empty()).then(|| {
            json!({"group_list": self.tag_filter.iter()
                .map(|tags| json!({"tag_list": tags}))
                .collect::<Vec<_>>()})
        })
    }
}

fn parse_tag_filter(v: &Value) -> Result<Vec<Vec<String>>, String> {
    const SHAPE: &str = "audience.tag_filter must be {\"group_list\": [{\"tag_list\": \
                         [\"tag id\", ...]}, ...]}";
    let groups = v.get("group_list").and_then(Value::as_array).ok_or(SHAPE)?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let tags = g.get("tag_list").and_then(Value::as_array).ok_or(SHAPE)?;
        out.push(
            tags.iter()
                .map(|t| t.as_str().unwrap_or_default().to_owned())
                .collect(),
        );
    }
    if out.is_empty() {
        return Err(format!("{SHAPE}; group_list is empty"));
    }
    Ok(out)
}

/// Each group 1 to 100 tags, each a corp tag id (1 to 64 ASCII characters).
fn check_tag_filter(groups: &[Vec<String>]) -> Result<(), String> {
    for (g, tags) in groups.iter().enumerate() {
        if tags.is_empty() || tags.len() > MAX_TAGS_PER_GROUP {
            return Err(format!(
                "audience.tag_filter.group_list[{g}].tag_list has {} tags; WeCom takes 1 to \
                 {MAX_TAGS_PER_GROUP} tags per group (add_msg_template)",
                tags.len()
            ));
        }
        for (i, t) in tags.iter().enumerate() {
            if t.is_empty() || t.len() > 64 || !t.is_ascii() || t.contains(char::is_control) {
                return Err(format!(
                    "audience.tag_filter.group_list[{g}].tag_list[{i}] is not a corp tag id \
                     (1 to 64 ASCII characters)"
                ));
            }
        }
    }
    Ok(())
}

/// A WeCom userid: 1 to 64 characters, none a control character.
fn check_sender(sender: &str) -> Result<(), String> {
    if !sender.is_empty() && sender.len() <= 64 && !sender.chars().any(char::is_control) {
        return Ok(());
    }
    Err(format!(
        "audience.sender must be a WeCom userid (1 to 64 characters): {EXTERNAL_SHAPE}"
    ))
}

fn check_external_user_id(i: usize, id: &str) -> Result<(), String> {
    if is_open_id(id) {
        return Ok(());
    }
    Err(format!(
        "audience.external_user_ids[{i}] is not an external_userid (1 to 64 characters of \
         letters, digits, '-' and '_')"
    ))
}

/// Who a broadcast goes to, as either transport received it: an Official Account's followers
/// or a WeCom account's external contacts. Which of the two an account takes is its
/// platform's ([`BroadcastAudience::check_platform`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastAudience {
    Followers(Audience),
    External(ExternalAudience),
}

impl BroadcastAudience {
    /// Refuses the audience an account of `platform` cannot send to, in the words the admin
    /// API's JSON parse would have used for it.
    pub fn check_platform(&self, platform: Platform) -> Result<(), String> {
        match (platform, self) {
            (Platform::Mp, Self::Followers(_)) | (Platform::Work, Self::External(_)) => Ok(()),
            (Platform::Mp, Self::External(_)) => {
                Err("audience needs exactly one of tag_id, all and open_ids; got none".into())
            }
            (Platform::Work, Self::Followers(a)) => {
                let key = match a {
                    Audience::Tag(_) => "tag_id",
                    Audience::All => "all",
                    Audience::OpenIds(_) => "open_ids",
                };
                Err(format!("audience.{key} is not allowed: {EXTERNAL_SHAPE}"))
            }
        }
    }
}

/// A broadcast request parsed: who receives it and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub audience: BroadcastAudience,
    pub message: BroadcastMessage,
}

/// What a broadcast sends: a mass message on an Official Account, a group message (text and
/// attachments) on WeCom.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastMessage {
    Mass(MassMessage),
    Group(GroupMessage),
}

impl BroadcastMessage {
    /// Parses the message JSON the way an audience's platform takes it.
    pub fn parse_for(audience: &BroadcastAudience, message: &Value) -> Result<Self, String> {
        match audience {
            BroadcastAudience::Followers(_) => MassMessage::parse(message).map(Self::Mass),
            BroadcastAudience::External(_) => GroupMessage::parse(message).map(Self::Group),
        }
    }
}

impl Broadcast {
    /// Parses the admin API's JSON `audience` and `message` for an account of `platform`: the
    /// audience's shape is the platform's (an Official Account ignores keys beside its one
    /// choice; WeCom refuses them). The first rule broken is the error: on an Official Account
    /// the message's, then the audience's; on WeCom the other way round.
    pub fn parse(platform: Platform, audience: &Value, message: &Value) -> Result<Self, String> {
        let (audience, message) = match platform {
            Platform::Mp => {
                let message = BroadcastMessage::Mass(MassMessage::parse(message)?);
                (
                    BroadcastAudience::Followers(Audience::parse(audience)?),
                    message,
                )
            }
            Platform::Work => {
                let audience = BroadcastAudience::External(ExternalAudience::parse(audience)?);
                (
                    audience,
                    BroadcastMessage::Group(GroupMessage::parse(message)?),
                )
            }
        };
        Ok(Self { audience, message })
    }
}

/// An openid as WeChat issues them: 28 characters of base64url in practice; accepted here as
/// 1 to 64 characters of `[A-Za-z0-9_-]`. (WeCom's external_userid has the same alphabet.)
pub fn is_open_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// De-duplicates the list (first occurrence wins, order kept) and splits it into batches of
/// 2 to 10,000. A remainder of one borrows an openid from the batch before it, since WeChat
/// refuses a one-person mass send.
pub fn plan_batches(open_ids: &[String]) -> Result<Vec<Vec<String>>, String> {
    let unique = dedup(open_ids);
    if unique.len() < MIN_BATCH {
        return Err(format!(
            "a mass send by openid needs at least {MIN_BATCH} distinct openids, got {}; to reach \
             one person use broadcasts/preview or SendMessage",
            unique.len()
        ));
    }
    let mut batches: Vec<Vec<String>> = unique.chunks(MAX_BATCH).map(<[String]>::to_vec).collect();
    let n = batches.len();
    if n > 1 && batches[n - 1].len() < MIN_BATCH {
        let moved = batches[n - 2]
            .pop()
            .expect("a full batch before the remainder");
        batches[n - 1].insert(0, moved);
    }
    Ok(batches)
}

fn dedup(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// The `clientmsgid` of one batch: derived from the job and the batch number, so that a batch
/// sent again after a crash or a timeout is recognised by WeChat (45065) and not sent twice.
pub fn batch_client_msg_id(job_id: &str, batch: usize) -> String {
    let id = format!("{job_id}-{batch}");
    debug_assert!(id.len() <= MAX_CLIENT_MSG_ID, "job ids are short");
    id
}

/// A mass-send message: its `msgtype` and the JSON WeChat expects under that name.
#[derive(Debug, Clone, PartialEq)]
pub struct MassMessage {
    pub msgtype: &'static str,
    pub body: Value,
    /// `send_ignore_reprint`: send an mpnews even when WeChat judges it a reprint.
    pub ignore_reprint: bool,
}

impl MassMessage {
    /// Parses `{"text": {"content": ".."}}`, `{"mpnews": {"media_id": ".."}}`, `{"image": ..}`,
    /// `{"voice": ..}`, `{"mpvideo": ..}` or `{"wxcard": {"card_id": ".."}}`, with an optional
    /// `"send_ignore_reprint": 0 | 1 | bool` beside it.
    pub fn parse(v: &Value) -> Result<Self, String> {
        const TYPES: [(&str, &str); 6] = [
            ("text", "content"),
            ("mpnews", "media_id"),
            ("image", "media_id"),
            ("voice", "media_id"),
            ("mpvideo", "media_id"),
            ("wxcard", "card_id"),
        ];
        let Some(obj) = v.as_object() else {
            return Err(
                "message must be an object such as {\"text\": {\"content\": \"...\"}}".into(),
            );
        };
        let mut found = None;
        for (name, value) in obj {
            if name == "send_ignore_reprint" {
                continue;
            }
            let Some(&(msgtype, field)) = TYPES.iter().find(|(t, _)| t == name) else {
                return Err(format!(
                    "message type {name:?} cannot be mass-sent; the types are text, mpnews, \
                     image, voice, mpvideo and wxcard"
                ));
            };
            if found.is_some() {
                return Err("message carries more than one type".into());
            }
            match value.get(field).and_then(Value::as_str) {
                Some(s) if !s.is_empty() => {}
                _ => {
                    return Err(format!(
                        "message.{msgtype}.{field} must be a non-empty string"
                    ))
                }
            }
            if msgtype == "text" && value[field].as_str().map_or(0, str::len) > 2048 * 3 {
                return Err("message.text.content is longer than WeChat accepts".into());
            }
            found = Some((msgtype, json!({ field: value[field] })));
        }
        let Some((msgtype, body)) = found else {
            return Err(
                "message needs a type: text, mpnews, image, voice, mpvideo or wxcard".into(),
            );
        };
        let ignore_reprint = match obj.get("send_ignore_reprint") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(n) if n.as_u64() == Some(0) => false,
            Some(n) if n.as_u64() == Some(1) => true,
            Some(other) => {
                return Err(format!("send_ignore_reprint must be 0 or 1, not {other}"));
            }
        };
        Ok(Self {
            msgtype,
            body,
            ignore_reprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("oUser{i:08}")).collect()
    }

    #[test]
    fn an_openid_list_is_deduplicated_and_split_into_batches_of_at_most_ten_thousand() {
        let mut list = ids(25_000);
        list.extend(ids(100)); // repeats
        let batches = plan_batches(&list).unwrap();
        let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        assert_eq!(batches[0][0], "oUser00000000");
        assert_eq!(batches[2][4_999], "oUser00024999");
    }

    #[test]
    fn a_remainder_of_one_borrows_from_the_batch_before_it() {
        let batches = plan_batches(&ids(10_001)).unwrap();
        let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [9_999, 2]);
        let all: Vec<_> = batches.concat();
        assert_eq!(all, ids(10_001), "order and membership kept");
    }

    #[test]
    fn a_one_person_audience_is_refused_with_a_pointer_to_preview() {
        let err = plan_batches(&["oA".into(), "oA".into()]).unwrap_err();
        assert!(err.contains("preview"), "{err}");
        assert_eq!(plan_batches(&ids(2)).unwrap().len(), 1);
    }

    #[test]
    fn batch_client_msg_ids_are_distinct_and_fit_wechats_limit() {
        let job = "0123456789abcdef0123456789abcdef";
        let a = batch_client_msg_id(job, 0);
        let b = batch_client_msg_id(job, 12);
        assert_ne!(a, b);
        assert!(b.len() <= MAX_CLIENT_MSG_ID);
    }

    #[test]
    fn group_and_tag_filter_audiences_parse_batch_and_name_their_rules() {
        let group = ExternalAudience::parse(
            &json!({"chat_type": "group", "sender": "owner", "chat_ids": (0..4001)
                .map(|i| format!("wrChat{i}")).collect::<Vec<_>>()}),
        )
        .unwrap();
        let sizes: Vec<_> = group.plan_batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, [2000, 2000, 1]);
        let every =
            ExternalAudience::parse(&json!({"chat_type": "group", "sender": "owner"})).unwrap();
        assert_eq!(every.plan_batches(), vec![Vec::<String>::new()]);
        let filter = json!({"group_list": [{"tag_list": ["etA", "etB"]}, {"tag_list": ["etC"]}]});
        let tagged = ExternalAudience::parse(
            &json!({"sender": "u", "tag_filter": filter, "allow_select": true}),
        )
        .unwrap();
        assert_eq!(tagged.tag_filter_json(), Some(filter));
        assert!(tagged.allow_select);
        assert_eq!(tagged.plan_batches().len(), 1);
        for (bad, needle) in [
            (json!({"chat_type": "group"}), "audience.sender"),
            (
                json!({"chat_type": "group", "sender": "u", "allow_select": true}),
                "single",
            ),
            (
                json!({"chat_type": "group", "sender": "u", "chat_ids": [""]}),
                "chat_ids[0]",
            ),
            (json!({"chat_type": "both", "sender": "u"}), "chat_type"),
            (
                json!({"sender": "u", "chat_ids": ["wrA"]}),
                "chat_type \"group\"",
            ),
            (
                json!({"sender": "u", "tag_filter": {"group_list": []}}),
                "group_list is empty",
            ),
            (
                json!({"sender": "u", "tag_filter": {"group_list": [{"tag_list": (0..101)
                    .map(|i| format!("et{i}")).collect::<Vec<_>>()}]}}),
                "1 to 100 tags per group",
            ),
            (json!({"sender": "u"}), "at least one"),
            (
                json!({"sender": "u", "external_user_ids": ["wmA"], "allow_select": 1}),
                "true or false",
            ),
        ] {
            let err = ExternalAudience::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn wecom_audiences_parse_and_batch_by_ten_thousand() {
        let a = ExternalAudience::parse(
            &json!({"external_user_ids": ["wmA", "wmB"], "sender": "zhangsan"}),
        )
        .unwrap();
        assert_eq!(a.sender, "zhangsan");
        for (bad, needle) in [
            (json!({"external_user_ids": ["wmA"]}), "sender"),
            (json!({"external_user_ids": "wmA", "sender": "u"}), "array"),
            (
                json!({"open_ids": ["o"], "sender": "u"}),
                "open_ids is not allowed",
            ),
            (json!({"external_user_ids": ["a b"], "sender": "u"}), "[0]"),
        ] {
            let err = ExternalAudience::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let mut list = ids(20_001);
        list.push("oUser00000000".into());
        let sizes: Vec<_> = ExternalAudience::new(list, "u".into())
            .unwrap()
            .plan_batches()
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [10_000, 10_000, 1]);
        assert!(ExternalAudience::new(Vec::new(), "u".into()).is_err());
    }

    #[test]
    fn audiences_parse_and_bad_ones_name_the_rule() {
        assert_eq!(Audience::parse(&json!({"tag_id": 2})), Ok(Audience::Tag(2)));
        assert_eq!(Audience::parse(&json!({"all": true})), Ok(Audience::All));
        assert_eq!(
            Audience::parse(&json!({"open_ids": ["oA", "oB"]})),
            Ok(Audience::OpenIds(vec!["oA".into(), "oB".into()]))
        );
        for (bad, needle) in [
            (json!({}), "exactly one"),
            (json!({"tag_id": 2, "all": true}), "tag_id, all"),
            (json!({"tag_id": -1}), "tag_id"),
            (json!({"all": false}), "all must be true"),
            (json!({"open_ids": ["oA", "o B"]}), "open_ids[1]"),
            (json!({"open_ids": "oA"}), "array"),
            (json!("everyone"), "object"),
        ] {
            let err = Audience::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn a_broadcast_parses_by_its_platform_and_refuses_the_other_platforms_audience() {
        let text = json!({"text": {"content": "hi"}});
        let mp = Broadcast::parse(Platform::Mp, &json!({"tag_id": 2, "sender": "u"}), &text);
        assert_eq!(
            mp.unwrap().audience,
            BroadcastAudience::Followers(Audience::Tag(2)),
            "an Official Account ignores keys beside its one choice"
        );
        let work = Broadcast::parse(Platform::Work, &json!({"tag_id": 2}), &text).unwrap_err();
        assert!(work.starts_with("audience.tag_id is not allowed"), "{work}");
        // The first rule broken: the message's on an Official Account, the audience's on WeCom.
        let both = (json!({"all": false}), json!({"news": {}}));
        let mp = Broadcast::parse(Platform::Mp, &both.0, &both.1).unwrap_err();
        assert!(mp.contains("cannot be mass-sent"), "{mp}");
        let work = Broadcast::parse(Platform::Work, &both.0, &both.1).unwrap_err();
        assert!(work.starts_with("audience.all is not allowed"), "{work}");

        // A typed audience of the other platform is refused in the same words.
        let followers = BroadcastAudience::Followers(Audience::All);
        assert_eq!(followers.check_platform(Platform::Mp), Ok(()));
        assert_eq!(
            followers.check_platform(Platform::Work),
            Err(Broadcast::parse(Platform::Work, &json!({"all": true}), &text).unwrap_err())
        );
        let external = BroadcastAudience::External(
            ExternalAudience::new(vec!["wmA".into()], "zhangsan".into()).unwrap(),
        );
        assert_eq!(external.check_platform(Platform::Work), Ok(()));
        assert_eq!(
            external.check_platform(Platform::Mp),
            Err(Broadcast::parse(
                Platform::Mp,
                &json!({"external_user_ids": ["wmA"], "sender": "zhangsan"}),
                &text
            )
            .unwrap_err())
        );
    }

    #[test]
    fn typed_audiences_follow_the_json_rules_in_the_same_words() {
        assert_eq!(
            Audience::all(false),
            Audience::parse(&json!({"all": false}))
        );
        assert_eq!(
            Audience::open_ids(vec!["oA".into(), "o B".into()]),
            Audience::parse(&json!({"open_ids": ["oA", "o B"]}))
        );
        assert_eq!(
            ExternalAudience::new(vec!["wmA".into()], String::new()),
            ExternalAudience::parse(&json!({"external_user_ids": ["wmA"], "sender": ""}))
        );
        assert_eq!(
            ExternalAudience::new(vec!["wmA".into(), "a b".into()], "u".into()),
            ExternalAudience::parse(&json!({"external_user_ids": ["wmA", "a b"], "sender": "u"}))
        );
    }

    #[test]
    fn mass_messages_parse_per_type_and_refuse_the_rest() {
        let m = MassMessage::parse(&json!({"text": {"content": "你好"}})).unwrap();
        assert_eq!(
            (m.msgtype, m.body.clone()),
            ("text", json!({"content": "你好"}))
        );
        let m =
            MassMessage::parse(&json!({"mpnews": {"media_id": "M1"}, "send_ignore_reprint": 1}))
                .unwrap();
        assert_eq!(m.msgtype, "mpnews");
        assert!(m.ignore_reprint);
        assert_eq!(
            MassMessage::parse(&json!({"wxcard": {"card_id": "C"}}))
                .unwrap()
                .msgtype,
            "wxcard"
        );
        for (bad, needle) in [
            (json!({"news": {"articles": []}}), "cannot be mass-sent"),
            (json!({"text": {}}), "text.content"),
            (
                json!({"text": {"content": "a"}, "image": {"media_id": "m"}}),
                "more than one",
            ),
            (json!({}), "needs a type"),
            (
                json!({"text": {"content": "a"}, "send_ignore_reprint": 2}),
                "0 or 1",
            ),
        ] {
            let err = MassMessage::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
