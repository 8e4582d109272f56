//! The snapshot events of a sync: one `follower_snapshot` per follower, one
//! `external_contact_snapshot` per (customer, member) pair, each with an id stable per sync and
//! person (events.proto documents every field).

use sha1::{Digest, Sha1};

use crate::pb::{self, event::Kind};
use crate::wechat::api::audience::ContactRow;
use crate::wechat::api::user::UserInfo;

/// Between the parts of an id, so that ("ab", "c") and ("a", "bc") differ.
const SEP: u8 = 0x1f;

/// Whether an event is a sync's snapshot: identity enrichment leaves them alone (they carry
/// the profile WeChat gave the sync, and a lookup per snapshot would double the sync's calls).
pub fn is_snapshot(event: &pb::Event) -> bool {
    matches!(
        event.kind,
        Some(Kind::FollowerSnapshot(_) | Kind::ExternalContactSnapshot(_))
    )
}

/// The hex SHA-1 of the account, the sync and the person's ids.
fn snapshot_id(account: &str, sync_id: &str, person: &[&str]) -> String {
    let mut h = Sha1::new();
    for part in [account, "sync", sync_id].iter().chain(person) {
        h.update(part.as_bytes());
        h.update([SEP]);
    }
    hex::encode(h.finalize())
}

fn timestamp(seconds: i64) -> Option<pb::Timestamp> {
    (seconds > 0).then_some(pb::Timestamp { seconds, nanos: 0 })
}

/// What every snapshot of a sync shares.
pub(super) struct Frame<'a> {
    pub(super) account: &'a str,
    pub(super) sync_id: &'a str,
    /// The sync's start (unix seconds): every snapshot's `occurred_at`.
    pub(super) started_at: u64,
    pub(super) received_at: pb::Timestamp,
}

impl Frame<'_> {
    fn event(&self, id: String, platform: pb::Platform) -> pb::Event {
        pb::Event {
            id,
            account_id: self.account.to_owned(),
            platform: platform as i32,
            occurred_at: timestamp(i64::try_from(self.started_at).unwrap_or(0)),
            received_at: Some(self.received_at),
            sync_id: self.sync_id.to_owned(),
            ..Default::default()
        }
    }

    /// A follower's snapshot; `None` for one who no longer follows (`subscribe` 0).
    pub(super) fn follower(&self, user: &UserInfo) -> Option<pb::Event> {
        if user.subscribe == 0 {
            return None;
        }
        let id = snapshot_id(self.account, self.sync_id, &[&user.openid]);
        let mut event = self.event(id, pb::Platform::Mp);
        event.open_id = user.openid.clone();
        event.union_id = user.unionid.clone();
        let qr_scene_str = if user.qr_scene_str.is_empty() && user.qr_scene != 0 {
            user.qr_scene.to_string()
        } else {
            user.qr_scene_str.clone()
        };
        event.profile = Some(pb::UserProfile {
            subscribe_scene: user.subscribe_scene.clone(),
            qr_scene_str,
            tag_ids: user.tagid_list.clone(),
            subscribed_at: timestamp(user.subscribe_time),
            fetched_at: Some(self.received_at),
            ..Default::default()
        });
        event.kind = Some(Kind::FollowerSnapshot(pb::FollowerSnapshot {
            open_id: user.openid.clone(),
            union_id: user.unionid.clone(),
            subscribed_at: timestamp(user.subscribe_time),
            subscribe_scene: user.subscribe_scene.clone(),
            qr_scene: user.qr_scene,
            qr_scene_str: user.qr_scene_str.clone(),
            tag_ids: user.tagid_list.clone(),
            remark: user.remark.clone(),
            language: user.language.clone(),
            group_id: user.groupid,
        }));
        Some(event)
    }

    /// One (customer, member) row's snapshot.
    pub(super) fn external_contact(&self, row: &ContactRow) -> pb::Event {
        let (c, f) = (&row.external_contact, &row.follow_info);
        let id = snapshot_id(self.account, self.sync_id, &[&c.external_userid, &f.userid]);
        let mut event = self.event(id, pb::Platform::Work);
        event.external_user_id = c.external_userid.clone();
        event.union_id = c.unionid.clone();
        event.user_id = f.userid.clone();
        event.kind = Some(Kind::ExternalContactSnapshot(pb::ExternalContactSnapshot {
            external_user_id: c.external_userid.clone(),
            union_id: c.unionid.clone(),
            name: c.name.clone(),
            r#type: c.kind,
            corp_name: c.corp_name.clone(),
            corp_full_name: c.corp_full_name.clone(),
            position: c.position.clone(),
            gender: c.gender,
            avatar: c.avatar.clone(),
            follow_users: vec![pb::FollowUser {
                user_id: f.userid.clone(),
                remark: f.remark.clone(),
                description: f.description.clone(),
                created_at: timestamp(f.createtime),
                tags: f
                    .tag_id
                    .iter()
                    .map(|tag_id| pb::FollowUserTag {
                        tag_id: tag_id.clone(),
                        ..Default::default()
                    })
                    .collect(),
                add_way: f.add_way,
                state: f.state.clone(),
                oper_user_id: f.oper_userid.clone(),
                remark_corp_name: f.remark_corp_name.clone(),
                remark_mobiles: f.remark_mobiles.clone(),
            }],
        }));
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_id_is_stable_per_sync_and_person() {
        let a = snapshot_id("acme", "s1", &["o1"]);
        assert_eq!(a, snapshot_id("acme", "s1", &["o1"]));
        assert_eq!(a.len(), 40);
        assert_ne!(a, snapshot_id("acme", "s2", &["o1"]));
        assert_ne!(a, snapshot_id("acme", "s1", &["o2"]));
        assert_ne!(
            snapshot_id("acme", "s1", &["wm1", "ab"]),
            snapshot_id("acme", "s1", &["wm1a", "b"])
        );
    }
}
