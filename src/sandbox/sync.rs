//! The sandbox's audience lists, for audience syncs (`docs/admin/syncs.md`): a few hundred demo
//! followers of every Official Account (`user/get`; their profiles are `user/info/batchget`'s
//! in [`super::model`]) and two WeCom members with demo customers
//! (`externalcontact/get_follow_user_list`, `externalcontact/batch/get_by_user`), paged as
//! WeChat pages them. Stateless: every account has the same audience.

use serde_json::{json, Value};

use super::model::{Call, FOLLOWERS};
use crate::domain::Platform;

/// How many followers an Official Account has in the sandbox.
pub const DEMO_FOLLOWERS: usize = 300;
/// WeChat's page size of `user/get`.
const FOLLOWERS_PAGE: usize = 10_000;
/// The WeCom members with customers, and the demo customers each has: customers 100..120 are
/// customers of both (WeCom lists such a customer once per member).
const MEMBERS: [(&str, std::ops::Range<usize>); 2] = [("zhangsan", 0..120), ("lisi", 100..180)];

/// Follower `i`: the three of [`FOLLOWERS`] first, then `oSandboxFollower<n>`.
fn follower(i: usize) -> String {
    match FOLLOWERS.get(i) {
        Some(f) => (*f).to_owned(),
        None => format!("oSandboxFollower{i:011}"),
    }
}

fn customer(i: usize) -> String {
    format!("wmSandboxCustomer{i:04}")
}

fn err(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

/// The answer to an audience list call; `None` for any other API.
pub fn answer(call: &Call<'_>) -> Option<Value> {
    Some(match (call.platform, call.path) {
        (Platform::Mp, "/cgi-bin/user/get") => followers(call),
        (Platform::Work, "/cgi-bin/externalcontact/get_follow_user_list") => json!({
            "errcode": 0, "errmsg": "ok",
            "follow_user": MEMBERS.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        }),
        (Platform::Work, "/cgi-bin/externalcontact/batch/get_by_user") => by_user(call.body),
        _ => return None,
    })
}

/// `user/get`: 10,000 a page after `next_openid`; the last page names its last openid, the call
/// after it answers `count` 0.
fn followers(call: &Call<'_>) -> Value {
    let after = call.query.get("next_openid").map_or("", String::as_str);
    let start = if after.is_empty() {
        0
    } else {
        match (0..DEMO_FOLLOWERS).find(|&i| follower(i) == after) {
            Some(i) => i + 1,
            None => return err(40003, "invalid openid"),
        }
    };
    let end = (start + FOLLOWERS_PAGE).min(DEMO_FOLLOWERS);
    if start >= end {
        return json!({"total": DEMO_FOLLOWERS, "count": 0, "next_openid": ""});
    }
    let ids: Vec<String> = (start..end).map(follower).collect();
    json!({"total": DEMO_FOLLOWERS, "count": ids.len(), "data": {"openid": ids},
        "next_openid": follower(end - 1)})
}

/// `batch/get_by_user`: one row per (customer, member) pair of the listed members, `limit`
/// (at most 100) a page, by an opaque cursor.
fn by_user(body: &Value) -> Value {
    let members: Vec<&str> = body["userid_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if members.is_empty() || members.len() > 100 {
        return err(40058, "userid_list size must be 1..100");
    }
    let limit = body["limit"].as_u64().unwrap_or(50) as usize;
    if limit == 0 || limit > 100 {
        return err(40058, "limit must be 1..100");
    }
    let mut rows = Vec::new();
    for member in members {
        let Some((_, range)) = MEMBERS.iter().find(|(m, _)| *m == member) else {
            return err(84061, "not external contact");
        };
        rows.extend(range.clone().map(|i| (i, member)));
    }
    let cursor = body["cursor"].as_str().unwrap_or_default();
    let start = match cursor {
        "" => 0,
        c => match c
            .strip_prefix("sandbox-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n <= rows.len() => n,
            _ => return err(40058, "invalid cursor"),
        },
    };
    let end = (start + limit).min(rows.len());
    let list: Vec<Value> = rows[start..end]
        .iter()
        .map(|&(i, member)| {
            json!({
                "external_contact": {"external_userid": customer(i),
                    "name": format!("Sandbox customer {i}"), "type": 1, "gender": 1 + i % 2,
                    "unionid": format!("uSandbox-{}", customer(i))},
                "follow_info": {"userid": member, "remark": "", "description": "",
                    "createtime": 1_767_225_600 + i as i64, "tag_id": [], "remark_corp_name": "",
                    "remark_mobiles": [], "oper_userid": member, "add_way": 1, "state": ""},
            })
        })
        .collect();
    let next = if end < rows.len() {
        format!("sandbox-{end}")
    } else {
        String::new()
    };
    json!({"errcode": 0, "errmsg": "ok", "external_contact_list": list, "next_cursor": next})
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn call<'a>(
        platform: Platform,
        path: &'a str,
        query: &'a HashMap<String, String>,
        body: &'a Value,
    ) -> Call<'a> {
        Call {
            platform,
            path,
            query,
            body,
            now: 0,
        }
    }

    #[test]
    fn followers_come_in_one_page_then_nothing() {
        let none = HashMap::new();
        let first = answer(&call(
            Platform::Mp,
            "/cgi-bin/user/get",
            &none,
            &Value::Null,
        ))
        .unwrap();
        assert_eq!(first["count"], DEMO_FOLLOWERS);
        assert_eq!(first["data"]["openid"][0], FOLLOWERS[0]);
        let after = HashMap::from([(
            "next_openid".to_owned(),
            first["next_openid"].as_str().unwrap().to_owned(),
        )]);
        let last = answer(&call(
            Platform::Mp,
            "/cgi-bin/user/get",
            &after,
            &Value::Null,
        ))
        .unwrap();
        assert_eq!(last["count"], 0);
        assert!(last.get("data").is_none());
    }

    #[test]
    fn a_members_customers_come_by_cursor() {
        let none = HashMap::new();
        let path = "/cgi-bin/externalcontact/batch/get_by_user";
        let body = json!({"userid_list": ["zhangsan"], "cursor": "", "limit": 100});
        let first = answer(&call(Platform::Work, path, &none, &body)).unwrap();
        assert_eq!(
            first["external_contact_list"].as_array().unwrap().len(),
            100
        );
        let cursor = first["next_cursor"].as_str().unwrap();
        let body = json!({"userid_list": ["zhangsan"], "cursor": cursor, "limit": 100});
        let second = answer(&call(Platform::Work, path, &none, &body)).unwrap();
        assert_eq!(
            second["external_contact_list"].as_array().unwrap().len(),
            20
        );
        assert_eq!(second["next_cursor"], "");
        let unknown = json!({"userid_list": ["nobody"], "limit": 100});
        assert_eq!(
            answer(&call(Platform::Work, path, &none, &unknown)).unwrap()["errcode"],
            84061
        );
    }
}
