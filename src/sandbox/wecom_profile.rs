//! The sandbox's WeCom customer profile and customer groups: a corp's tag library
//! (`get_corp_tag_list`, `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`), the tags members put
//! on their customers (`mark_tag`), customer groups (`groupchat/list`, `groupchat/get`) and group
//! join codes (`groupchat/add_join_way`, `get_join_way`), answered in WeCom's documented shapes
//! and errcodes ("管理企业标签", "编辑客户企业标签", "客户群管理", "客户群「加入群聊」管理"):
//!
//! - 40068 for a tag or group id that does not exist, 41017 for a `del_corp_tag` without ids,
//!   40071 for a tag name taken in its group (or a group name taken, on edit), 40058 for a missing
//!   or out-of-range parameter (names over 30 characters, `limit` outside 1..1000, a join code
//!   without 1..5 groups), 84061 for a `mark_tag` on a customer who is not the member's, 40050
//!   for an unknown chat_id.
//! - `get_corp_tag_list` filters by `group_id` when given (ignoring `tag_id`, as documented),
//!   else by `tag_id` (each listed tag in its group), else answers everything.
//! - `groupchat/list` pages in `limit`s with an opaque `next_cursor`, empty on the last page.
//!
//! Ids count up from fixed starts (`etSandboxGroup<n>`, `etSandboxTag<n>`, `sandbox-join-way-<n>`)
//! so that the documentation's examples can name them. [`Profile::demo`] is every sandbox
//! account's starting state: one tag group (`etSandboxGroup1` "Lead level": `etSandboxTag1` "Hot",
//! `etSandboxTag2` "Won"), member `zhangsan` with customer `wmSandboxCustomer0001`, and one
//! customer group `wrSandboxChat0001` of theirs. The test suite's fake WeChat uses this model too,
//! through the same public methods, so the two cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// WeCom's bound on a tag's or group's name.
const NAME_MAX: usize = 30;
const INVALID_PARAMETER: i64 = 40058;
const INVALID_TAG_ID: i64 = 40068;
const INVALID_TAG_NAME: i64 = 40071;
const MISSING_TAG_ID: i64 = 41017;
const NO_RELATION: i64 = 84061;
const NO_SUCH_CHAT: i64 = 40050;

/// The paths this model answers (after `/cgi-bin`).
pub const PATHS: [&str; 9] = [
    "/cgi-bin/externalcontact/get_corp_tag_list",
    "/cgi-bin/externalcontact/add_corp_tag",
    "/cgi-bin/externalcontact/edit_corp_tag",
    "/cgi-bin/externalcontact/del_corp_tag",
    "/cgi-bin/externalcontact/mark_tag",
    "/cgi-bin/externalcontact/groupchat/list",
    "/cgi-bin/externalcontact/groupchat/get",
    "/cgi-bin/externalcontact/groupchat/add_join_way",
    "/cgi-bin/externalcontact/groupchat/get_join_way",
];

pub fn handles(path: &str) -> bool {
    PATHS.contains(&path)
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
    create_time: u64,
    order: u64,
    tags: Vec<Tag>,
}

#[derive(Debug, Clone)]
struct Tag {
    id: String,
    name: String,
    create_time: u64,
    order: u64,
}

/// A member of a customer group, as `groupchat/get` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMember {
    pub id: String,
    /// 1 a member of the corp, 2 an external contact.
    pub member_type: i32,
    pub name: String,
    pub join_time: u64,
    /// 1 invited directly, 2 by link, 3 scanned a group QR code.
    pub join_scene: i32,
    pub invitor: String,
    pub state: String,
}

#[derive(Debug, Clone)]
struct Chat {
    name: String,
    owner: String,
    create_time: u64,
    /// 0 normal; 1..3 inheritance states.
    status: i32,
    members: Vec<ChatMember>,
}

#[derive(Debug, Clone)]
struct JoinWay {
    remark: String,
    auto_create_room: u64,
    chat_ids: Vec<String>,
    state: String,
}

/// One corp's customer profile and groups.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    groups: Vec<Group>,
    /// (member userid, external_userid): who is whose customer, and the corp tag ids on them.
    relations: BTreeMap<(String, String), BTreeSet<String>>,
    chats: BTreeMap<String, Chat>,
    join_ways: BTreeMap<String, JoinWay>,
    next_group: u64,
    next_tag: u64,
    next_join_way: u64,
}

fn ok_with(mut v: Value) -> Value {
    v["errcode"] = json!(0);
    v["errmsg"] = json!("ok");
    v
}

fn err(code: i64, msg: &str) -> Value {
    json!({"errcode": code, "errmsg": msg})
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn name_ok(name: &str) -> bool {
    let n = name.chars().count();
    n > 0 && n <= NAME_MAX
}

impl Profile {
    /// The starting state of every sandbox account (module comment).
    pub fn demo(now: u64) -> Self {
        let mut p = Self::default();
        p.groups.push(Group {
            id: "etSandboxGroup1".into(),
            name: "Lead level".into(),
            create_time: now,
            order: 1,
            tags: vec![
                Tag {
                    id: "etSandboxTag1".into(),
                    name: "Hot".into(),
                    create_time: now,
                    order: 2,
                },
                Tag {
                    id: "etSandboxTag2".into(),
                    name: "Won".into(),
                    create_time: now,
                    order: 1,
                },
            ],
        });
        p.next_group = 1;
        p.next_tag = 2;
        p.add_relation("zhangsan", "wmSandboxCustomer0001");
        p.add_chat("wrSandboxChat0001", "Spring Expo VIP", "zhangsan", now);
        p.join(
            "wrSandboxChat0001",
            ChatMember {
                id: "wmSandboxCustomer0001".into(),
                member_type: 2,
                name: "Sandbox customer".into(),
                join_time: now,
                join_scene: 3,
                invitor: "zhangsan".into(),
                state: String::new(),
            },
        );
        p
    }

    /// `external` becomes `userid`'s customer.
    pub fn add_relation(&mut self, userid: &str, external: &str) {
        self.relations
            .entry((userid.to_owned(), external.to_owned()))
            .or_default();
    }

    /// The corp tag ids `userid` has put on `external`.
    pub fn tags_on(&self, userid: &str, external: &str) -> Vec<String> {
        self.relations
            .get(&(userid.to_owned(), external.to_owned()))
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The customers of the member `userid`.
    pub fn customers_of(&self, userid: &str) -> Vec<String> {
        self.relations
            .keys()
            .filter(|(u, _)| u == userid)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The customer groups `owner` owns.
    pub fn chats_of(&self, owner: &str) -> Vec<String> {
        self.chats
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A customer group owned by `owner`, with the owner as its first member.
    pub fn add_chat(&mut self, chat_id: &str, name: &str, owner: &str, now: u64) {
        self.chats.insert(
            chat_id.to_owned(),
            Chat {
                name: name.to_owned(),
                owner: owner.to_owned(),
                create_time: now,
                status: 0,
                members: vec![ChatMember {
                    id: owner.to_owned(),
                    member_type: 1,
                    name: owner.to_owned(),
                    join_time: now,
                    join_scene: 1,
                    invitor: String::new(),
                    state: String::new(),
                }],
            },
        );
    }

    /// Someone joins a group (what a scan of a join code, or an invitation, does).
    pub fn join(&mut self, chat_id: &str, member: ChatMember) {
        if let Some(chat) = self.chats.get_mut(chat_id) {
            chat.members.retain(|m| m.id != member.id);
            chat.members.push(member);
        }
    }

    /// Someone leaves a group.
    pub fn leave(&mut self, chat_id: &str, member_id: &str) {
        if let Some(chat) = self.chats.get_mut(chat_id) {
            chat.members.retain(|m| m.id != member_id);
        }
    }

    /// `follow_user` of `externalcontact/get` for `external`: each member whose customer they
    /// are, with the corp tags the member put on them (in WeCom's shape).
    pub fn follow_user(&self, external: &str, now: u64) -> Value {
        let users: Vec<Value> = self
            .relations
            .iter()
            .filter(|((_, e), _)| e == external)
            .map(|((userid, _), tag_ids)| {
                let tags: Vec<Value> = self
                    .groups
                    .iter()
                    .flat_map(|g| g.tags.iter().map(move |t| (g, t)))
                    .filter(|(_, t)| tag_ids.contains(&t.id))
                    .map(|(g, t)| {
                        json!({"group_name": g.name, "tag_name": t.name, "tag_id": t.id, "type": 1})
                    })
                    .collect();
                json!({"userid": userid, "remark": "", "description": "", "createtime": now,
                    "tags": tags, "oper_userid": userid, "add_way": 1})
            })
            .collect();
        Value::Array(users)
    }

    /// The state a join code gives its joins, if the code exists.
    pub fn join_way_state(&self, config_id: &str) -> Option<String> {
        self.join_ways.get(config_id).map(|w| w.state.clone())
    }

    /// The group join codes made, by config_id.
    pub fn join_way_ids(&self) -> Vec<String> {
        self.join_ways.keys().cloned().collect()
    }

    /// The answer of one call of [`PATHS`].
    pub fn answer(&mut self, path: &str, body: &Value, now: u64) -> Value {
        match path {
            "/cgi-bin/externalcontact/get_corp_tag_list" => self.list(body),
            "/cgi-bin/externalcontact/add_corp_tag" => self.add(body, now),
            "/cgi-bin/externalcontact/edit_corp_tag" => self.edit(body),
            "/cgi-bin/externalcontact/del_corp_tag" => self.delete(body),
            "/cgi-bin/externalcontact/mark_tag" => self.mark(body),
            "/cgi-bin/externalcontact/groupchat/list" => self.chat_list(body),
            "/cgi-bin/externalcontact/groupchat/get" => self.chat_get(body),
            "/cgi-bin/externalcontact/groupchat/add_join_way" => self.add_join_way(body),
            "/cgi-bin/externalcontact/groupchat/get_join_way" => self.get_join_way(body),
            _ => err(48001, "api unauthorized"),
        }
    }

    fn group_json(g: &Group, only: Option<&[String]>) -> Value {
        let tags: Vec<Value> = g
            .tags
            .iter()
            .filter(|t| only.is_none_or(|ids| ids.contains(&t.id)))
            .map(|t| {
                json!({"id": t.id, "name": t.name, "create_time": t.create_time,
                    "order": t.order, "deleted": false})
            })
            .collect();
        json!({"group_id": g.id, "group_name": g.name, "create_time": g.create_time,
            "order": g.order, "deleted": false, "tag": tags})
    }

    fn list(&self, body: &Value) -> Value {
        let tag_ids = strings(&body["tag_id"]);
        let group_ids = strings(&body["group_id"]);
        let groups: Vec<Value> = if !group_ids.is_empty() {
            self.groups
                .iter()
                .filter(|g| group_ids.contains(&g.id))
                .map(|g| Self::group_json(g, None))
                .collect()
        } else if !tag_ids.is_empty() {
            self.groups
                .iter()
                .filter(|g| g.tags.iter().any(|t| tag_ids.contains(&t.id)))
                .map(|g| Self::group_json(g, Some(&tag_ids)))
                .collect()
        } else {
            self.groups
                .iter()
                .map(|g| Self::group_json(g, None))
                .collect()
        };
        ok_with(json!({"tag_group": groups}))
    }

    fn add(&mut self, body: &Value, now: u64) -> Value {
        let tags = body["tag"].as_array().cloned().unwrap_or_default();
        if tags.is_empty() {
            return err(INVALID_PARAMETER, "invalid parameter: tag");
        }
        let names: Vec<String> = tags
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        if names.iter().any(|n| !name_ok(n)) {
            return err(INVALID_PARAMETER, "invalid parameter: tag name");
        }
        let index = match (body["group_id"].as_str(), body["group_name"].as_str()) {
            (Some(id), _) => match self.groups.iter().position(|g| g.id == id) {
                Some(i) => i,
                None => return err(INVALID_TAG_ID, "invalid tagid"),
            },
            (None, Some(name)) if name_ok(name) => {
                match self.groups.iter().position(|g| g.name == name) {
                    Some(i) => i,
                    None => {
                        self.next_group += 1;
                        self.groups.push(Group {
                            id: format!("etSandboxGroup{}", self.next_group),
                            name: name.to_owned(),
                            create_time: now,
                            order: body["order"].as_u64().unwrap_or(0),
                            tags: Vec::new(),
                        });
                        self.groups.len() - 1
                    }
                }
            }
            _ => return err(INVALID_PARAMETER, "invalid parameter: group_name"),
        };
        let taken: BTreeSet<&str> = self.groups[index]
            .tags
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        if names.iter().any(|n| taken.contains(n.as_str())) {
            return err(INVALID_TAG_NAME, "invalid tag name: exists in the group");
        }
        let mut created = Vec::new();
        for (t, name) in tags.iter().zip(names) {
            self.next_tag += 1;
            let tag = Tag {
                id: format!("etSandboxTag{}", self.next_tag),
                name,
                create_time: now,
                order: t["order"].as_u64().unwrap_or(0),
            };
            created.push(tag.id.clone());
            self.groups[index].tags.push(tag);
        }
        let group = &self.groups[index];
        ok_with(json!({"tag_group": Self::group_json(group, Some(&created))}))
    }

    fn edit(&mut self, body: &Value) -> Value {
        let id = body["id"].as_str().unwrap_or_default();
        let name = body["name"].as_str();
        if name.is_some_and(|n| !name_ok(n)) {
            return err(INVALID_PARAMETER, "invalid parameter: name");
        }
        let order = body["order"].as_u64();
        if let Some(g) = self.groups.iter().position(|g| g.id == id) {
            if let Some(n) = name {
                if self.groups.iter().any(|o| o.id != id && o.name == n) {
                    return err(INVALID_TAG_NAME, "invalid tag name: group name exists");
                }
                self.groups[g].name = n.to_owned();
            }
            if let Some(o) = order {
                self.groups[g].order = o;
            }
            return ok_with(json!({}));
        }
        for g in &mut self.groups {
            let taken: Vec<(String, String)> = g
                .tags
                .iter()
                .map(|t| (t.id.clone(), t.name.clone()))
                .collect();
            if let Some(t) = g.tags.iter_mut().find(|t| t.id == id) {
                if let Some(n) = name {
                    if taken.iter().any(|(oid, on)| oid != id && on == n) {
                        return err(INVALID_TAG_NAME, "invalid tag name: exists in the group");
                    }
                    t.name = n.to_owned();
                }
                if let Some(o) = order {
                    t.order = o;
                }
                return ok_with(json!({}));
            }
        }
        err(INVALID_TAG_ID, "invalid tagid")
    }

    fn delete(&mut self, body: &Value) -> Value {
        let tag_ids = strings(&body["tag_id"]);
        let group_ids = strings(&body["group_id"]);
        if tag_ids.is_empty() && group_ids.is_empty() {
            return err(MISSING_TAG_ID, "missing tagid");
        }
        let known_group = |id: &String| self.groups.iter().any(|g| &g.id == id);
        let known_tag = |id: &String| {
            self.groups
                .iter()
                .any(|g| g.tags.iter().any(|t| &t.id == id))
        };
        if !group_ids.iter().all(known_group) || !tag_ids.iter().all(known_tag) {
            return err(INVALID_TAG_ID, "invalid tagid");
        }
        let mut gone: BTreeSet<String> = tag_ids.iter().cloned().collect();
        for g in self.groups.iter().filter(|g| group_ids.contains(&g.id)) {
            gone.extend(g.tags.iter().map(|t| t.id.clone()));
        }
        self.groups.retain(|g| !group_ids.contains(&g.id));
        for g in &mut self.groups {
            g.tags.retain(|t| !gone.contains(&t.id));
        }
        // A group whose last tag is deleted goes with it, as WeCom documents.
        self.groups.retain(|g| !g.tags.is_empty());
        for tags in self.relations.values_mut() {
            tags.retain(|t| !gone.contains(t));
        }
        ok_with(json!({}))
    }

    fn mark(&mut self, body: &Value) -> Value {
        let userid = body["userid"].as_str().unwrap_or_default().to_owned();
        let external = body["external_userid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let add = strings(&body["add_tag"]);
        let remove = strings(&body["remove_tag"]);
        if userid.is_empty() || external.is_empty() || (add.is_empty() && remove.is_empty()) {
            return err(INVALID_PARAMETER, "invalid parameter");
        }
        let known = |id: &String| {
            self.groups
                .iter()
                .any(|g| g.tags.iter().any(|t| &t.id == id))
        };
        if !add.iter().chain(&remove).all(known) {
            return err(INVALID_TAG_ID, "invalid tagid");
        }
        let Some(tags) = self.relations.get_mut(&(userid, external)) else {
            return err(NO_RELATION, "external user has no relation with this user");
        };
        tags.extend(add);
        for r in &remove {
            tags.remove(r);
        }
        ok_with(json!({}))
    }

    fn chat_list(&self, body: &Value) -> Value {
        let limit = body["limit"].as_u64().unwrap_or(0);
        if !(1..=1000).contains(&limit) {
            return err(INVALID_PARAMETER, "invalid parameter: limit");
        }
        let status = body["status_filter"].as_i64().unwrap_or(0) as i32;
        let owners = strings(&body["owner_filter"]["userid_list"]);
        let start = match body["cursor"].as_str().unwrap_or_default() {
            "" => 0,
            c => match c
                .strip_prefix("sandbox-cursor-")
                .and_then(|n| n.parse().ok())
            {
                Some(n) => n,
                None => return err(INVALID_PARAMETER, "invalid parameter: cursor"),
            },
        };
        let matching: Vec<(&String, &Chat)> = self
            .chats
            .iter()
            .filter(|(_, c)| c.status == status && (owners.is_empty() || owners.contains(&c.owner)))
            .collect();
        let end = (start + limit as usize).min(matching.len());
        let page: Vec<Value> = matching
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|(id, c)| json!({"chat_id": id, "status": c.status}))
            .collect();
        let next = if end < matching.len() {
            format!("sandbox-cursor-{end}")
        } else {
            String::new()
        };
        ok_with(json!({"group_chat_list": page, "next_cursor": next}))
    }

    fn chat_get(&self, body: &Value) -> Value {
        let id = body["chat_id"].as_str().unwrap_or_default();
        let Some(chat) = self.chats.get(id) else {
            return err(NO_SUCH_CHAT, "chatid not found");
        };
        let need_name = body["need_name"].as_u64() == Some(1);
        let members: Vec<Value> = chat
            .members
            .iter()
            .map(|m| {
                let mut v = json!({"userid": m.id, "type": m.member_type, "join_time": m.join_time,
                    "join_scene": m.join_scene, "group_nickname": ""});
                if !m.invitor.is_empty() {
                    v["invitor"] = json!({"userid": m.invitor});
                }
                if !m.state.is_empty() {
                    v["state"] = json!(m.state);
                }
                if need_name {
                    v["name"] = json!(m.name);
                }
                if m.member_type == 2 {
                    v["unionid"] = json!(format!("uSandbox-{}", m.id));
                }
                v
            })
            .collect();
        ok_with(
            json!({"group_chat": {"chat_id": id, "name": chat.name, "owner": chat.owner,
            "create_time": chat.create_time, "notice": "", "member_list": members,
            "admin_list": [], "member_version": format!("v{}", chat.members.len())}}),
        )
    }

    fn add_join_way(&mut self, body: &Value) -> Value {
        let scene = body["scene"].as_u64();
        let chat_ids = strings(&body["chat_id_list"]);
        let state = body["state"].as_str().unwrap_or_default();
        if !matches!(scene, Some(1 | 2))
            || chat_ids.is_empty()
            || chat_ids.len() > 5
            || state.chars().count() > 30
        {
            return err(INVALID_PARAMETER, "invalid parameter");
        }
        if !chat_ids.iter().all(|c| self.chats.contains_key(c)) {
            return err(NO_SUCH_CHAT, "chatid not found");
        }
        self.next_join_way += 1;
        let config_id = format!("sandbox-join-way-{}", self.next_join_way);
        self.join_ways.insert(
            config_id.clone(),
            JoinWay {
                remark: body["remark"].as_str().unwrap_or_default().to_owned(),
                auto_create_room: body["auto_create_room"].as_u64().unwrap_or(0),
                chat_ids,
                state: state.to_owned(),
            },
        );
        ok_with(json!({"config_id": config_id}))
    }

    fn get_join_way(&self, body: &Value) -> Value {
        let id = body["config_id"].as_str().unwrap_or_default();
        let Some(way) = self.join_ways.get(id) else {
            return err(INVALID_PARAMETER, "invalid parameter: config_id");
        };
        ok_with(
            json!({"join_way": {"config_id": id, "scene": 2, "remark": way.remark,
            "auto_create_room": way.auto_create_room, "chat_id_list": way.chat_ids,
            "qr_code": format!("https://wework.qq.com/sandbox/join-way/{id}"),
            "state": way.state}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_added_edited_marked_and_deleted_as_wecom_documents() {
        let mut p = Profile::demo(1);
        let path = |s: &str| format!("/cgi-bin/externalcontact/{s}");
        let added = p.answer(
            &path("add_corp_tag"),
            &json!({"group_name": "Source", "tag": [{"name": "Expo"}, {"name": "Web"}]}),
            2,
        );
        assert_eq!(added["errcode"], 0);
        assert_eq!(added["tag_group"]["group_id"], "etSandboxGroup2");
        assert_eq!(added["tag_group"]["tag"][1]["id"], "etSandboxTag4");
        let again = p.answer(
            &path("add_corp_tag"),
            &json!({"group_id": "etSandboxGroup2", "tag": [{"name": "Expo"}]}),
            3,
        );
        assert_eq!(again["errcode"], INVALID_TAG_NAME);
        let bad = p.answer(
            &path("edit_corp_tag"),
            &json!({"id": "etNope", "name": "x"}),
            3,
        );
        assert_eq!(bad["errcode"], INVALID_TAG_ID);
        let marked = p.answer(
            &path("mark_tag"),
            &json!({"userid": "zhangsan", "external_userid": "wmSandboxCustomer0001",
                "add_tag": ["etSandboxTag3"]}),
            3,
        );
        assert_eq!(marked["errcode"], 0);
        assert_eq!(
            p.tags_on("zhangsan", "wmSandboxCustomer0001"),
            ["etSandboxTag3"]
        );
        let follow = p.follow_user("wmSandboxCustomer0001", 3);
        assert_eq!(follow[0]["userid"], "zhangsan");
        assert_eq!(
            follow[0]["tags"],
            json!([{"group_name": "Source", "tag_name": "Expo", "tag_id": "etSandboxTag3", "type": 1}])
        );
        assert_eq!(p.follow_user("wmSomeoneElse", 3), json!([]));
        let stranger = p.answer(
            &path("mark_tag"),
            &json!({"userid": "lisi", "external_userid": "wmSandboxCustomer0001",
                "add_tag": ["etSandboxTag3"]}),
            3,
        );
        assert_eq!(stranger["errcode"], NO_RELATION);
        assert_eq!(
            p.answer(&path("del_corp_tag"), &json!({}), 3)["errcode"],
            MISSING_TAG_ID
        );
        let del = p.answer(
            &path("del_corp_tag"),
            &json!({"group_id": ["etSandboxGroup2"]}),
            3,
        );
        assert_eq!(del["errcode"], 0);
        assert!(p.tags_on("zhangsan", "wmSandboxCustomer0001").is_empty());
        let all = p.answer(&path("get_corp_tag_list"), &json!({}), 3);
        assert_eq!(all["tag_group"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn group_chats_page_by_cursor() {
        let mut p = Profile::default();
        for i in 0..5 {
            p.add_chat(&format!("wrChat{i}"), "g", if i < 3 { "a" } else { "b" }, 1);
        }
        let path = "/cgi-bin/externalcontact/groupchat/list";
        let first = p.answer(path, &json!({"limit": 2}), 1);
        assert_eq!(first["group_chat_list"].as_array().unwrap().len(), 2);
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let rest = p.answer(path, &json!({"limit": 10, "cursor": cursor}), 1);
        assert_eq!(rest["group_chat_list"].as_array().unwrap().len(), 3);
        assert_eq!(rest["next_cursor"], "");
        let owned = p.answer(
            path,
            &json!({"limit": 10, "owner_filter": {"userid_list": ["b"]}}),
            1,
        );
        assert_eq!(owned["group_chat_list"].as_array().unwrap().len(), 2);
        assert_eq!(
            p.answer(path, &json!({"limit": 0}), 1)["errcode"],
            INVALID_PARAMETER
        );
    }
}
