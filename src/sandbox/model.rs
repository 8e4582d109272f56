//! The sandbox's WeChat: the state of every configured account as WeChat would keep it (access
//! tokens, menus, tags, mass sends, WeCom group messages, OAuth codes), and the answer of each
//! API the gateway calls, in WeChat's documented JSON shapes and errcodes. No I/O: the server
//! ([`super::server`]) decodes a request into [`Call`], and carries out what [`Answer`] says,
//! including the MASSSENDJOBFINISH callbacks a mass send owes the gateway.
//!
//! Everything is deterministic: ids count up from fixed starts in the order of the calls
//! (tokens `sandbox-<account>-<n>`, tag ids from 100, msg_ids from 1000000001, QR tickets,
//! contact-way ids, WeCom msgids), and every send reaches every recipient.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::domain::Platform;

mod h5;

/// The followers an Official Account has in the sandbox: what a send to everyone reaches, and
/// who opens a tracked link (the first, also `simulate`'s default sender).
pub const FOLLOWERS: [&str; 3] = [
    "oSimulatedFollower000000000",
    "oSandboxFollower00000000001",
    "oSandboxFollower00000000002",
];

/// The first id WeChat's user tags get (0, 1 and 2 are reserved by WeChat).
const FIRST_TAG_ID: u64 = 100;
/// The first msg_id of a mass send.
const FIRST_MSG_ID: i64 = 1_000_000_001;
/// WeChat's limits on tags: 30 bytes a name, 100 tags an account, 50 openids a call.
const TAG_NAME_MAX: usize = 30;
const TAGS_MAX: usize = 100;
const TAGGING_MAX: usize = 50;
/// WeChat's "clientmsgid exists" answer (45065), which carries the earlier send's msg_id.
const ALREADY_SENT: i64 = 45065;
/// The message types of the mass-send APIs that name a media_id.
const MEDIA_TYPES: [&str; 4] = ["mpnews", "image", "voice", "mpvideo"];

/// One configured account, as the sandbox needs it: who may ask for its token.
#[derive(Debug, Clone)]
pub struct Credential {
    pub account: String,
    pub platform: Platform,
    /// AppID (Official Account) or CorpID (WeCom).
    pub receiver_id: String,
    pub secret: String,
    pub agent_id: i64,
}

/// One API request, decoded by the server.
#[derive(Debug)]
pub struct Call<'a> {
    pub platform: Platform,
    /// Without the platform prefix: `/cgi-bin/menu/create`.
    pub path: &'a str,
    pub query: &'a HashMap<String, String>,
    /// The JSON body of a POST; `Null` for a GET.
    pub body: &'a Value,
    /// Unix seconds now (a parameter, so that the tests choose it).
    pub now: u64,
}

/// What the server answers, and what it does next.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// HTTP 200 with this JSON, as WeChat answers successes and errcodes alike.
    Json(Value),
    /// The JSON, then a MASSSENDJOBFINISH callback to the gateway for this send.
    JsonThenCallback(Value, MassFinished),
    /// A 302 to this URL (web OAuth's authorize page, which a follower's browser opens).
    Redirect(String),
    /// An API the sandbox does not fake: HTTP 404, and the server says so in the log.
    Unknown,
    /// The JSON, then a TEMPLATESENDJOBFINISH callback to the gateway for this send.
    JsonThenTemplateFinished(Value, super::templates::TemplateFinished),
}

/// The result of a mass send, as the MASSSENDJOBFINISH callback reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MassFinished {
    pub account: String,
    pub msg_id: i64,
    pub total: usize,
}

#[derive(Debug, Default)]
struct AccountState {
    /// The valid token and how many were issued.
    token: Option<String>,
    issued: u64,
    /// The default menu's buttons, and the conditional menus by menuid.
    menu: Option<Value>,
    conditional: BTreeMap<u64, Value>,
    next_menuid: u64,
    tags: BTreeMap<u64, Tag>,
    /// clientmsgid → msg_id, and msg_id → its send.
    client_msg_ids: HashMap<String, i64>,
    sends: BTreeMap<i64, Send>,
    qr_codes: u64,
    contact_ways: u64,
    group_msgs: Vec<GroupMsg>,
    messages: u64,
    /// WeCom corp tags and customer groups, from [`super::wecom_profile::Profile::demo`].
    profile: Option<super::wecom_profile::Profile>,
    media: super::media::Media,
}

#[derive(Debug)]
struct Tag {
    name: String,
    members: BTreeSet<String>,
}

#[derive(Debug)]
struct Send {
    finished: bool,
}

#[derive(Debug)]
struct GroupMsg {
    msgid: String,
    sender: String,
    /// `single` or `group`.
    chat_type: String,
    /// The external_userids (`single`) or chat_ids (`group`) it goes to.
    external_userids: Vec<String>,
    text: Option<Value>,
    attachments: Vec<Value>,
    created: u64,
}

/// Every account's state. The server holds it behind one lock.
#[derive(Debug)]
pub struct FakeWeChat {
    credentials: Vec<Credential>,
    accounts: HashMap<String, AccountState>,
    /// Every access token issued, and its account.
    issued_tokens: HashMap<String, String>,
    /// Issued OAuth codes and the openid each stands for; a code is good once.
    oauth_codes: HashMap<String, String>,
    issued_codes: u64,
    next_msg_id: i64,
    templates: super::templates::Templates,
}

pub(super) fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

pub(super) fn err(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// `{"errcode": 0, "errmsg": "ok"}` merged with `fields`.
pub(super) fn ok_with(fields: Value) -> Value {
    let mut answer = ok();
    if let (Some(out), Value::Object(fields)) = (answer.as_object_mut(), fields) {
        out.extend(fields);
    }
    answer
}

pub(super) fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl FakeWeChat {
    pub fn new(credentials: Vec<Credential>) -> Self {
        Self {
            credentials,
            accounts: HashMap::new(),
            issued_tokens: HashMap::new(),
            oauth_codes: HashMap::new(),
            issued_codes: 0,
            next_msg_id: FIRST_MSG_ID,
            templates: Default::default(),
        }
    }

    /// Answers one call.
    pub fn handle(&mut self, call: &Call<'_>) -> Answer {
        let path = call.path;
        match (call.platform, path) {
            (Platform::Mp, "/cgi-bin/stable_token") => Answer::Json(self.stable_token(call.body)),
            (Platform::Work, "/cgi-bin/gettoken") => Answer::Json(self.work_token(call.query)),
            (Platform::Mp, "/connect/oauth2/authorize") => self.authorize(call.query),
            (Platform::Mp, "/sns/oauth2/access_token") => Answer::Json(self.oauth(call.query)),
            (Platform::Mp, "/sns/userinfo") => Answer::Json(self.userinfo(call.query)),
            _ => {
                let token = call.query.get("access_token").map_or("", String::as_str);
                let account = match self.account_of(call.platform, token) {
                    Ok(account) => account,
                    Err(e) => return Answer::Json(e),
                };
                self.with_token(&account, call)
            }
        }
    }

    /// The account whose valid token this is: 41001 without one, 40014 for a token WeChat
    /// never issued, 40001 for one that a newer token replaced.
    fn account_of(&self, platform: Platform, token: &str) -> Result<String, Value> {
        if token.is_empty() {
            return Err(err(41001, "access_token missing"));
        }
        let Some(account) = self.issued_tokens.get(token).filter(|account| {
            self.credentials
                .iter()
                .any(|c| &c.account == *account && c.platform == platform)
        }) else {
            return Err(err(40014, "invalid access_token"));
        };
        let current = self.accounts.get(account).and_then(|s| s.token.as_deref());
        if current != Some(token) {
            return Err(err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            ));
        }
        Ok(account.clone())
    }

    fn issue_token(&mut self, account: &str, force: bool) -> Value {
        let state = self.accounts.entry(account.to_owned()).or_default();
        if force || state.token.is_none() {
            state.issued += 1;
            let token = format!("sandbox-{account}-{}", state.issued);
            self.issued_tokens.insert(token.clone(), account.to_owned());
            state.token = Some(token);
        }
        json!({"access_token": state.token, "expires_in": 7200})
    }

    /// `cgi-bin/stable_token`: 40013 for an unknown appid, 40125 for a wrong secret.
    fn stable_token(&mut self, body: &Value) -> Value {
        let (appid, secret) = (str_of(body, "appid"), str_of(body, "secret"));
        let Some(c) = self
            .credentials
            .iter()
            .find(|c| c.platform == Platform::Mp && c.receiver_id == appid)
        else {
            return err(40013, "invalid appid");
        };
        if c.secret != secret {
            return err(40125, "invalid appsecret");
        }
        let account = c.account.clone();
        let force = body.get("force_refresh").and_then(Value::as_bool) == Some(true);
        self.issue_token(&account, force)
    }

    /// WeCom `cgi-bin/gettoken`: 40013 for an unknown corpid, 40001 for a wrong secret.
    fn work_token(&mut self, query: &HashMap<String, String>) -> Value {
        let corp = query.get("corpid").map_or("", String::as_str);
        let secret = query.get("corpsecret").map_or("", String::as_str);
        let in_corp: Vec<&Credential> = self
            .credentials
            .iter()
            .filter(|c| c.platform == Platform::Work && c.receiver_id == corp)
            .collect();
        if in_corp.is_empty() {
            return err(40013, "invalid corpid");
        }
        let Some(c) = in_corp.iter().find(|c| c.secret == secret) else {
            return err(40001, "invalid secret");
        };
        let account = c.account.clone();
        let answer = self.issue_token(&account, false);
        ok_with(answer)
    }

    /// `connect/oauth2/authorize`: the page a follower's browser opens. The follower agrees at
    /// once: back to `redirect_uri` with a fresh code and the `state`.
    fn authorize(&mut self, query: &HashMap<String, String>) -> Answer {
        let appid = query.get("appid").map_or("", String::as_str);
        let Some(redirect) = query.get("redirect_uri") else {
            return Answer::Json(err(40035, "invalid parameter: redirect_uri"));
        };
        if !self
            .credentials
            .iter()
            .any(|c| c.platform == Platform::Mp && c.receiver_id == appid)
        {
            return Answer::Json(err(40013, "invalid appid"));
        }
        self.issued_codes += 1;
        let code = format!("sandbox-code-{}", self.issued_codes);
        self.oauth_codes
            .insert(code.clone(), FOLLOWERS[0].to_owned());
        let state = query.get("state").map_or("", String::as_str);
        let sep = if redirect.contains('?') { '&' } else { '?' };
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", state)
            .finish();
        Answer::Redirect(format!("{redirect}{sep}{encoded}"))
    }

    /// `sns/oauth2/access_token`: a code is good once (40163), an unknown one is 40029.
    fn oauth(&mut self, query: &HashMap<String, String>) -> Value {
        let appid = query.get("appid").map_or("", String::as_str);
        let secret = query.get("secret").map_or("", String::as_str);
        let Some(c) = self
            .credentials
            .iter()
            .find(|c| c.platform == Platform::Mp && c.receiver_id == appid)
        else {
            return err(40013, "invalid appid");
        };
        if c.secret != secret {
            return err(40125, "invalid appsecret");
        }
        let code = query.get("code").map_or("", String::as_str);
        let Some(openid) = self.oauth_codes.remove(code) else {
            return if code.starts_with("sandbox-code-") {
                err(40163, "code been used")
            } else {
                err(40029, "invalid code")
            };
        };
        json!({"access_token": format!("sandbox-web-{code}"), "expires_in": 7200,
            "refresh_token": format!("sandbox-refresh-{code}"), "openid": openid,
            "scope": "snsapi_base", "unionid": union_id(&openid)})
    }

    /// `sns/userinfo`: the profile of the follower a web token of `oauth` stands for (the
    /// sandbox's follower agrees to every scope); 40001 for a token it never issued.
    fn userinfo(&self, query: &HashMap<String, String>) -> Value {
        let token = query.get("access_token").map_or("", String::as_str);
        let Some(code) = token.strip_prefix("sandbox-web-sandbox-code-") else {
            return err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        };
        if code
            .parse::<u64>()
            .map_or(true, |n| n == 0 || n > self.issued_codes)
        {
            return err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        let openid = query.get("openid").map_or("", String::as_str);
        json!({"openid": openid, "nickname": "Sandbox Follower", "sex": 0, "province": "",
            "city": "", "country": "", "headimgurl": "https://thirdwx.qlogo.cn/mmopen/sandbox/132",
            "privilege": [], "unionid": union_id(openid)})
    }

    fn credential(&self, account: &str) -> &Credential {
        self.credentials
            .iter()
            .find(|c| c.account == account)
            .expect("account_of returned a configured account")
    }

    /// The APIs called with an access token.
    fn with_token(&mut self, account: &str, call: &Call<'_>) -> Answer {
        if super::templates::handles(call.platform, call.path) {
            return self.templates.answer(account, call);
        }
        let body = call.body;
        let agent_id = self.credential(account).agent_id;
        let next_msg_id = &mut self.next_msg_id;
        let state = self.accounts.entry(account.to_owned()).or_default();
        let work = call.platform == Platform::Work;
        if let Some(answer) = super::media::answer(
            &mut state.media,
            work,
            call.path,
            call.query,
            body,
            call.now,
        ) {
            return Answer::Json(answer);
        }
        let answer = match (call.platform, call.path) {
            (_, "/cgi-bin/menu/create") => {
                if let Some(e) = wrong_agent(call, agent_id) {
                    return Answer::Json(e);
                }
                state.menu = Some(body.get("button").cloned().unwrap_or(json!([])));
                ok()
            }
            (_, "/cgi-bin/menu/delete") => {
                if let Some(e) = wrong_agent(call, agent_id) {
                    return Answer::Json(e);
                }
                // Deleting the default menu deletes every conditional menu too.
                state.menu = None;
                state.conditional.clear();
                ok()
            }
            (Platform::Mp, "/cgi-bin/menu/get") => match &state.menu {
                None => err(46003, "menu no exist"),
                Some(buttons) => ok_with(json!({
                    "menu": {"button": with_empty_sub_buttons(buttons)},
                    "conditionalmenu": state.conditional.iter().map(|(id, m)| {
                        let mut m = m.clone();
                        m["menuid"] = json!(id);
                        m["button"] = with_empty_sub_buttons(&m["button"]);
                        m
                    }).collect::<Vec<_>>(),
                })),
            },
            (Platform::Work, "/cgi-bin/menu/get") => {
                if let Some(e) = wrong_agent(call, agent_id) {
                    return Answer::Json(e);
                }
                match &state.menu {
                    None => err(46003, "menu no exist"),
                    Some(buttons) => ok_with(json!({"button": with_empty_sub_buttons(buttons)})),
                }
            }
            (Platform::Mp, "/cgi-bin/get_current_selfmenu_info") => match &state.menu {
                None => json!({"is_menu_open": 0}),
                Some(buttons) => json!({"is_menu_open": 1,
                    "selfmenu_info": {"button": as_selfmenu_info(buttons)}}),
            },
            (Platform::Mp, "/cgi-bin/menu/addconditional") => {
                if body.get("matchrule").is_none() {
                    err(40035, "invalid parameter: matchrule")
                } else {
                    state.next_menuid += 1;
                    let id = 400_000_000 + state.next_menuid;
                    state.conditional.insert(id, body.clone());
                    json!({"menuid": id.to_string()})
                }
            }
            (Platform::Mp, "/cgi-bin/menu/delconditional") => {
                let id = match &body["menuid"] {
                    Value::String(s) => s.parse().ok(),
                    other => other.as_u64(),
                };
                match id.and_then(|id| state.conditional.remove(&id)) {
                    Some(_) => ok(),
                    None => err(40035, "invalid parameter: menuid"),
                }
            }
            (Platform::Mp, "/cgi-bin/menu/trymatch") => match &state.menu {
                None => err(46003, "menu no exist"),
                Some(buttons) => json!({"button": with_empty_sub_buttons(buttons)}),
            },
            (Platform::Mp, "/cgi-bin/qrcode/create") => qr_code(state, body),
            (Platform::Work, "/cgi-bin/externalcontact/add_contact_way") => {
                if strings(&body["user"]).is_empty() {
                    err(40035, "invalid parameter: user")
                } else {
                    state.contact_ways += 1;
                    let n = state.contact_ways;
                    ok_with(json!({"config_id": format!("sandbox-config-{n}"),
                        "qr_code": format!("https://wework.qq.com/sandbox/contact-way/{account}/{n}")}))
                }
            }
            (Platform::Mp, "/cgi-bin/tags/create") => create_tag(state, body),
            (Platform::Mp, "/cgi-bin/tags/members/batchtagging") => tag_members(state, body, true),
            (Platform::Mp, "/cgi-bin/tags/members/batchuntagging") => {
                tag_members(state, body, false)
            }
            (Platform::Mp, "/cgi-bin/user/info/batchget") => {
                let list: Vec<Value> = body["user_list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|u| user_info(state, str_of(u, "openid")))
                    .collect();
                json!({"user_info_list": list})
            }
            (Platform::Work, "/cgi-bin/externalcontact/get") => {
                let id = call.query.get("external_userid").map_or("", String::as_str);
                if id.is_empty() {
                    err(40096, "invalid external userid")
                } else {
                    let follow_user = state
                        .profile
                        .get_or_insert_with(|| super::wecom_profile::Profile::demo(call.now))
                        .follow_user(id, call.now);
                    ok_with(json!({"external_contact": {"external_userid": id,
                        "name": format!("Sandbox contact {id}"), "type": 1,
                        "unionid": union_id(id)}, "follow_user": follow_user}))
                }
            }
            (Platform::Mp, "/cgi-bin/message/custom/send") => super::messages::custom_send(body),
            (Platform::Mp, "/cgi-bin/message/custom/typing") => {
                super::messages::custom_typing(body)
            }
            (Platform::Work, "/cgi-bin/message/send") => match message_problem(body) {
                Some(e) => e,
                None => {
                    state.messages += 1;
                    ok_with(
                        json!({"invaliduser": "", "msgid": format!("sandbox-msg-{}", state.messages)}),
                    )
                }
            },
            (Platform::Work, "/cgi-bin/externalcontact/send_welcome_msg") => {
                if str_of(body, "welcome_code").is_empty() {
                    err(40035, "invalid parameter: welcome_code")
                } else {
                    ok()
                }
            }
            (Platform::Mp, "/cgi-bin/message/mass/sendall") => {
                let total = if body["filter"]["is_to_all"].as_bool() == Some(true) {
                    FOLLOWERS.len()
                } else {
                    let tag = body["filter"]["tag_id"].as_u64();
                    match tag.and_then(|t| state.tags.get(&t)) {
                        Some(tag) => tag.members.len(),
                        None => return Answer::Json(err(45159, "invalid tag id")),
                    }
                };
                return mass_send(state, account, next_msg_id, body, total);
            }
            (Platform::Mp, "/cgi-bin/message/mass/send") => {
                let to: BTreeSet<String> = strings(&body["touser"]).into_iter().collect();
                if to.iter().any(String::is_empty) {
                    return Answer::Json(err(40003, "invalid openid"));
                }
                return mass_send(state, account, next_msg_id, body, to.len());
            }
            (Platform::Mp, "/cgi-bin/message/mass/preview") => match str_of(body, "touser") {
                "" => err(40003, "invalid openid"),
                _ => match media_problem(body) {
                    Some(e) => e,
                    None => {
                        let msg_id = *next_msg_id;
                        *next_msg_id += 1;
                        json!({"errcode": 0, "errmsg": "preview success", "msg_id": msg_id})
                    }
                },
            },
            (Platform::Mp, "/cgi-bin/message/mass/delete") => {
                match body["msg_id"]
                    .as_i64()
                    .filter(|id| state.sends.contains_key(id))
                {
                    Some(_) => ok(),
                    None => err(40035, "invalid parameter: msg_id"),
                }
            }
            (Platform::Mp, "/cgi-bin/message/mass/get") => {
                let id = body["msg_id"].as_i64().unwrap_or_default();
                match state.sends.get(&id) {
                    Some(send) => json!({"msg_id": id,
                        "msg_status": if send.finished { "SEND_SUCCESS" } else { "SENDING" }}),
                    None => err(40035, "invalid parameter: msg_id"),
                }
            }
            (Platform::Work, "/cgi-bin/externalcontact/add_msg_template") => {
                add_msg_template(state, account, body, call.now)
            }
            (Platform::Work, "/cgi-bin/externalcontact/get_groupmsg_list_v2") => {
                let (start, end) = (
                    body["start_time"].as_u64().unwrap_or(0),
                    body["end_time"].as_u64().unwrap_or(u64::MAX),
                );
                let chat_type = match str_of(body, "chat_type") {
                    "" => "single",
                    other => other,
                };
                let list: Vec<Value> = state
                    .group_msgs
                    .iter()
                    .filter(|m| (start..=end).contains(&m.created) && m.chat_type == chat_type)
                    .map(|m| {
                        let mut v = json!({"msgid": m.msgid, "creator": m.sender,
                            "create_type": 1, "create_time": m.created.to_string(),
                            "attachments": m.attachments});
                        if let Some(text) = &m.text {
                            v["text"] = text.clone();
                        }
                        v
                    })
                    .collect();
                ok_with(json!({"next_cursor": "", "group_msg_list": list}))
            }
            (Platform::Work, "/cgi-bin/externalcontact/get_groupmsg_task") => {
                match find_group_msg(state, body) {
                    Err(e) => e,
                    // Every member confirms at once in the sandbox (status 2: sent).
                    Ok(m) => ok_with(json!({"next_cursor": "", "task_list": [
                        {"userid": m.sender, "status": 2, "send_time": m.created}]})),
                }
            }
            (Platform::Work, "/cgi-bin/externalcontact/get_groupmsg_send_result") => {
                match find_group_msg(state, body) {
                    Err(e) => e,
                    Ok(m) if str_of(body, "userid") != m.sender => {
                        ok_with(json!({"next_cursor": "", "send_list": []}))
                    }
                    Ok(m) => {
                        let list: Vec<Value> = m
                            .external_userids
                            .iter()
                            .map(|u| {
                                let to = if m.chat_type == "group" {
                                    "chat_id"
                                } else {
                                    "external_userid"
                                };
                                json!({to: u, "userid": m.sender,
                                "status": 1, "send_time": m.created})
                            })
                            .collect();
                        ok_with(json!({"next_cursor": "", "send_list": list}))
                    }
                }
            }
            (Platform::Work, "/cgi-bin/externalcontact/cancel_groupmsg_send") => {
                match find_group_msg(state, body) {
                    Err(e) => e,
                    Ok(_) => ok(),
                }
            }
            (Platform::Work, path) if super::wecom_profile::handles(path) => state
                .profile
                .get_or_insert_with(|| super::wecom_profile::Profile::demo(call.now))
                .answer(path, body, call.now),
            _ => match h5::answer(state, call).or_else(|| super::sync::answer(call)) {
                Some(answer) => answer,
                None => return Answer::Unknown,
            },
        };
        Answer::Json(answer)
    }

    /// Records that the MASSSENDJOBFINISH of a send went out: `mass/get` now says so.
    pub fn finished(&mut self, sent: &MassFinished) {
        if let Some(send) = self
            .accounts
            .get_mut(&sent.account)
            .and_then(|s| s.sends.get_mut(&sent.msg_id))
        {
            send.finished = true;
        }
    }
}

/// WeCom's menu APIs name the application: 301002 ("无权限操作指定的应用") for another one.
fn wrong_agent(call: &Call<'_>, agent_id: i64) -> Option<Value> {
    if call.platform != Platform::Work {
        return None;
    }
    let named = call
        .query
        .get("agentid")
        .and_then(|a| a.parse::<i64>().ok());
    (named != Some(agent_id)).then(|| err(301002, "not allow to operate another agent"))
}

/// A follower's unionid in the sandbox: derived from the openid, so it is stable.
fn union_id(open_id: &str) -> String {
    format!("uSandbox-{open_id}")
}

/// `menu/get` adds `"sub_button": []` to every button without sub-buttons.
fn with_empty_sub_buttons(buttons: &Value) -> Value {
    let list = buttons.as_array().cloned().unwrap_or_default();
    Value::Array(
        list.into_iter()
            .map(|mut b| {
                let subs = b.get("sub_button").cloned().unwrap_or(json!([]));
                b["sub_button"] = with_empty_sub_buttons(&subs);
                b
            })
            .collect(),
    )
}

/// `get_current_selfmenu_info` nests sub-buttons in `{"list": [...]}`.
fn as_selfmenu_info(buttons: &Value) -> Value {
    let list = buttons.as_array().cloned().unwrap_or_default();
    Value::Array(
        list.into_iter()
            .map(|mut b| {
                if let Some(subs) = b.get("sub_button").cloned() {
                    b["sub_button"] = json!({"list": subs});
                }
                b
            })
            .collect(),
    )
}

/// `qrcode/create`: a temporary code expires after `expire_seconds` (30 s to 30 days, 60 when
/// left out), a permanent one never.
fn qr_code(state: &mut AccountState, body: &Value) -> Value {
    let action = str_of(body, "action_name");
    let scene = &body["action_info"]["scene"];
    let permanent = match action {
        "QR_SCENE" | "QR_STR_SCENE" => false,
        "QR_LIMIT_SCENE" | "QR_LIMIT_STR_SCENE" => true,
        _ => return err(40035, "invalid parameter: action_name"),
    };
    let has_scene = if action.ends_with("STR_SCENE") {
        !str_of(scene, "scene_str").is_empty()
    } else {
        scene["scene_id"].as_u64().is_some()
    };
    if !has_scene {
        return err(40035, "invalid parameter: scene");
    }
    state.qr_codes += 1;
    let n = state.qr_codes;
    let ticket = format!("gQSandbox{n:08}");
    let url = format!("http://weixin.qq.com/q/sandbox{n:08}");
    if permanent {
        json!({"ticket": ticket, "url": url})
    } else {
        let expire = body["expire_seconds"]
            .as_u64()
            .unwrap_or(60)
            .clamp(30, 2_592_000);
        json!({"ticket": ticket, "expire_seconds": expire, "url": url})
    }
}

/// `tags/create`: 45158 for a name over 30 bytes (or empty), 45157 for a name in use, 45056
/// past 100 tags.
fn create_tag(state: &mut AccountState, body: &Value) -> Value {
    let name = str_of(&body["tag"], "name");
    if name.is_empty() || name.len() > TAG_NAME_MAX {
        return err(45158, "tag name too long");
    }
    if state.tags.values().any(|t| t.name == name) {
        return err(45157, "invalid tag name");
    }
    if state.tags.len() >= TAGS_MAX {
        return err(45056, "too many tags");
    }
    // Never an id used before, also after a delete.
    let id = state
        .tags
        .keys()
        .next_back()
        .map_or(FIRST_TAG_ID, |last| last + 1);
    state.tags.insert(
        id,
        Tag {
            name: name.to_owned(),
            members: BTreeSet::new(),
        },
    );
    json!({"tag": {"id": id, "name": name}})
}

/// `tags/members/batchtagging` and `batchuntagging`: 40032 for more than 50 openids, 45159 for
/// a tag that does not exist, 40003 for an empty openid.
fn tag_members(state: &mut AccountState, body: &Value, add: bool) -> Value {
    let open_ids = strings(&body["openid_list"]);
    if open_ids.is_empty() || open_ids.len() > TAGGING_MAX {
        return err(40032, "invalid openid list size");
    }
    if open_ids.iter().any(String::is_empty) {
        return err(40003, "invalid openid");
    }
    let Some(tag) = body["tagid"].as_u64().and_then(|t| state.tags.get_mut(&t)) else {
        return err(45159, "invalid tag id");
    };
    for id in open_ids {
        if add {
            tag.members.insert(id);
        } else {
            tag.members.remove(&id);
        }
    }
    ok()
}

/// `user/info/batchget`: every openid is a follower who subscribed by a QR code.
fn user_info(state: &AccountState, open_id: &str) -> Value {
    let tags: Vec<u64> = state
        .tags
        .iter()
        .filter(|(_, t)| t.members.contains(open_id))
        .map(|(id, _)| *id)
        .collect();
    json!({"subscribe": 1, "openid": open_id, "language": "zh_CN", "subscribe_time": 1767225600,
        "unionid": union_id(open_id), "remark": "", "groupid": 0, "tagid_list": tags,
        "subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 0, "qr_scene_str": ""})
}

/// A message of `message/custom/send` or WeCom's `message/send`: 40003 without a recipient,
/// 40008 for a type the sandbox does not know, 40007 for a media message without a media_id.
fn message_problem(body: &Value) -> Option<Value> {
    if str_of(body, "touser").is_empty() {
        return Some(err(40003, "invalid openid"));
    }
    media_problem(body)
}

fn media_problem(body: &Value) -> Option<Value> {
    let msgtype = str_of(body, "msgtype");
    let content = &body[msgtype];
    match msgtype {
        "text" if !str_of(content, "content").is_empty() => None,
        "text" => Some(err(40035, "invalid parameter: text.content")),
        t if MEDIA_TYPES.contains(&t) && str_of(content, "media_id").is_empty() => {
            Some(err(40007, "invalid media_id"))
        }
        t if MEDIA_TYPES.contains(&t) || t == "wxcard" => None,
        _ => Some(err(40008, "invalid message type")),
    }
}

/// `mass/sendall` and `mass/send`: a send with a clientmsgid seen before answers 45065 with
/// that send's msg_id; a new one is accepted, and finishes with a callback.
fn mass_send(
    state: &mut AccountState,
    account: &str,
    next_msg_id: &mut i64,
    body: &Value,
    total: usize,
) -> Answer {
    if let Some(e) = media_problem(body) {
        return Answer::Json(e);
    }
    let client_msg_id = str_of(body, "clientmsgid");
    if let Some(msg_id) = state
        .client_msg_ids
        .get(client_msg_id)
        .filter(|_| !client_msg_id.is_empty())
    {
        return Answer::Json(
            json!({"errcode": ALREADY_SENT, "errmsg": "clientmsgid exist",
            "msg_id": msg_id}),
        );
    }
    let msg_id = *next_msg_id;
    *next_msg_id += 1;
    if !client_msg_id.is_empty() {
        state
            .client_msg_ids
            .insert(client_msg_id.to_owned(), msg_id);
    }
    state.sends.insert(msg_id, Send { finished: false });
    let mut answer = json!({"errcode": 0, "errmsg": "send job submission success",
        "msg_id": msg_id});
    if str_of(body, "msgtype") == "mpnews" {
        answer["msg_data_id"] = json!(msg_id * 10 + 1);
    }
    Answer::JsonThenCallback(
        answer,
        MassFinished {
            account: account.to_owned(),
            msg_id,
            total,
        },
    )
}

/// WeCom `add_msg_template` (developer.work.weixin.qq.com/document/path/92135): a task for the
/// sender, to the listed customers (`single`; without a list, the sender's customers, filtered
/// by `tag_filter`) or to customer groups (`group`: `chat_id_list`, or every group the sender
/// owns; WeCom requires the sender). A request WeCom would refuse (no sender, no recipient, no
/// content, over 10,000 customers, 2,000 groups, 9 attachments or 4,000 bytes of text) is
/// answered with the general 40035 (invalid parameter), not a narrower code the sandbox would
/// have to guess.
fn add_msg_template(state: &mut AccountState, account: &str, body: &Value, now: u64) -> Value {
    let sender = str_of(body, "sender");
    let chat_type = match str_of(body, "chat_type") {
        "" | "single" => "single",
        "group" => "group",
        _ => return err(40035, "invalid parameter: chat_type"),
    };
    let text = body["text"]["content"].as_str().unwrap_or_default();
    let attachments = body["attachments"].as_array().cloned().unwrap_or_default();
    if sender.is_empty() {
        return err(40035, "invalid parameter: sender");
    }
    if (text.is_empty() && attachments.is_empty()) || text.len() > 4000 || attachments.len() > 9 {
        return err(40035, "invalid parameter: text and attachments");
    }
    let now_profile = now;
    let profile = state
        .profile
        .get_or_insert_with(|| super::wecom_profile::Profile::demo(now_profile));
    let recipients = if chat_type == "group" {
        let listed = strings(&body["chat_id_list"]);
        if listed.len() > 2000 {
            return err(40035, "invalid parameter: chat_id_list");
        }
        if listed.is_empty() {
            profile.chats_of(sender)
        } else {
            listed
        }
    } else {
        let listed = strings(&body["external_userid"]);
        if listed.len() > 10_000 {
            return err(40035, "invalid parameter: external_userid");
        }
        let filter: Vec<Vec<String>> = body["tag_filter"]["group_list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| strings(&g["tag_list"]))
            .collect();
        if listed.is_empty() && filter.is_empty() {
            return err(40035, "invalid parameter: external_userid");
        }
        let candidates = if listed.is_empty() {
            profile.customers_of(sender)
        } else {
            listed
        };
        candidates
            .into_iter()
            .filter(|c| {
                let tags = profile.tags_on(sender, c);
                filter.iter().all(|g| g.iter().any(|t| tags.contains(t)))
            })
            .collect()
    };
    let msgid = format!("msgSandbox-{account}-{}", state.group_msgs.len() + 1);
    state.group_msgs.push(GroupMsg {
        msgid: msgid.clone(),
        sender: sender.to_owned(),
        chat_type: chat_type.to_owned(),
        external_userids: recipients,
        text: body.get("text").cloned(),
        attachments,
        created: now,
    });
    ok_with(json!({"fail_list": [], "msgid": msgid}))
}

fn find_group_msg<'s>(state: &'s AccountState, body: &Value) -> Result<&'s GroupMsg, Value> {
    let msgid = str_of(body, "msgid");
    state
        .group_msgs
        .iter()
        .find(|m| m.msgid == msgid)
        .ok_or_else(|| err(40035, "invalid parameter: msgid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> FakeWeChat {
        FakeWeChat::new(vec![
            Credential {
                account: "mp".into(),
                platform: Platform::Mp,
                receiver_id: "wx1".into(),
                secret: "s1".into(),
                agent_id: 0,
            },
            Credential {
                account: "work".into(),
                platform: Platform::Work,
                receiver_id: "ww1".into(),
                secret: "s2".into(),
                agent_id: 1000002,
            },
        ])
    }

    fn call(
        f: &mut FakeWeChat,
        platform: Platform,
        path: &str,
        query: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let query: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f.handle(&Call {
            platform,
            path,
            query: &query,
            body: &body,
            now: 1_800_000_000,
        })
    }

    fn json_of(a: Answer) -> Value {
        match a {
            Answer::Json(v) | Answer::JsonThenCallback(v, _) => v,
            other => panic!("not JSON: {other:?}"),
        }
    }

    fn mp_token(f: &mut FakeWeChat, force: bool) -> String {
        let v = json_of(call(
            f,
            Platform::Mp,
            "/cgi-bin/stable_token",
            &[],
            json!({"grant_type": "client_credential", "appid": "wx1", "secret": "s1",
                "force_refresh": force}),
        ));
        v["access_token"].as_str().unwrap().to_owned()
    }

    #[test]
    fn tokens_need_the_configured_secret_and_only_the_newest_is_valid() {
        let mut f = fake();
        let bad = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/stable_token",
            &[],
            json!({"appid": "wx1", "secret": "wrong"}),
        ));
        assert_eq!(bad["errcode"], 40125);
        let unknown = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/stable_token",
            &[],
            json!({"appid": "wx9", "secret": "s1"}),
        ));
        assert_eq!(unknown["errcode"], 40013);
        let first = mp_token(&mut f, false);
        assert_eq!(
            mp_token(&mut f, false),
            first,
            "stable: the same until forced"
        );
        let second = mp_token(&mut f, true);
        assert_ne!(second, first);
        let stale = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/menu/delete",
            &[("access_token", &first)],
            Value::Null,
        ));
        assert_eq!(stale["errcode"], 40001);
        let never = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/menu/delete",
            &[("access_token", "made-up")],
            Value::Null,
        ));
        assert_eq!(never["errcode"], 40014);
        let work = json_of(call(
            &mut f,
            Platform::Work,
            "/cgi-bin/gettoken",
            &[("corpid", "ww1"), ("corpsecret", "s2")],
            Value::Null,
        ));
        assert_eq!(work["errcode"], 0);
        // A WeCom token is no Official Account token.
        let crossed = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/menu/delete",
            &[("access_token", work["access_token"].as_str().unwrap())],
            Value::Null,
        ));
        assert_eq!(crossed["errcode"], 40014);
    }

    #[test]
    fn a_repeated_clientmsgid_answers_45065_with_the_first_msg_id_and_no_second_callback() {
        let mut f = fake();
        let t = mp_token(&mut f, false);
        let q = [("access_token", t.as_str())];
        let body = json!({"touser": ["o1", "o2", "o1"], "msgtype": "mpnews",
            "mpnews": {"media_id": "M"}, "send_ignore_reprint": 0, "clientmsgid": "c1"});
        let first = call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/message/mass/send",
            &q,
            body.clone(),
        );
        let Answer::JsonThenCallback(v, finished) = first else {
            panic!("{first:?}")
        };
        assert_eq!(v["msg_id"], FIRST_MSG_ID);
        assert_eq!(finished.total, 2, "distinct openids");
        let again = call(&mut f, Platform::Mp, "/cgi-bin/message/mass/send", &q, body);
        assert_eq!(
            again,
            Answer::Json(json!({"errcode": 45065, "errmsg": "clientmsgid exist",
            "msg_id": FIRST_MSG_ID}))
        );
        let status = |f: &mut FakeWeChat| {
            json_of(call(
                f,
                Platform::Mp,
                "/cgi-bin/message/mass/get",
                &q,
                json!({"msg_id": FIRST_MSG_ID}),
            ))["msg_status"]
                .clone()
        };
        assert_eq!(status(&mut f), "SENDING");
        f.finished(&finished);
        assert_eq!(status(&mut f), "SEND_SUCCESS");
        let no_media = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/message/mass/sendall",
            &q,
            json!({"filter": {"is_to_all": true}, "msgtype": "image", "image": {"media_id": ""}}),
        ));
        assert_eq!(no_media["errcode"], 40007);
        let no_tag = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/message/mass/sendall",
            &q,
            json!({"filter": {"is_to_all": false, "tag_id": 7}, "msgtype": "text",
                "text": {"content": "x"}}),
        ));
        assert_eq!(no_tag["errcode"], 45159);
    }

    #[test]
    fn tags_follow_wechats_rules() {
        let mut f = fake();
        let t = mp_token(&mut f, false);
        let q = [("access_token", t.as_str())];
        let create = |f: &mut FakeWeChat, name: &str| {
            json_of(call(
                f,
                Platform::Mp,
                "/cgi-bin/tags/create",
                &q,
                json!({"tag": {"name": name}}),
            ))
        };
        assert_eq!(create(&mut f, "vip")["tag"]["id"], 100);
        assert_eq!(create(&mut f, "vip")["errcode"], 45157);
        assert_eq!(create(&mut f, &"x".repeat(31))["errcode"], 45158);
        let tag = |f: &mut FakeWeChat, id: u64, n: usize| {
            json_of(call(
                f,
                Platform::Mp,
                "/cgi-bin/tags/members/batchtagging",
                &q,
                json!({"openid_list": (0..n).map(|i| format!("o{i}")).collect::<Vec<_>>(), "tagid": id}),
            ))
        };
        assert_eq!(tag(&mut f, 100, 2)["errcode"], 0);
        assert_eq!(tag(&mut f, 100, 51)["errcode"], 40032);
        assert_eq!(tag(&mut f, 101, 2)["errcode"], 45159);
        let info = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/user/info/batchget",
            &q,
            json!({"user_list": [{"openid": "o1", "lang": "zh_CN"}]}),
        ));
        assert_eq!(info["user_info_list"][0]["tagid_list"], json!([100]));
    }

    #[test]
    fn menus_come_back_in_the_shapes_wechat_answers() {
        let mut f = fake();
        let t = mp_token(&mut f, false);
        let q = [("access_token", t.as_str())];
        let none = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/menu/get",
            &q,
            Value::Null,
        ));
        assert_eq!(none["errcode"], 46003);
        let menu = json!({"button": [{"type": "click", "name": "A", "key": "K"},
            {"name": "B", "sub_button": [{"type": "view", "name": "C", "url": "https://x/"}]}]});
        json_of(call(&mut f, Platform::Mp, "/cgi-bin/menu/create", &q, menu));
        let got = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/menu/get",
            &q,
            Value::Null,
        ));
        assert_eq!(got["menu"]["button"][0]["sub_button"], json!([]));
        let current = json_of(call(
            &mut f,
            Platform::Mp,
            "/cgi-bin/get_current_selfmenu_info",
            &q,
            Value::Null,
        ));
        assert_eq!(current["is_menu_open"], 1);
        assert_eq!(
            current["selfmenu_info"]["button"][1]["sub_button"]["list"][0]["name"],
            "C"
        );
        let work = json_of(call(
            &mut f,
            Platform::Work,
            "/cgi-bin/gettoken",
            &[("corpid", "ww1"), ("corpsecret", "s2")],
            Value::Null,
        ));
        let wt = work["access_token"].as_str().unwrap();
        let other_agent = json_of(call(
            &mut f,
            Platform::Work,
            "/cgi-bin/menu/get",
            &[("access_token", wt), ("agentid", "1")],
            Value::Null,
        ));
        assert_eq!(other_agent["errcode"], 301002);
    }

    #[test]
    fn an_oauth_code_stands_for_the_sandbox_follower_once() {
        let mut f = fake();
        let Answer::Redirect(to) = call(
            &mut f,
            Platform::Mp,
            "/connect/oauth2/authorize",
            &[
                ("appid", "wx1"),
                ("redirect_uri", "http://gw/l/a/b/oauth"),
                ("state", "S"),
            ],
            Value::Null,
        ) else {
            panic!()
        };
        assert_eq!(to, "http://gw/l/a/b/oauth?code=sandbox-code-1&state=S");
        let exchange = |f: &mut FakeWeChat| {
            json_of(call(
                f,
                Platform::Mp,
                "/sns/oauth2/access_token",
                &[
                    ("appid", "wx1"),
                    ("secret", "s1"),
                    ("code", "sandbox-code-1"),
                    ("grant_type", "authorization_code"),
                ],
                Value::Null,
            ))
        };
        assert_eq!(exchange(&mut f)["openid"], FOLLOWERS[0]);
        assert_eq!(exchange(&mut f)["errcode"], 40163);
    }

    #[test]
    fn a_group_message_reaches_the_owners_groups_or_the_tagged_customers() {
        let mut f = fake();
        let token = json_of(call(
            &mut f,
            Platform::Work,
            "/cgi-bin/gettoken",
            &[("corpid", "ww1"), ("corpsecret", "s2")],
            Value::Null,
        ))["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut post = |path: &str, body: Value| {
            json_of(call(
                &mut f,
                Platform::Work,
                path,
                &[("access_token", token.as_str())],
                body,
            ))
        };
        let text = json!({"content": "hi"});
        let no_sender = post(
            "/cgi-bin/externalcontact/add_msg_template",
            json!({"chat_type": "group", "text": text}),
        );
        assert_eq!(no_sender["errcode"], 40035);
        let group = post(
            "/cgi-bin/externalcontact/add_msg_template",
            json!({"chat_type": "group", "sender": "zhangsan", "text": text}),
        );
        let msgid = group["msgid"].as_str().unwrap().to_owned();
        let sent = post(
            "/cgi-bin/externalcontact/get_groupmsg_send_result",
            json!({"msgid": msgid, "userid": "zhangsan"}),
        );
        assert_eq!(sent["send_list"][0]["chat_id"], "wrSandboxChat0001");
        let groups = post(
            "/cgi-bin/externalcontact/get_groupmsg_list_v2",
            json!({"chat_type": "group", "start_time": 0, "end_time": 4_000_000_000u64}),
        );
        assert_eq!(groups["group_msg_list"][0]["msgid"], msgid.as_str());
        let singles = post(
            "/cgi-bin/externalcontact/get_groupmsg_list_v2",
            json!({"chat_type": "single", "start_time": 0, "end_time": 4_000_000_000u64}),
        );
        assert_eq!(singles["group_msg_list"], json!([]));
        // A tag nobody carries reaches nobody; no filter, every customer of the sender.
        let tagged = post(
            "/cgi-bin/externalcontact/add_msg_template",
            json!({"sender": "zhangsan", "text": text,
                "tag_filter": {"group_list": [{"tag_list": ["etSandboxTag1"]}]}}),
        );
        let sent = post(
            "/cgi-bin/externalcontact/get_groupmsg_send_result",
            json!({"msgid": tagged["msgid"], "userid": "zhangsan"}),
        );
        assert_eq!(sent["send_list"], json!([]));
        let too_many = post(
            "/cgi-bin/externalcontact/add_msg_template",
            json!({"sender": "zhangsan", "external_userid": ["wmA"],
                "attachments": vec![json!({"msgtype": "image", "image": {"media_id": "M"}}); 10]}),
        );
        assert_eq!(too_many["errcode"], 40035);
    }
}
