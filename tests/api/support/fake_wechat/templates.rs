//! The fake's template messages and subscription notices, as WeChat documents them
//! (developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html
//! and Subscription_Messages/api.html):
//! - `template/get_all_private_template` lists the account's templates (seeded below, or set
//!   below); `wxaapi/newtmpl/gettemplate` the notice templates.
//! - `message/template/send` needs a known `template_id` (40037 otherwise) and a `data` value
//!   for every field (47003 otherwise); an openid starting `oUnsub` has not followed (43004),
//!   one starting `oBad` is invalid (40003). "For the same openid and client_msg_id only one
//!   message is sent": a repeat is answered errcode 0 with the first send's msgid and is not
//!   delivered again (the documentation says only that it is not sent; answering the first
//!   msgid is this fake's choice).
//! - `message/subscribe/bizsend`: known template (40037), every field (47003), 43101 for an
//!   openid starting `oRefuse` (the user did not accept the notice); no de-duplication key.
//! - [`FakeWeChat::lose_template_answers`]: the next sends are delivered and then their answer
//!   is held far past any deadline, as when the answer is lost.
//!
//! Every delivery is recorded ([`TemplateDelivery`]), so a test counts what reached followers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::FakeWeChat;

pub const TEMPLATE_SEND: &str = "/cgi-bin/message/template/send";
pub const BIZSEND: &str = "/cgi-bin/message/subscribe/bizsend";

/// One message that reached a follower.
#[derive(Debug, Clone)]
pub struct TemplateDelivery {
    pub path: String,
    pub touser: String,
    pub client_msg_id: String,
    pub msgid: i64,
    pub body: Value,
}

#[derive(Default)]
pub(super) struct Templates {
    deliveries: Vec<TemplateDelivery>,
    /// (credential, openid, client_msg_id) → msgid.
    by_cmid: HashMap<(String, String, String), i64>,
    /// Repeats answered from `by_cmid`.
    repeats: usize,
    next: i64,
    lose: usize,
}

/// How long a lost answer is held.
const LOST: Duration = Duration::from_secs(120);

pub const SEEDED_TEMPLATE: &str = "tmpl-order-shipped";
pub const SEEDED_NOTICE: &str = "notice-appointment";

fn seeded() -> Vec<(String, String)> {
    vec![
        (
            SEEDED_TEMPLATE.into(),
            "{{first.DATA}}\n订单号:{{character_string1.DATA}}\n商品:{{thing2.DATA}}\n{{remark.DATA}}"
                .into(),
        ),
        (
            SEEDED_NOTICE.into(),
            "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}".into(),
        ),
    ]
}

pub(super) fn handles(path: &str) -> bool {
    matches!(
        path,
        "/cgi-bin/template/get_all_private_template"
            | "/wxaapi/newtmpl/gettemplate"
            | TEMPLATE_SEND
            | BIZSEND
    )
}

fn fields(content: &str) -> Vec<String> {
    content
        .split("{{")
        .skip(1)
        .filter_map(|p| p.split_once(".DATA}}").map(|(n, _)| n.to_owned()))
        .collect()
}

/// The answer, and how long to hold it back.
pub(super) fn answer(
    t: &mut Templates,
    credential: &str,
    path: &str,
    body: &Value,
) -> (Value, Option<Duration>) {
    let list = seeded();
    match path {
        "/cgi-bin/template/get_all_private_template" => {
            let items: Vec<Value> = list
                .iter()
                .filter(|(id, _)| !id.starts_with("notice"))
                .map(|(id, content)| {
                    json!({"template_id": id, "title": format!("title of {id}"),
                        "primary_industry": "IT科技", "deputy_industry": "互联网|电子商务",
                        "content": content, "example": ""})
                })
                .collect();
            (json!({"template_list": items}), None)
        }
        "/wxaapi/newtmpl/gettemplate" => {
            let items: Vec<Value> = list
                .iter()
                .filter(|(id, _)| id.starts_with("notice"))
                .map(|(id, content)| {
                    json!({"priTmplId": id, "title": format!("title of {id}"),
                        "content": content, "example": "", "type": 3})
                })
                .collect();
            (json!({"errcode": 0, "errmsg": "ok", "data": items}), None)
        }
        _ => send(t, credential, path, body, &list),
    }
}

fn send(
    t: &mut Templates,
    credential: &str,
    path: &str,
    body: &Value,
    list: &[(String, String)],
) -> (Value, Option<Duration>) {
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
    let template_id = body["template_id"].as_str().unwrap_or_default();
    let Some((_, content)) = list.iter().find(|(id, _)| id == template_id) else {
        return (
            json!({"errcode": 40037, "errmsg": "invalid template_id"}),
            None,
        );
    };
    if fields(content)
        .iter()
        .any(|f| body["data"][f]["value"].as_str().is_none())
    {
        return (
            json!({"errcode": 47003, "errmsg": "argument invalid! data.value"}),
            None,
        );
    }
    if touser.starts_with("oBad") || touser.is_empty() {
        return (json!({"errcode": 40003, "errmsg": "invalid openid"}), None);
    }
    if path == TEMPLATE_SEND && touser.starts_with("oUnsub") {
        return (
            json!({"errcode": 43004, "errmsg": "require subscribe"}),
            None,
        );
    }
    if path == BIZSEND && touser.starts_with("oRefuse") {
        return (
            json!({"errcode": 43101, "errmsg": "user refuse to accept the msg"}),
            None,
        );
    }
    let cmid = body["client_msg_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = (credential.to_owned(), touser.clone(), cmid.clone());
    if path == TEMPLATE_SEND && !cmid.is_empty() {
        if let Some(&msgid) = t.by_cmid.get(&key) {
            t.repeats += 1;
            return (json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}), None);
        }
    }
    t.next += 1;
    let msgid = 2_000_000_000 + t.next;
    if path == TEMPLATE_SEND && !cmid.is_empty() {
        t.by_cmid.insert(key, msgid);
    }
    t.deliveries.push(TemplateDelivery {
        path: path.to_owned(),
        touser,
        client_msg_id: cmid,
        msgid,
        body: body.clone(),
    });
    let delay = if t.lose > 0 {
        t.lose -= 1;
        Some(LOST)
    } else {
        None
    };
    (json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}), delay)
}

impl FakeWeChat {
    /// Every template message and notice that reached a follower.
    pub fn template_deliveries(&self) -> Vec<TemplateDelivery> {
        self.state().templates.deliveries.clone()
    }

    /// How many sends repeated a client_msg_id already sent (answered, not delivered).
    pub fn template_repeats(&self) -> usize {
        self.state().templates.repeats
    }

    /// The next `n` sends are delivered but their answers are lost.
    pub fn lose_template_answers(&self, n: usize) {
        self.state().templates.lose += n;
    }
}
