//! The fake's web OAuth and user lookups, as WeChat documents them (for tracked links and
//! identity enrichment):
//!
//! - `GET /connect/oauth2/authorize` (open.weixin.qq.com): WeChat's consent page. With
//!   `scope=snsapi_base` there is no page: the browser is sent straight back to `redirect_uri`
//!   with `?code=CODE&state=STATE`. The fake signs in as the follower set with
//!   [`FakeWeChat::set_oauth_user`]. A bad `response_type` or `scope` gets WeChat's error page
//!   (no redirect).
//! - `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code`: the code
//!   for the follower's openid. A code is good once: an unknown code (or one issued for another
//!   appid) is 40029 "invalid code", a second use 40163 "code been used".
//! - `GET /sns/userinfo?access_token&openid&lang`: with the web token of a `snsapi_userinfo`
//!   code, the follower's profile (nickname `Alice 爱丽丝`, an avatar URL, unionid
//!   `union-<openid>`; sex 0 and empty places, as WeChat answers since October 2021); a
//!   `snsapi_base` token is 48001, an unknown one 40001.
//! - `POST /cgi-bin/user/info/batchget` `{"user_list": [{"openid", "lang"}]}`: at most 100
//!   users (more: 40032, 不合法的openid列表长度 in WeChat's global return codes); an openid that is
//!   not one is 40003 (不合法的OpenID).
//!   Every openid of the form `o[A-Za-z0-9_-]+` is a follower whose unionid is `union-<openid>`,
//!   followed through QR scene `spring-expo` with tag 2, unless [`FakeWeChat::set_unsubscribed`]
//!   says they left (then `{"subscribe": 0, "openid"}`, as WeChat answers for them).
//! - `GET /cgi-bin/externalcontact/get?external_userid=`: ids of the form `wm...` are customers
//!   named `Customer <id>` with unionid `union-<id>`, followed by member `zhangsan` (one corp
//!   tag, one personal tag, state `spring-expo`); anything else 84061 (no such contact).

use std::collections::{HashMap, HashSet};

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::FakeWeChat;

#[derive(Default)]
pub(super) struct Identity {
    /// code → (appid, openid, used).
    codes: HashMap<String, (String, String, bool)>,
    /// code → the scope it was granted for.
    scopes: HashMap<String, String>,
    /// web access token → (openid, scope).
    web_tokens: HashMap<String, (String, String)>,
    issued: u64,
    oauth_user: Option<String>,
    unsubscribed: HashSet<String>,
}

pub(super) fn handles_public(path: &str) -> bool {
    path == "/connect/oauth2/authorize"
        || path == "/sns/oauth2/access_token"
        || path == "/sns/userinfo"
}

pub(super) fn handles(path: &str) -> bool {
    path == "/cgi-bin/user/info/batchget" || path == "/cgi-bin/externalcontact/get"
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

fn is_openid(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('o')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn answer_public(
    id: &mut Identity,
    path: &str,
    query: &HashMap<String, String>,
) -> HttpResponse {
    let q = |k: &str| query.get(k).map_or("", String::as_str);
    match path {
        "/connect/oauth2/authorize" => {
            let scope_ok = matches!(q("scope"), "snsapi_base" | "snsapi_userinfo");
            if q("response_type") != "code" || !scope_ok || q("redirect_uri").is_empty() {
                // WeChat shows an error page in the browser and sends it nowhere.
                return HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .body("<html><body>10003 redirect_uri / scope 参数错误</body></html>");
            }
            id.issued += 1;
            let code = format!("oauthcode{}", id.issued);
            let openid = id.oauth_user.clone().unwrap_or_else(|| "oOAuthUser".into());
            id.codes
                .insert(code.clone(), (q("appid").to_owned(), openid, false));
            id.scopes.insert(code.clone(), q("scope").to_owned());
            let redirect = q("redirect_uri");
            let sep = if redirect.contains('?') { '&' } else { '?' };
            HttpResponse::Found()
                .insert_header((
                    "Location",
                    format!("{redirect}{sep}code={code}&state={}", q("state")),
                ))
                .finish()
        }
        "/sns/userinfo" => {
            let answer = match id.web_tokens.get(q("access_token")) {
                Some((openid, scope)) if scope == "snsapi_userinfo" && openid == q("openid") => {
                    json!({
                        "openid": openid,
                        "nickname": "Alice 爱丽丝",
                        "sex": 0,
                        "province": "",
                        "city": "",
                        "country": "",
                        "headimgurl": "https://thirdwx.qlogo.cn/mmopen/fake/132",
                        "privilege": [],
                        "unionid": format!("union-{openid}"),
                    })
                }
                // snsapi_base does not grant the profile.
                Some(_) => error(48001, "api unauthorized"),
                None => error(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                ),
            };
            HttpResponse::Ok().json(answer)
        }
        _ => {
            let answer = if q("grant_type") != "authorization_code" || q("secret").is_empty() {
                error(40013, "invalid appid or secret")
            } else {
                match id.codes.get_mut(q("code")) {
                    Some((appid, _, _)) if appid != q("appid") => error(40029, "invalid code"),
                    Some((_, _, used)) if *used => error(40163, "code been used"),
                    Some((_, openid, used)) => {
                        *used = true;
                        let scope = id.scopes.get(q("code")).cloned().unwrap_or_default();
                        let token = format!("web-access-token-{}", q("code"));
                        id.web_tokens
                            .insert(token.clone(), (openid.clone(), scope.clone()));
                        json!({
                            "access_token": token,
                            "expires_in": 7200,
                            "refresh_token": "web-refresh-token",
                            "openid": openid,
                            "scope": scope,
                        })
                    }
                    None => error(40029, "invalid code"),
                }
            };
            HttpResponse::Ok().json(answer)
        }
    }
}

pub(super) fn answer(
    id: &Identity,
    path: &str,
    query: &HashMap<String, String>,
    body: &Value,
) -> Value {
    match path {
        "/cgi-bin/user/info/batchget" => {
            let Some(list) = body["user_list"].as_array() else {
                return error(44002, "empty post data");
            };
            if list.is_empty() || list.len() > 100 {
                return error(40032, "invalid openid list size");
            }
            let mut users = Vec::new();
            for entry in list {
                let openid = entry["openid"].as_str().unwrap_or_default();
                if !is_openid(openid) {
                    return error(40003, "invalid openid");
                }
                users.push(if id.unsubscribed.contains(openid) {
                    json!({"subscribe": 0, "openid": openid})
                } else {
                    json!({
                        "subscribe": 1,
                        "openid": openid,
                        "language": "zh_CN",
                        "subscribe_time": 1_764_547_200,
                        "unionid": format!("union-{openid}"),
                        "remark": "",
                        "groupid": 0,
                        "tagid_list": [2],
                        "subscribe_scene": "ADD_SCENE_QR_CODE",
                        "qr_scene": 0,
                        "qr_scene_str": "spring-expo",
                    })
                });
            }
            json!({"user_info_list": users})
        }
        _ => {
            let external = query.get("external_userid").map_or("", String::as_str);
            if !external.starts_with("wm") {
                return error(84061, "not external contact");
            }
            json!({
                "errcode": 0,
                "errmsg": "ok",
                "external_contact": {
                    "external_userid": external,
                    "name": format!("Customer {external}"),
                    "type": 1,
                    "unionid": format!("union-{external}"),
                },
                // One member has the customer, with a corp tag and a personal tag, added
                // through the contact-me code of state `spring-expo` (externalcontact/get's
                // documented follow_user shape).
                "follow_user": [{
                    "userid": "zhangsan",
                    "remark": "met at the expo",
                    "description": "buyer",
                    "createtime": 1_764_547_200,
                    "tags": [
                        {"group_name": "Lead level", "tag_name": "Hot", "tag_id": "etHot", "type": 1},
                        {"group_name": "", "tag_name": "VIP", "type": 2},
                    ],
                    "remark_corp_name": "Acme",
                    "remark_mobiles": ["13800000000"],
                    "oper_userid": "zhangsan",
                    "add_way": 1,
                    "state": "spring-expo",
                }],
            })
        }
    }
}

impl FakeWeChat {
    /// The follower that WeChat's OAuth signs in from now on (default `oOAuthUser`).
    pub fn set_oauth_user(&self, openid: &str) {
        self.state().identity.oauth_user = Some(openid.to_owned());
    }

    /// `user/info/batchget` answers this openid as not following.
    pub fn set_unsubscribed(&self, openid: &str) {
        self.state().identity.unsubscribed.insert(openid.to_owned());
    }
}
