//! The fake's JS-SDK tickets, as WeChat documents them: `GET /cgi-bin/ticket/getticket?type=jsapi`
//! (Official Account JS-SDK doc, 附录1), WeCom's `GET /cgi-bin/get_jsapi_ticket` (the corp's
//! ticket) and `GET /cgi-bin/ticket/get?type=agent_config` (the application's), each answering
//! `{"errcode": 0, "errmsg": "ok", "ticket", "expires_in": 7200}` to a valid access token (the
//! caller checks the token; a stale one is 40001 like every call). Each fetch issues a new
//! ticket (`ticket-<credential>-<kind>-<n>`); [`FakeWeChat::current_ticket`] tells a test the
//! newest, to check a signature with. Another `type` is 40097 (invalid args).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::FakeWeChat;

#[derive(Default)]
pub(super) struct Tickets {
    issued: u64,
    /// (credential, kind) → the newest ticket.
    current: HashMap<(String, String), String>,
    expires_in: Option<u64>,
}

pub(super) fn handles(path: &str) -> bool {
    matches!(
        path,
        "/cgi-bin/ticket/getticket" | "/cgi-bin/get_jsapi_ticket" | "/cgi-bin/ticket/get"
    )
}

pub(super) fn answer(
    t: &mut Tickets,
    credential: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> Value {
    let kind = match (path, query.get("type").map(String::as_str)) {
        ("/cgi-bin/ticket/getticket", Some("jsapi")) => "jsapi",
        ("/cgi-bin/get_jsapi_ticket", _) => "jsapi",
        ("/cgi-bin/ticket/get", Some("agent_config")) => "agent",
        _ => return json!({"errcode": 40097, "errmsg": "invalid args"}),
    };
    t.issued += 1;
    let ticket = format!("ticket-{credential}-{kind}-{}", t.issued);
    t.current
        .insert((credential.to_owned(), kind.to_owned()), ticket.clone());
    json!({"errcode": 0, "errmsg": "ok", "ticket": ticket,
        "expires_in": t.expires_in.unwrap_or(7200)})
}

impl FakeWeChat {
    /// The newest ticket of a credential (appid or corpid) and kind (`jsapi`, `agent`).
    pub fn current_ticket(&self, credential: &str, kind: &str) -> Option<String> {
        self.state()
            .tickets
            .current
            .get(&(credential.to_owned(), kind.to_owned()))
            .cloned()
    }

    /// Tickets issued from now on say they expire after `seconds`.
    pub fn set_ticket_expires_in(&self, seconds: u64) {
        self.state().tickets.expires_in = Some(seconds);
    }
}
