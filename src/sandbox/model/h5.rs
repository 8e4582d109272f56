//! The sandbox's answers for the rest of tag management and for the JS-SDK tickets (issue 14),
//! in WeChat's documented shapes:
//!
//! - `tags/get`: WeChat's reserved tag 2 (星标组) and every tag created, with member counts;
//!   `tags/update` and `tags/delete`: 45058 for a reserved tag (0, 1, 2), 45159 for an unknown
//!   one, 45157 / 45158 for a name taken or too long; `tags/getidlist`: 40003 for an empty
//!   openid, else the ids of the tags the openid carries.
//! - `ticket/getticket?type=jsapi` (Official Account), `get_jsapi_ticket` and
//!   `ticket/get?type=agent_config` (WeCom): a ticket derived from the access token used, so it
//!   changes when the token does, valid 7200 s.

use serde_json::{json, Value};

use super::{err, ok, ok_with, str_of, AccountState, Call, TAG_NAME_MAX};
use crate::domain::Platform;

/// WeChat's reserved tags: 0, 1 and 2.
const RESERVED_MAX: u64 = 2;

pub(super) fn answer(state: &mut AccountState, call: &Call<'_>) -> Option<Value> {
    let body = call.body;
    let token = call.query.get("access_token").map_or("", String::as_str);
    let kind = call.query.get("type").map_or("", String::as_str);
    Some(match (call.platform, call.path) {
        (Platform::Mp, "/cgi-bin/tags/get") => {
            let mut tags = vec![json!({"id": 2, "name": "星标组", "count": 0})];
            tags.extend(
                state
                    .tags
                    .iter()
                    .map(|(id, t)| json!({"id": id, "name": t.name, "count": t.members.len()})),
            );
            json!({"tags": tags})
        }
        (Platform::Mp, "/cgi-bin/tags/update") => {
            let id = body["tag"]["id"].as_u64().unwrap_or(0);
            let name = str_of(&body["tag"], "name");
            if id <= RESERVED_MAX {
                return Some(err(45058, "can't modify sys tag"));
            }
            if name.is_empty() || name.len() > TAG_NAME_MAX {
                return Some(err(45158, "tag name too long"));
            }
            if state.tags.iter().any(|(i, t)| *i != id && t.name == name) {
                return Some(err(45157, "invalid tag name"));
            }
            match state.tags.get_mut(&id) {
                Some(tag) => {
                    tag.name = name.to_owned();
                    ok()
                }
                None => err(45159, "invalid tag id"),
            }
        }
        (Platform::Mp, "/cgi-bin/tags/delete") => {
            let id = body["tag"]["id"].as_u64().unwrap_or(0);
            if id <= RESERVED_MAX {
                return Some(err(45058, "can't modify sys tag"));
            }
            match state.tags.remove(&id) {
                Some(_) => ok(),
                None => err(45159, "invalid tag id"),
            }
        }
        (Platform::Mp, "/cgi-bin/tags/getidlist") => {
            let open_id = str_of(body, "openid");
            if open_id.is_empty() {
                return Some(err(40003, "invalid openid"));
            }
            let ids: Vec<u64> = state
                .tags
                .iter()
                .filter(|(_, t)| t.members.contains(open_id))
                .map(|(id, _)| *id)
                .collect();
            json!({"tagid_list": ids})
        }
        (Platform::Mp, "/cgi-bin/ticket/getticket") if kind == "jsapi" => ticket("jsapi", token),
        (Platform::Mp, "/cgi-bin/ticket/getticket") => err(40097, "invalid args"),
        (Platform::Work, "/cgi-bin/get_jsapi_ticket") => ticket("jsapi", token),
        (Platform::Work, "/cgi-bin/ticket/get") if kind == "agent_config" => ticket("agent", token),
        (Platform::Work, "/cgi-bin/ticket/get") => err(40097, "invalid args"),
        _ => return None,
    })
}

fn ticket(kind: &str, token: &str) -> Value {
    ok_with(json!({"ticket": format!("sandbox-{kind}-ticket-{token}"), "expires_in": 7200}))
}
