//! WeCom customer groups (客户群): the list of groups (`groupchat/list`, paged by cursor, by
//! owner and status), one group with its members (`groupchat/get`), group join codes
//! (`groupchat/add_join_way` + `get_join_way`, registered in the scene registry like QR codes),
//! and the forwarder step [`GroupMembers`] that turns a member change of a group into one event
//! per member who joined or left.
//!
//! **Per-member events.** WeCom's `change_external_chat` with `UpdateDetail` `add_member` or
//! `del_member` lists who in `MemChangeList` (`ExternalChatChange.mem_change_list`). For a join,
//! the step reads the group (`groupchat/get`, names included) and emits a
//! `group_member_joined` per id: when (join_time), how (join_scene), who invited, and the `state`
//! of the join code, whose label the attribution step adds when the code was made through the
//! gateway. For a leave it emits a `group_member_left` per id (the group no longer lists them:
//! the callback's time and QuitScene). The events go into the outbox through the store's
//! de-duplicating `record`, with ids stable per (callback, member), before the callback's own
//! event is acknowledged: a crash or a retried batch records nothing twice. A group that cannot
//! be read does not hold anything back: the join events go out with what the callback says
//! (logged, counted in `wgw_group_member_lookup_failures_total`). Once recorded, a marker (for a
//! day) keeps a retried batch from reading the group again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha1::{Digest, Sha1};

use super::corp_tags::{refusal, work_only};
use super::Services;
use crate::domain::scene::{ContactWayState, Label, SceneInput};
use crate::domain::wecom::{
    GroupChat, GroupChatMember, GroupChatPage, GroupChatQuery, GroupChatSummary, WeComId,
    MAX_JOIN_WAY_CHATS,
};
use crate::domain::{AccountId, Actor};
use crate::error::ServiceError;
use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::store::docs::Marker;
use crate::store::{kinds, DocKind, DocWrite, SceneRecord, Store};
use crate::wechat::account::Account;
use crate::wechat::api::group_chats;

/// Callbacks whose member events were recorded.
const RECORDED: DocKind<(), Marker> = DocKind::new(kinds::GROUP_MEMBER_EVENTS);
const RECORDED_FOR: Duration = Duration::from_secs(24 * 3600);
/// 40050: chatid不存在 (WeCom's global return codes).
const NO_SUCH_CHAT: i64 = 40050;
/// WeCom's bound on a join code's remark and a new group's base name.
const MAX_REMARK_CHARS: usize = 30;
const MAX_ROOM_BASE_NAME_CHARS: usize = 40;

/// `groupchat/list`: one page.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn list(
    svc: &Services,
    account_id: &AccountId,
    query: &GroupChatQuery,
) -> Result<GroupChatPage, ServiceError> {
    let account = work_only(svc, account_id, "customer groups")?.clone();
    let owners: Vec<String> = query.owners.iter().map(|o| o.as_str().to_owned()).collect();
    let page = group_chats::list(
        &svc.tokens,
        &account,
        query.status,
        &owners,
        &query.cursor,
        query.limit,
    )
    .await
    .map_err(|e| refusal(e, "cannot list the customer groups"))?;
    Ok(GroupChatPage {
        group_chats: page
            .group_chat_list
            .into_iter()
            .map(|c| GroupChatSummary {
                chat_id: c.chat_id,
                status: c.status,
            })
            .collect(),
        next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
    })
}

/// `groupchat/get`: the group, its members (with the label of their join code's scene, when the
/// gateway made it) and admins.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn get(
    svc: &Services,
    account_id: &AccountId,
    chat_id: &str,
) -> Result<GroupChat, ServiceError> {
    let account = work_only(svc, account_id, "customer groups")?.clone();
    let chat_id = WeComId::issued("chat_id", chat_id, "a customer group chat id")
        .map_err(ServiceError::Validation)?;
    let chat = read_chat(svc, &account, chat_id.as_str()).await?;
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for m in &chat.member_list {
        if !m.state.is_empty() && !labels.contains_key(&m.state) {
            let label = svc
                .store
                .scene(account_id.as_str(), &m.state)
                .await?
                .map(|r| r.label)
                .unwrap_or_default();
            labels.insert(m.state.clone(), label);
        }
    }
    Ok(GroupChat {
        chat_id: chat.chat_id,
        name: chat.name,
        owner: chat.owner,
        create_time: chat.create_time,
        notice: chat.notice,
        members: chat
            .member_list
            .into_iter()
            .map(|m| GroupChatMember {
                label: labels.get(&m.state).cloned().unwrap_or_default(),
                id: m.userid,
                r#type: m.r#type,
                name: m.name,
                group_nickname: m.group_nickname,
                union_id: m.unionid,
                join_time: m.join_time,
                join_scene: m.join_scene,
                invitor: m.invitor.map(|i| i.userid).unwrap_or_default(),
                state: m.state,
            })
            .collect(),
        admins: chat.admin_list.into_iter().map(|a| a.userid).collect(),
        member_version: chat.member_version,
    })
}

async fn read_chat(
    svc: &Services,
    account: &Account,
    chat_id: &str,
) -> Result<group_chats::Chat, ServiceError> {
    match group_chats::get(&svc.tokens, account, chat_id).await {
        Ok(answer) => Ok(answer.group_chat),
        Err(crate::wechat::tokens::TokenError::Api(crate::wechat::api::ApiError::Refused {
            errcode: NO_SUCH_CHAT,
            errmsg,
        })) => Err(ServiceError::NotFound(format!(
            "no customer group {chat_id:?} (WeCom errcode {NO_SUCH_CHAT}: {errmsg})"
        ))),
        Err(e) => Err(refusal(
            e,
            &format!("cannot read customer group {chat_id:?}"),
        )),
    }
}

/// A group join code as either transport asks for it.
#[derive(Debug, Clone)]
pub struct CreateJoinWay {
    /// The state joins through the code carry: a scene of the registry (1 to 30 characters).
    pub scene: SceneInput,
    pub label: String,
    /// 1 to 5 customer groups.
    pub chat_ids: Vec<String>,
    pub remark: String,
    /// When the groups are full, create a new one named `room_base_name` + `room_base_id`.
    pub auto_create_room: bool,
    pub room_base_name: String,
    pub room_base_id: Option<u32>,
    pub metadata: BTreeMap<String, String>,
}

/// The code made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinWay {
    pub scene: String,
    pub config_id: String,
    pub qr_code: String,
    pub chat_ids: Vec<String>,
}

/// `groupchat/add_join_way` (a QR code, scene 2) whose joins carry the scene as `state`, then
/// `get_join_way` for the QR code. The scene is registered first, like a QR code's, so a join
/// right after WeCom answered already finds its label.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create_join_way(
    svc: &Services,
    account_id: &AccountId,
    actor: &Actor,
    req: CreateJoinWay,
) -> Result<JoinWay, ServiceError> {
    let account = work_only(svc, account_id, "group join codes")?.clone();
    let label = Label::parse(&req.label).map_err(ServiceError::Validation)?;
    let state = match &req.scene {
        SceneInput::Id(id) => ContactWayState::parse(&id.to_string()),
        SceneInput::Str(s) => ContactWayState::parse(s),
    }
    .map_err(ServiceError::Validation)?;
    if req.chat_ids.is_empty() || req.chat_ids.len() > MAX_JOIN_WAY_CHATS {
        return Err(ServiceError::Validation(format!(
            "chat_ids: a group join code lists 1 to {MAX_JOIN_WAY_CHATS} customer groups, got {}",
            req.chat_ids.len()
        )));
    }
    let chat_ids = crate::domain::wecom::id_list(
        "chat_ids",
        &req.chat_ids,
        MAX_JOIN_WAY_CHATS,
        "a customer group chat id",
    )
    .map_err(ServiceError::Validation)?;
    let chars = |s: &str| s.chars().count();
    if chars(&req.remark) > MAX_REMARK_CHARS || req.remark.chars().any(char::is_control) {
        return Err(ServiceError::Validation(format!(
            "remark: at most {MAX_REMARK_CHARS} characters, no control characters"
        )));
    }
    if req.auto_create_room {
        let n = chars(&req.room_base_name);
        if n == 0
            || n > MAX_ROOM_BASE_NAME_CHARS
            || req.room_base_name.chars().any(char::is_control)
        {
            return Err(ServiceError::Validation(format!(
                "room_base_name: with auto_create_room, the new groups' base name is 1 to \
                 {MAX_ROOM_BASE_NAME_CHARS} characters"
            )));
        }
    } else if !req.room_base_name.is_empty() || req.room_base_id.is_some() {
        return Err(ServiceError::Validation(
            "room_base_name and room_base_id: only with auto_create_room".into(),
        ));
    }
    super::qrcode::check_metadata(&req.metadata)?;
    svc.store
        .put_scene(
            account_id.as_str(),
            state.as_str(),
            &SceneRecord {
                label: label.as_str().to_owned(),
                metadata: req.metadata,
                actor: actor.to_string(),
                created_at: unix_now() as u64,
                welcome: None,
            },
        )
        .await?;
    let chat_id_list: Vec<String> = chat_ids.into_iter().map(WeComId::into_string).collect();
    let created = group_chats::add_join_way(
        &svc.tokens,
        &account,
        &group_chats::NewJoinWay {
            scene: 2,
            remark: &req.remark,
            auto_create_room: u8::from(req.auto_create_room),
            room_base_name: &req.room_base_name,
            room_base_id: req.room_base_id,
            chat_id_list: &chat_id_list,
            state: state.as_str(),
        },
    )
    .await
    .map_err(|e| refusal(e, "WeCom refused the group join code"))?;
    let way = group_chats::get_join_way(&svc.tokens, &account, &created.config_id)
        .await
        .map_err(|e| refusal(e, "cannot read the group join code just made"))?;
    tracing::info!(config_id = %created.config_id, scene = state.as_str(), label = %label,
        "group join code created");
    Ok(JoinWay {
        scene: state.as_str().to_owned(),
        config_id: created.config_id,
        qr_code: way.join_way.qr_code,
        chat_ids: chat_id_list,
    })
}

/// The forwarder step of the per-member events (module comment).
pub struct GroupMembers {
    services: Arc<Services>,
}

impl GroupMembers {
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }

    fn store(&self) -> &dyn Store {
        &*self.services.store
    }
}

/// A member change of a group that names its members.
fn member_change(event: &pb::Event) -> Option<&pb::ExternalChatChange> {
    match &event.kind {
        Some(Kind::ExternalChatChange(c))
            if c.change_type == "update"
                && matches!(c.update_detail.as_str(), "add_member" | "del_member")
                && !c.mem_change_list.is_empty() =>
        {
            Some(c)
        }
        _ => None,
    }
}

#[async_trait]
impl Decorate for GroupMembers {
    async fn decorate(&self, events: &mut [pb::Event]) {
        for event in events.iter() {
            let Some(change) = member_change(event) else {
                continue;
            };
            let Some(account) = self.services.accounts.get(&event.account_id) else {
                continue;
            };
            match RECORDED
                .get(self.store(), &event.account_id, &event.id)
                .await
            {
                Ok(Some(())) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(event_id = %event.id, error = %e,
                    "cannot read the group member marker; recording again (ids de-duplicate)"),
            }
            let derived = if change.update_detail == "add_member" {
                self.joined(account, event, change).await
            } else {
                left(event, change)
            };
            let mut recorded = true;
            for d in &derived {
                if let Err(e) = self.store().record(d).await {
                    recorded = false;
                    tracing::warn!(event_id = %event.id, error = %e,
                        "cannot record a group member event; the batch's retry records it");
                }
            }
            if recorded {
                metrics::counter!("wgw_group_member_events_total", "account" => event.account_id.clone())
                    .increment(derived.len() as u64);
                if let Err(e) = RECORDED
                    .put_lapsing(
                        self.store(),
                        &event.account_id,
                        &event.id,
                        &(),
                        DocWrite::Always,
                        RECORDED_FOR,
                    )
                    .await
                {
                    tracing::warn!(event_id = %event.id, error = %e,
                        "cannot write the group member marker");
                }
            }
        }
    }
}

impl GroupMembers {
    /// One `group_member_joined` per id of the change, with what `groupchat/get` says of them.
    async fn joined(
        &self,
        account: &Account,
        event: &pb::Event,
        change: &pb::ExternalChatChange,
    ) -> Vec<pb::Event> {
        let chat = match read_chat(&self.services, account, &change.chat_id).await {
            Ok(chat) => Some(chat),
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e,
                    "cannot read the customer group; its join events carry only the callback's details");
                metrics::counter!("wgw_group_member_lookup_failures_total", "account" => event.account_id.clone())
                    .increment(1);
                None
            }
        };
        change
            .mem_change_list
            .iter()
            .map(|id| {
                let member = chat
                    .as_ref()
                    .and_then(|c| c.member_list.iter().find(|m| &m.userid == id));
                let joined = match member {
                    Some(m) => pb::GroupMemberJoined {
                        chat_id: change.chat_id.clone(),
                        member_id: id.clone(),
                        member_type: m.r#type,
                        joined_at: Some(pb::Timestamp {
                            seconds: m.join_time,
                            nanos: 0,
                        }),
                        join_scene: m.join_scene,
                        invitor: m
                            .invitor
                            .as_ref()
                            .map(|i| i.userid.clone())
                            .unwrap_or_default(),
                        state: m.state.clone(),
                        name: m.name.clone(),
                        group_nickname: m.group_nickname.clone(),
                        union_id: m.unionid.clone(),
                        chat_name: chat.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
                        owner: chat.as_ref().map(|c| c.owner.clone()).unwrap_or_default(),
                    },
                    None => pb::GroupMemberJoined {
                        chat_id: change.chat_id.clone(),
                        member_id: id.clone(),
                        joined_at: event.occurred_at,
                        join_scene: change.join_scene as i32,
                        chat_name: chat.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
                        owner: chat.as_ref().map(|c| c.owner.clone()).unwrap_or_default(),
                        ..Default::default()
                    },
                };
                let external = match joined.member_type {
                    2 => true,
                    1 => false,
                    _ => looks_external(id),
                };
                derived(
                    event,
                    "joined",
                    id,
                    external,
                    Kind::GroupMemberJoined(joined),
                )
            })
            .collect()
    }
}

/// One `group_member_left` per id of the change.
fn left(event: &pb::Event, change: &pb::ExternalChatChange) -> Vec<pb::Event> {
    change
        .mem_change_list
        .iter()
        .map(|id| {
            let kind = Kind::GroupMemberLeft(pb::GroupMemberLeft {
                chat_id: change.chat_id.clone(),
                member_id: id.clone(),
                left_at: event.occurred_at,
                quit_scene: change.quit_scene as i32,
            });
            derived(event, "left", id, looks_external(id), kind)
        })
        .collect()
}

/// WeCom's external_userids start with `wm` or `wo`; a member's userid is the corp's choice.
/// Used only when groupchat/get does not say (a member who left, or a group not readable).
fn looks_external(id: &str) -> bool {
    id.starts_with("wm") || id.starts_with("wo")
}

/// The event of one member of a change: its id is the SHA-1 of the callback's id, what
/// happened and the member, so it is the same for every retry of the callback.
fn derived(parent: &pb::Event, what: &str, member: &str, external: bool, kind: Kind) -> pb::Event {
    let mut h = Sha1::new();
    for part in [parent.id.as_str(), "group_member", what, member] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    let (user_id, external_user_id) = if external {
        (String::new(), member.to_owned())
    } else {
        (member.to_owned(), String::new())
    };
    pb::Event {
        id: hex::encode(h.finalize()),
        account_id: parent.account_id.clone(),
        platform: parent.platform,
        occurred_at: parent.occurred_at,
        received_at: parent.received_at,
        user_id,
        external_user_id,
        to_user_name: parent.to_user_name.clone(),
        agent_id: parent.agent_id,
        kind: Some(kind),
        ..Default::default()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(detail: &str, ids: &[&str]) -> pb::Event {
        pb::Event {
            id: "parent".into(),
            account_id: "acme-work".into(),
            occurred_at: Some(pb::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: Some(Kind::ExternalChatChange(pb::ExternalChatChange {
                change_type: "update".into(),
                chat_id: "wrChat".into(),
                update_detail: detail.into(),
                quit_scene: 1,
                mem_change_list: ids.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_leave_becomes_one_event_per_member_with_ids_stable_per_callback_and_member() {
        let e = change("del_member", &["wmCustomer", "zhangsan"]);
        let Some(Kind::ExternalChatChange(c)) = &e.kind else {
            unreachable!()
        };
        let first = left(&e, c);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].external_user_id, "wmCustomer");
        assert_eq!(first[1].user_id, "zhangsan");
        assert_ne!(first[0].id, first[1].id);
        assert_eq!(
            first.iter().map(|e| &e.id).collect::<Vec<_>>(),
            left(&e, c).iter().map(|e| &e.id).collect::<Vec<_>>()
        );
        let mut other = e.clone();
        other.id = "another-callback".into();
        assert_ne!(left(&other, c)[0].id, first[0].id);
        assert!(matches!(&first[0].kind, Some(Kind::GroupMemberLeft(l))
            if l.quit_scene == 1 && l.chat_id == "wrChat" && l.left_at == e.occurred_at));
    }

    #[test]
    fn only_member_changes_that_name_members_are_expanded() {
        assert!(member_change(&change("add_member", &["a"])).is_some());
        assert!(member_change(&change("del_member", &["a"])).is_some());
        assert!(member_change(&change("add_member", &[])).is_none());
        assert!(member_change(&change("change_name", &["a"])).is_none());
    }
}
