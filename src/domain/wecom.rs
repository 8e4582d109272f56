//! WeCom customer profile and customer groups (issue 14): corp tags, the tags on a customer,
//! customer groups and their members, as the admin API and gRPC show them, and the inputs of
//! those use cases parsed with WeCom's documented limits, so that nothing invalid reaches WeCom.
//!
//! Limits (WeCom "管理企业标签", "客户群管理"): a tag or group name is at most 30 characters;
//! `groupchat/list` takes `limit` 1..=1000 and at most 100 owners; `status_filter` is 0..=3;
//! a join code's `state` is at most 30 characters and lists at most 5 groups.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Untrusted;

/// Most characters of a corp tag's or a tag group's name.
pub const MAX_TAG_NAME: usize = 30;
/// Most tags one `add_corp_tag` call creates (the gateway's bound; WeCom documents none, and a
/// group of more is unreadable).
pub const MAX_NEW_TAGS: usize = 100;
/// Most ids of one `mark_tag` list, and of one filter of `get_corp_tag_list`.
pub const MAX_TAG_IDS: usize = 100;
/// `groupchat/list`: page size and owner filter.
pub const MAX_GROUP_PAGE: u32 = 1000;
pub const DEFAULT_GROUP_PAGE: u32 = 100;
pub const MAX_OWNERS: usize = 100;
/// `groupchat/add_join_way`: at most 5 groups a code.
pub const MAX_JOIN_WAY_CHATS: usize = 5;

/// An id WeCom issued (a corp tag or group id `et...`, a chat id `wr...`, an external_userid
/// `wm...`) or a member's userid: 1 to 64 bytes (128 for WeCom's own ids) of visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeComId(String);

impl WeComId {
    /// A member's userid: 1 to 64 bytes (WeCom's rule for userid).
    pub fn user(field: &str, s: &str) -> Result<Self, String> {
        Self::parse(field, s, 64, "a WeCom userid")
    }

    /// An id WeCom issued: 1 to 128 bytes.
    pub fn issued(field: &str, s: &str, what: &str) -> Result<Self, String> {
        Self::parse(field, s, 128, what)
    }

    fn parse(field: &str, s: &str, max: usize, what: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{field}: {:?} is not {what} (1 to {max} visible ASCII characters)",
                Untrusted(s)
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A corp tag's or tag group's name: 1 to 30 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpTagName(String);

impl CorpTagName {
    pub fn parse(field: &str, s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_TAG_NAME || s.trim().is_empty() {
            return Err(format!(
                "{field}: a corp tag or group name is 1 to {MAX_TAG_NAME} characters, not blank \
                 (got {chars})"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!("{field}: control characters are not allowed"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a list of ids, at most `max`, distinct, each with `parse`.
pub fn id_list(
    field: &str,
    raw: &[String],
    max: usize,
    what: &str,
) -> Result<Vec<WeComId>, String> {
    if raw.len() > max {
        return Err(format!("{field}: at most {max} ids, got {}", raw.len()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        let id = WeComId::issued(&format!("{field}[{i}]"), id, what)?;
        if !seen.insert(id.clone()) {
            return Err(format!("{field}[{i}]: {:?} is listed twice", id.as_str()));
        }
        out.push(id);
    }
    Ok(out)
}

/// `add_corp_tag`'s request, parsed: tags into an existing group, or into a group by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCorpTags {
    pub group: TagGroupRef,
    pub group_order: Option<u32>,
    /// Distinct names, with their order.
    pub tags: Vec<(CorpTagName, Option<u32>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagGroupRef {
    Id(WeComId),
    /// Created unless a group of that name exists (WeCom then adds to it).
    Name(CorpTagName),
}

/// A new tag as a caller writes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCorpTagInput {
    /// 1 to 30 characters.
    pub name: String,
    /// Larger first.
    #[serde(default)]
    pub order: Option<u32>,
}

impl NewCorpTags {
    pub fn parse(
        group_id: Option<&str>,
        group_name: Option<&str>,
        group_order: Option<u32>,
        tags: &[NewCorpTagInput],
    ) -> Result<Self, String> {
        let group = match (
            group_id.filter(|s| !s.is_empty()),
            group_name.filter(|s| !s.is_empty()),
        ) {
            (Some(id), None) => TagGroupRef::Id(WeComId::issued("group_id", id, "a tag group id")?),
            (None, Some(name)) => TagGroupRef::Name(CorpTagName::parse("group_name", name)?),
            (Some(_), Some(_)) => {
                return Err(
                    "group_id and group_name: give one, not both (group_id adds to an \
                            existing group, group_name names a group)"
                        .into(),
                )
            }
            (None, None) => {
                return Err("group_id or group_name: a corp tag belongs to a group".into())
            }
        };
        if group_order.is_some() && matches!(group, TagGroupRef::Id(_)) {
            return Err(
                "group_order: only a new group (group_name) takes an order; \
                        edit the group to reorder it"
                    .into(),
            );
        }
        if tags.is_empty() || tags.len() > MAX_NEW_TAGS {
            return Err(format!(
                "tags: 1 to {MAX_NEW_TAGS} tags, got {}",
                tags.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut parsed = Vec::with_capacity(tags.len());
        for (i, t) in tags.iter().enumerate() {
            let name = CorpTagName::parse(&format!("tags[{i}].name"), &t.name)?;
            if !seen.insert(name.as_str().to_owned()) {
                return Err(format!("tags[{i}].name: {:?} is listed twice", t.name));
            }
            parsed.push((name, t.order));
        }
        Ok(Self {
            group,
            group_order,
            tags: parsed,
        })
    }
}

/// `mark_tag`'s request, parsed: the member, and tags to add and remove (at least one, none in
/// both lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkTags {
    pub user_id: WeComId,
    pub external_user_id: WeComId,
    pub add: Vec<WeComId>,
    pub remove: Vec<WeComId>,
}

impl MarkTags {
    pub fn parse(
        external_user_id: &str,
        user_id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Self, String> {
        let external_user_id =
            WeComId::issued("external_user_id", external_user_id, "an external_userid")?;
        let user_id = WeComId::user("userid", user_id)?;
        let add = id_list("add", add, MAX_TAG_IDS, "a corp tag id")?;
        let remove = id_list("remove", remove, MAX_TAG_IDS, "a corp tag id")?;
        if add.is_empty() && remove.is_empty() {
            return Err("add and remove: at least one tag to add or remove".into());
        }
        if let Some(both) = add.iter().find(|id| remove.contains(id)) {
            return Err(format!(
                "add and remove: {:?} is in both lists",
                both.as_str()
            ));
        }
        Ok(Self {
            user_id,
            external_user_id,
            add,
            remove,
        })
    }
}

/// A page request of `groupchat/list`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChatQuery {
    /// 0 every normal group; 1 owner left, 2 inheritance in progress, 3 inherited.
    pub status: i32,
    pub owners: Vec<WeComId>,
    pub cursor: String,
    pub limit: u32,
}

impl GroupChatQuery {
    pub fn parse(
        status: Option<i32>,
        owners: &[String],
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Self, String> {
        let status = status.unwrap_or(0);
        if !(0..=3).contains(&status) {
            return Err(format!(
                "status: 0 (normal), 1 (owner left), 2 (inheriting) or 3 (inherited), got {status}"
            ));
        }
        let limit = limit.unwrap_or(DEFAULT_GROUP_PAGE);
        if limit == 0 || limit > MAX_GROUP_PAGE {
            return Err(format!("limit: 1 to {MAX_GROUP_PAGE}, got {limit}"));
        }
        if owners.len() > MAX_OWNERS {
            return Err(format!(
                "owner: at most {MAX_OWNERS} owners, got {}",
                owners.len()
            ));
        }
        let owners = owners
            .iter()
            .enumerate()
            .map(|(i, o)| WeComId::user(&format!("owner[{i}]"), o))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = cursor.unwrap_or_default();
        if cursor.len() > 256 || !cursor.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("cursor: pass next_cursor of the previous page as it came".into());
        }
        Ok(Self {
            status,
            owners,
            cursor: cursor.to_owned(),
            limit,
        })
    }
}

// ---- What the use cases answer (admin JSON; gRPC converts) ----

/// A corp tag group and its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CorpTagGroup {
    pub group_id: String,
    pub group_name: String,
    /// Unix seconds.
    pub create_time: i64,
    /// Larger first.
    pub order: u32,
    pub deleted: bool,
    pub tags: Vec<CorpTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CorpTag {
    pub id: String,
    pub name: String,
    pub create_time: i64,
    pub order: u32,
    pub deleted: bool,
}

/// One customer group of a `groupchat/list` page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupChatSummary {
    pub chat_id: String,
    /// 0 normal, 1 owner left, 2 inheriting, 3 inherited.
    pub status: i32,
}

/// A page of customer groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupChatPage {
    pub group_chats: Vec<GroupChatSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A customer group with its members (`groupchat/get`, names included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupChat {
    pub chat_id: String,
    pub name: String,
    /// The owner's userid.
    pub owner: String,
    /// Unix seconds.
    pub create_time: i64,
    pub notice: String,
    pub members: Vec<GroupChatMember>,
    /// userids of the group's admins.
    pub admins: Vec<String>,
    pub member_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupChatMember {
    /// A userid (type 1) or an external_userid (type 2).
    pub id: String,
    /// 1 a member of the corp, 2 an external contact.
    pub r#type: i32,
    pub name: String,
    pub group_nickname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub union_id: String,
    /// Unix seconds.
    pub join_time: i64,
    /// 1 invited directly, 2 invited by link, 3 scanned a group QR code.
    pub join_scene: i32,
    /// The userid of the member who invited them, when WeCom names one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub invitor: String,
    /// The `state` of the join code they came through.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// The label of that state when it is a scene created through the gateway.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str) -> NewCorpTagInput {
        NewCorpTagInput {
            name: name.into(),
            order: None,
        }
    }

    #[test]
    fn tag_names_follow_wecoms_30_character_limit() {
        assert!(CorpTagName::parse("n", "高意向客户").is_ok());
        assert!(CorpTagName::parse("n", &"字".repeat(30)).is_ok());
        assert!(CorpTagName::parse("n", &"字".repeat(31)).is_err());
        assert!(CorpTagName::parse("n", "").is_err());
        assert!(CorpTagName::parse("n", "   ").is_err());
        assert!(CorpTagName::parse("n", "a\nb").is_err());
    }

    #[test]
    fn new_tags_need_one_group_reference_and_distinct_names() {
        let ok = NewCorpTags::parse(None, Some("Level"), Some(3), &[tag("A"), tag("B")]).unwrap();
        assert_eq!(ok.tags.len(), 2);
        assert!(matches!(ok.group, TagGroupRef::Name(_)));
        assert!(NewCorpTags::parse(Some("etG"), None, None, &[tag("A")]).is_ok());
        assert!(NewCorpTags::parse(Some("etG"), Some("x"), None, &[tag("A")]).is_err());
        assert!(NewCorpTags::parse(None, None, None, &[tag("A")]).is_err());
        assert!(NewCorpTags::parse(Some("etG"), None, Some(1), &[tag("A")]).is_err());
        assert!(NewCorpTags::parse(None, Some("g"), None, &[]).is_err());
        assert!(NewCorpTags::parse(None, Some("g"), None, &[tag("A"), tag("A")]).is_err());
        let many: Vec<_> = (0..=MAX_NEW_TAGS).map(|i| tag(&i.to_string())).collect();
        assert!(NewCorpTags::parse(None, Some("g"), None, &many).is_err());
    }

    #[test]
    fn marking_needs_something_to_do_and_no_tag_both_added_and_removed() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(MarkTags::parse("wmA", "zhangsan", &s(&["et1"]), &[]).is_ok());
        assert!(MarkTags::parse("wmA", "zhangsan", &[], &s(&["et1"])).is_ok());
        assert!(MarkTags::parse("wmA", "zhangsan", &[], &[]).is_err());
        assert!(MarkTags::parse("wmA", "zhangsan", &s(&["et1"]), &s(&["et1"])).is_err());
        assert!(MarkTags::parse("wmA", "", &s(&["et1"]), &[]).is_err());
        assert!(MarkTags::parse("", "u", &s(&["et1"]), &[]).is_err());
        assert!(MarkTags::parse("wmA", "u", &s(&["et1", "et1"]), &[]).is_err());
        assert!(MarkTags::parse("wm A", "u", &s(&["et1"]), &[]).is_err());
        assert!(MarkTags::parse("wmA", &"u".repeat(65), &s(&["et1"]), &[]).is_err());
    }

    #[test]
    fn group_chat_pages_follow_wecoms_limits() {
        let q = GroupChatQuery::parse(None, &[], None, None).unwrap();
        assert_eq!((q.status, q.limit, q.cursor.as_str()), (0, 100, ""));
        assert!(GroupChatQuery::parse(Some(4), &[], None, None).is_err());
        assert!(GroupChatQuery::parse(Some(-1), &[], None, None).is_err());
        assert!(GroupChatQuery::parse(None, &[], None, Some(0)).is_err());
        assert!(GroupChatQuery::parse(None, &[], None, Some(1001)).is_err());
        assert!(GroupChatQuery::parse(None, &[], None, Some(1000)).is_ok());
        let owners: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        assert!(GroupChatQuery::parse(None, &owners, None, None).is_err());
        assert!(GroupChatQuery::parse(None, &owners[..100], Some("CURSOR"), None).is_ok());
        assert!(GroupChatQuery::parse(None, &[], Some("a b"), None).is_err());
    }
}
