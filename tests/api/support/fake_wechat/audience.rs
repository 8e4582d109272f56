//! The fake's audience lists, as WeChat documents them, for audience syncs:
//!
//! - `GET /cgi-bin/user/get?next_openid=`: the followers set with
//!   [`FakeWeChat::set_followers`] (`oFollower0000000`, `oFollower0000001`, ...), in a fixed
//!   order, 10,000 a page after `next_openid` ("一次拉取调用最多拉取10000个关注者的OpenID"). A page
//!   names its last openid in `next_openid`, the last one too; asking after the last follower
//!   answers `count` 0 without `data` and an empty `next_openid` (the documented example of
//!   23,000 followers: three pages, then nothing). An unknown `next_openid` is 40003.
//!   Their profiles are `user/info/batchget`'s ([`super::oauth`]).
//! - `GET /cgi-bin/externalcontact/get_follow_user_list`: the members set with
//!   [`FakeWeChat::set_customers`].
//! - `POST /cgi-bin/externalcontact/batch/get_by_user` `{"userid_list", "cursor", "limit"}`:
//!   one row `{"external_contact", "follow_info"}` per (customer, member) pair of the listed
//!   members, `limit` rows a page (at most 100, else 40058), `next_cursor` empty on the last
//!   page; 1 to 100 userids (else 40058); a member who is not one is 84061 (as the
//!   PowerWeChat and WxJava clients' answer shapes and WeCom's API page describe it).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::FakeWeChat;

/// WeChat's page size of `user/get`.
const FOLLOWERS_PAGE: usize = 10_000;

#[derive(Default)]
pub(super) struct Audience {
    /// How many followers every Official Account credential has.
    followers: usize,
    /// Member → the range of customer numbers they have (`wmCustomer00000`, ...).
    customers: Vec<(String, std::ops::Range<usize>)>,
}

pub(super) fn handles(path: &str) -> bool {
    matches!(
        path,
        "/cgi-bin/user/get"
            | "/cgi-bin/externalcontact/get_follow_user_list"
            | "/cgi-bin/externalcontact/batch/get_by_user"
    )
}

/// Follower `i`'s openid.
pub fn follower(i: usize) -> String {
    format!("oFollower{i:07}")
}

/// Customer `i`'s external_userid.
pub fn customer(i: usize) -> String {
    format!("wmCustomer{i:05}")
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

pub(super) fn answer(
    a: &Audience,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
) -> Value {
    match path {
        "/cgi-bin/user/get" => {
            let after = query.get("next_openid").map_or("", String::as_str);
            let start = if after.is_empty() {
                0
            } else {
                match after
                    .strip_prefix("oFollower")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n < a.followers)
                {
                    Some(n) => n + 1,
                    None => return error(40003, "invalid openid"),
                }
            };
            let end = (start + FOLLOWERS_PAGE).min(a.followers);
            if start >= end {
                return json!({"total": a.followers, "count": 0, "next_openid": ""});
            }
            let ids: Vec<String> = (start..end).map(follower).collect();
            json!({
                "total": a.followers,
                "count": ids.len(),
                "data": {"openid": ids},
                "next_openid": follower(end - 1),
            })
        }
        "/cgi-bin/externalcontact/get_follow_user_list" => json!({
            "errcode": 0, "errmsg": "ok",
            "follow_user": a.customers.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
        }),
        _ => {
            let members: Vec<&str> = body["userid_list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if members.is_empty() || members.len() > 100 {
                return error(40058, "userid_list size must be 1..100");
            }
            let limit = body["limit"].as_u64().unwrap_or(50) as usize;
            if limit == 0 || limit > 100 {
                return error(40058, "limit must be 1..100");
            }
            let mut rows = Vec::new();
            for member in &members {
                let Some((_, range)) = a.customers.iter().find(|(m, _)| m == member) else {
                    return error(84061, "not external contact");
                };
                rows.extend(range.clone().map(|i| (i, *member)));
            }
            let cursor = body["cursor"].as_str().unwrap_or_default();
            let start = if cursor.is_empty() {
                0
            } else {
                match cursor
                    .strip_prefix("cur-")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) if n <= rows.len() => n,
                    _ => return error(40058, "invalid cursor"),
                }
            };
            let end = (start + limit).min(rows.len());
            let list: Vec<Value> = rows[start..end]
                .iter()
                .map(|&(i, member)| {
                    json!({
                        "external_contact": {
                            "external_userid": customer(i),
                            "name": format!("Customer {i}"),
                            "type": 1,
                            "avatar": format!("http://wx.qlogo.cn/fake/{i}/0"),
                            "gender": 1 + (i % 2),
                            "unionid": format!("union-{}", customer(i)),
                        },
                        "follow_info": {
                            "userid": member,
                            "remark": format!("{member}'s customer {i}"),
                            "description": "",
                            "createtime": 1_764_547_200 + i as i64,
                            "tag_id": [format!("et{}", i % 3)],
                            "remark_corp_name": "",
                            "remark_mobiles": [],
                            "oper_userid": member,
                            "add_way": 1,
                            "state": "spring-expo",
                        },
                    })
                })
                .collect();
            let next = if end < rows.len() {
                format!("cur-{end}")
            } else {
                String::new()
            };
            json!({"errcode": 0, "errmsg": "ok", "external_contact_list": list, "next_cursor": next})
        }
    }
}

impl FakeWeChat {
    /// Every Official Account has `n` followers from now on (see the module comment).
    pub fn set_followers(&self, n: usize) {
        self.state().audience.followers = n;
    }

    /// The WeCom corp's members with customers, and which (customer numbers) each has: a
    /// customer in two ranges is a customer of both members.
    pub fn set_customers(&self, members: &[(&str, std::ops::Range<usize>)]) {
        self.state().audience.customers = members
            .iter()
            .map(|(m, r)| ((*m).to_owned(), r.clone()))
            .collect();
    }
}
