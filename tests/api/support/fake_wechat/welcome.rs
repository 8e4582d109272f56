//! The fake's `externalcontact/send_welcome_msg`, as WeCom documents it ("发送新客户欢迎语"): a
//! `welcome_code` works once (a second use answers 41051, "externaluser has started chatting"),
//! and a call needs a code and something to send (`text.content` or 1 to 9 `attachments`),
//! else 40058 (invalid parameter).

use std::collections::HashSet;

use serde_json::{json, Value};

pub(super) const PATH: &str = "/cgi-bin/externalcontact/send_welcome_msg";

/// The welcome codes already used.
#[derive(Default)]
pub(super) struct Welcomes {
    used: HashSet<String>,
}

pub(super) fn answer(welcomes: &mut Welcomes, body: &Value) -> Value {
    let code = body["welcome_code"].as_str().unwrap_or_default();
    let text = body["text"]["content"].as_str().unwrap_or_default();
    let attachments = body["attachments"].as_array().map_or(0, Vec::len);
    if code.is_empty() || (text.is_empty() && attachments == 0) || attachments > 9 {
        return json!({"errcode": 40058, "errmsg": "invalid parameter"});
    }
    if !welcomes.used.insert(code.to_owned()) {
        return json!({"errcode": 41051, "errmsg": "externaluser has started chatting"});
    }
    json!({"errcode": 0, "errmsg": "ok"})
}
