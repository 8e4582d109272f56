//! The fake's menus, as WeChat documents them: `menu/create` replaces the default menu (with
//! `agentid`: a WeCom application's menu) and refuses a button WeChat would (40016 button count,
//! 40017 type, 40018 name size, 40023 sub-button count, 40025 sub-button name size); `menu/get`
//! answers 46003 without a menu and adds `"sub_button": []` to leaves; `get_current_selfmenu_info`
//! nests sub-buttons in `{"list": [...]}`; `menu/delete` removes the conditional menus too;
//! `addconditional` needs a default menu (65303) and a matchrule (65304) and answers a string
//! menuid; `delconditional` of an unknown menuid is 65301; `trymatch` answers the first
//! conditional menu whose `tag_id` the user has, or the default menu.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::FakeWeChat;

/// The live menus, per credential (appid; `<corpid>/<agentid>` for WeCom).
#[derive(Default)]
pub(super) struct Menus {
    /// The default menu, exactly as `menu/create` received it.
    default: HashMap<String, Value>,
    /// The conditional menus, each as `addconditional` received it plus its `menuid`.
    conditional: HashMap<String, Vec<Value>>,
    next_menuid: u64,
    /// openid → its tag ids, for `trymatch`.
    tags: HashMap<String, Vec<u64>>,
}

const MP_TYPES: &[&str] = &[
    "click",
    "view",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "media_id",
    "article_id",
    "article_view_limited",
    "miniprogram",
];
const WORK_TYPES: &[&str] = &[
    "click",
    "view",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "view_miniprogram",
];

pub(super) fn handles(path: &str) -> bool {
    path.starts_with("/cgi-bin/menu/") || path == "/cgi-bin/get_current_selfmenu_info"
}

fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

pub(super) fn answer(
    menus: &mut Menus,
    credential: &str,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
) -> Value {
    let agent = query.get("agentid");
    let key = match agent {
        Some(agent) => format!("{credential}/{agent}"),
        None => credential.to_owned(),
    };
    match path {
        "/cgi-bin/menu/create" => {
            let (types, max_sub_name) = match agent {
                Some(_) => (WORK_TYPES, 40),
                None => (MP_TYPES, 60),
            };
            if let Err(refusal) = check(body, types, max_sub_name) {
                return refusal;
            }
            menus.default.insert(key, body.clone());
            ok()
        }
        "/cgi-bin/menu/get" => {
            let Some(menu) = menus.default.get(&key) else {
                return error(46003, "menu no exist");
            };
            let buttons = with_empty_subs(&menu["button"]);
            if agent.is_some() {
                return json!({"errcode": 0, "errmsg": "ok", "button": buttons});
            }
            let conditional: Vec<Value> = menus
                .conditional
                .get(&key)
                .into_iter()
                .flatten()
                .map(|c| {
                    let mut c = c.clone();
                    c["button"] = with_empty_subs(&c["button"]);
                    c
                })
                .collect();
            json!({"menu": {"button": buttons, "menuid": 100}, "conditionalmenu": conditional})
        }
        "/cgi-bin/get_current_selfmenu_info" => match menus.default.get(&key) {
            None => json!({"is_menu_open": 0}),
            Some(menu) => {
                let buttons: Vec<Value> = menu["button"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let mut b = b.clone();
                        if let Some(subs) = b.get("sub_button").cloned() {
                            b["sub_button"] = json!({"list": subs});
                        }
                        b
                    })
                    .collect();
                json!({"is_menu_open": 1, "selfmenu_info": {"button": buttons}})
            }
        },
        "/cgi-bin/menu/delete" => {
            menus.default.remove(&key);
            menus.conditional.remove(&key);
            ok()
        }
        "/cgi-bin/menu/addconditional" => {
            if !menus.default.contains_key(&key) {
                return error(65303, "there is no selfmenu, please create selfmenu first");
            }
            if body["matchrule"]
                .as_object()
                .is_none_or(serde_json::Map::is_empty)
            {
                return error(65304, "match rule empty");
            }
            if let Err(refusal) = check(body, MP_TYPES, 60) {
                return refusal;
            }
            menus.next_menuid += 1;
            let menuid = format!("{}", 208379532 + menus.next_menuid);
            let mut stored = body.clone();
            stored["menuid"] = json!(menuid.parse::<u64>().unwrap());
            menus.conditional.entry(key).or_default().push(stored);
            json!({"menuid": menuid})
        }
        "/cgi-bin/menu/delconditional" => {
            let wanted = match &body["menuid"] {
                Value::String(s) => s.parse::<u64>().ok(),
                other => other.as_u64(),
            };
            let list = menus.conditional.entry(key).or_default();
            let before = list.len();
            list.retain(|c| c["menuid"].as_u64() != wanted);
            if list.len() == before {
                return error(65301, "menuid not exist");
            }
            ok()
        }
        "/cgi-bin/menu/trymatch" => {
            let user = body["user_id"].as_str().unwrap_or_default();
            let tags = menus.tags.get(user).cloned().unwrap_or_default();
            let matched = menus.conditional.get(&key).into_iter().flatten().find(|c| {
                let tag = &c["matchrule"]["tag_id"];
                let tag = tag
                    .as_u64()
                    .or_else(|| tag.as_str().and_then(|t| t.parse().ok()));
                tag.is_some_and(|t| tags.contains(&t))
            });
            match matched.or(menus.default.get(&key)) {
                Some(menu) => json!({"button": with_empty_subs(&menu["button"])}),
                None => error(46003, "menu no exist"),
            }
        }
        _ => error(48001, "api unauthorized"),
    }
}

/// WeChat's own checks, one errcode for the first problem found.
fn check(menu: &Value, types: &[&str], max_sub_name: usize) -> Result<(), Value> {
    let buttons = menu["button"].as_array().cloned().unwrap_or_default();
    if buttons.is_empty() || buttons.len() > 3 {
        return Err(error(40016, "invalid button size"));
    }
    for b in &buttons {
        if b["name"]
            .as_str()
            .is_none_or(|n| n.is_empty() || n.len() > 16)
        {
            return Err(error(40018, "invalid button name size"));
        }
        let subs = b["sub_button"].as_array().cloned().unwrap_or_default();
        if subs.is_empty() {
            if !b["type"].as_str().is_some_and(|t| types.contains(&t)) {
                return Err(error(40017, "invalid button type"));
            }
            continue;
        }
        if subs.len() > 5 {
            return Err(error(40023, "invalid sub button size"));
        }
        for sub in &subs {
            if sub["name"]
                .as_str()
                .is_none_or(|n| n.is_empty() || n.len() > max_sub_name)
            {
                return Err(error(40025, "invalid sub button name size"));
            }
            if !sub["type"].as_str().is_some_and(|t| types.contains(&t)) {
                return Err(error(40024, "invalid sub button type"));
            }
        }
    }
    Ok(())
}

/// `menu/get` answers every leaf with `"sub_button": []`.
fn with_empty_subs(buttons: &Value) -> Value {
    let buttons = buttons.as_array().cloned().unwrap_or_default();
    Value::Array(
        buttons
            .into_iter()
            .map(|mut b| {
                let subs = b.get("sub_button").cloned().unwrap_or(json!([]));
                b["sub_button"] = with_empty_subs(&subs);
                b
            })
            .collect(),
    )
}

impl FakeWeChat {
    /// The default menu live for a credential (appid, or `<corpid>/<agentid>`), exactly as
    /// `menu/create` received it.
    pub fn live_menu(&self, key: &str) -> Option<Value> {
        self.state().menus.default.get(key).cloned()
    }

    /// Someone changes the menu in WeChat's own console, behind the gateway's back.
    pub fn edit_menu_in_console(&self, key: &str, menu: Value) {
        self.state().menus.default.insert(key.to_owned(), menu);
    }

    /// Gives a user a tag, for `trymatch`.
    pub fn tag_user(&self, open_id: &str, tag_id: u64) {
        self.state()
            .menus
            .tags
            .entry(open_id.to_owned())
            .or_default()
            .push(tag_id);
    }
}
