//! The sandbox's template messages and subscription notices: the account's templates (two
//! fixed ones, below), `message/template/send` (de-duplicated on openid and client_msg_id as
//! WeChat documents, then a TEMPLATESENDJOBFINISH `success` callback to the gateway) and
//! `message/subscribe/bizsend`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::domain::Platform;

use super::model::{Answer, Call};

/// The one template message of every sandbox account.
pub const TEMPLATE_ID: &str = "sandbox-order-shipped";
/// The one subscription-notice template.
pub const NOTICE_ID: &str = "sandbox-notice-appointment";

const TEMPLATE_CONTENT: &str =
    "{{first.DATA}}\n订单号:{{character_string1.DATA}}\n商品:{{thing2.DATA}}\n{{remark.DATA}}";
const NOTICE_CONTENT: &str = "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}";

/// A template message sent: its TEMPLATESENDJOBFINISH is owed to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFinished {
    pub account: String,
    pub open_id: String,
    pub msg_id: i64,
}

#[derive(Debug, Default)]
pub struct Templates {
    /// (account, openid, client_msg_id) → msgid.
    sent: HashMap<(String, String, String), i64>,
    next: i64,
}

pub fn handles(platform: Platform, path: &str) -> bool {
    platform == Platform::Mp
        && matches!(
            path,
            "/cgi-bin/template/get_all_private_template"
                | "/wxaapi/newtmpl/gettemplate"
                | "/cgi-bin/message/template/send"
                | "/cgi-bin/message/subscribe/bizsend"
        )
}

fn fields(content: &str) -> Vec<&str> {
    content
        .split("{{")
        .skip(1)
        .filter_map(|p| p.split_once(".DATA}}").map(|(n, _)| n))
        .collect()
}

impl Templates {
    pub fn answer(&mut self, account: &str, call: &Call<'_>) -> Answer {
        let body = call.body;
        match call.path {
            "/cgi-bin/template/get_all_private_template" => Answer::Json(json!({
                "template_list": [{
                    "template_id": TEMPLATE_ID, "title": "订单发货提醒",
                    "primary_industry": "IT科技", "deputy_industry": "互联网|电子商务",
                    "content": TEMPLATE_CONTENT, "example": "",
                }]
            })),
            "/wxaapi/newtmpl/gettemplate" => Answer::Json(json!({
                "errcode": 0, "errmsg": "ok",
                "data": [{"priTmplId": NOTICE_ID, "title": "预约提醒",
                    "content": NOTICE_CONTENT, "example": "", "type": 3}]
            })),
            path => {
                let template = path == "/cgi-bin/message/template/send";
                let (id, content) = if template {
                    (TEMPLATE_ID, TEMPLATE_CONTENT)
                } else {
                    (NOTICE_ID, NOTICE_CONTENT)
                };
                if body.get("template_id").and_then(Value::as_str) != Some(id) {
                    return Answer::Json(
                        json!({"errcode": 40037, "errmsg": "invalid template_id"}),
                    );
                }
                if fields(content)
                    .iter()
                    .any(|f| body["data"][f]["value"].as_str().is_none())
                {
                    return Answer::Json(
                        json!({"errcode": 47003, "errmsg": "argument invalid! data.value"}),
                    );
                }
                let open_id = body
                    .get("touser")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if open_id.is_empty() {
                    return Answer::Json(json!({"errcode": 40003, "errmsg": "invalid openid"}));
                }
                let cmid = body
                    .get("client_msg_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let key = (account.to_owned(), open_id.to_owned(), cmid.to_owned());
                if template && !cmid.is_empty() {
                    if let Some(msgid) = self.sent.get(&key) {
                        return Answer::Json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}));
                    }
                }
                self.next += 1;
                let msgid = 3_000_000_000 + self.next;
                let answer = json!({"errcode": 0, "errmsg": "ok", "msgid": msgid});
                if !template {
                    return Answer::Json(answer);
                }
                if !cmid.is_empty() {
                    self.sent.insert(key, msgid);
                }
                Answer::JsonThenTemplateFinished(
                    answer,
                    TemplateFinished {
                        account: account.to_owned(),
                        open_id: open_id.to_owned(),
                        msg_id: msgid,
                    },
                )
            }
        }
    }
}
