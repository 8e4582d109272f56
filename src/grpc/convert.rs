//! The conversions between the messages of `gateway.proto` and the use cases' inputs, in one
//! place, so that each rpc of [`super::gateway`] reads: authenticate, convert at the door, call
//! the use case the admin API calls, convert back. A request that breaks a rule is refused with
//! `AdminError::Validation` (`INVALID_ARGUMENT`, like the admin API's 400).

use crate::domain::broadcast::{
    Audience, Broadcast, BroadcastAudience, ExternalAudience, MassMessage,
};
use crate::error::AdminError;
use crate::pb::{self, send_broadcast_request};
use crate::services::broadcast::SendBroadcast;

// Broadcasts.

/// `message_json` of the broadcast requests: the message as the admin API's body has it.
pub(crate) fn message_json(s: &str) -> Result<serde_json::Value, AdminError> {
    serde_json::from_str(s)
        .map_err(|e| AdminError::Validation(format!("message_json: not JSON: {e}")))
}

/// The typed audience arrives as the domain's: each openid, external_userid and sender is
/// checked here by the rules (and in the words) the admin API's JSON parse uses. Whether the
/// account's platform takes it is the use case's to check.
impl TryFrom<pb::SendBroadcastRequest> for SendBroadcast {
    type Error = AdminError;

    fn try_from(r: pb::SendBroadcastRequest) -> Result<Self, AdminError> {
        use send_broadcast_request::Audience as Pb;
        let v = AdminError::Validation;
        let Some(audience) = r.audience else {
            return Err(v("audience: set tag_id, all, open_ids or external".into()));
        };
        let message = MassMessage::parse(&message_json(&r.message_json)?).map_err(v)?;
        let audience = match audience {
            Pb::TagId(tag_id) => BroadcastAudience::Followers(Audience::Tag(tag_id)),
            Pb::All(all) => BroadcastAudience::Followers(Audience::all(all).map_err(v)?),
            Pb::OpenIds(list) => {
                BroadcastAudience::Followers(Audience::open_ids(list.open_ids).map_err(v)?)
            }
            Pb::External(e) => BroadcastAudience::External(
                ExternalAudience::new(e.external_user_ids, e.sender).map_err(v)?,
            ),
        };
        Ok(Self {
            broadcast: Broadcast { audience, message },
            client_msg_id: (!r.client_msg_id.is_empty()).then_some(r.client_msg_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Platform;

    fn request(audience: Option<send_broadcast_request::Audience>) -> pb::SendBroadcastRequest {
        pb::SendBroadcastRequest {
            account_id: "acme".into(),
            audience,
            message_json: r#"{"text": {"content": "hi"}}"#.into(),
            client_msg_id: String::new(),
        }
    }

    fn refusal(r: pb::SendBroadcastRequest) -> String {
        match SendBroadcast::try_from(r) {
            Err(AdminError::Validation(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_send_broadcast_request_arrives_parsed() {
        use send_broadcast_request::Audience as Pb;
        let sent = SendBroadcast::try_from(request(Some(Pb::OpenIds(pb::OpenIdList {
            open_ids: vec!["oA".into(), "oB".into()],
        }))))
        .unwrap();
        assert_eq!(
            sent.broadcast.audience,
            BroadcastAudience::Followers(Audience::OpenIds(vec!["oA".into(), "oB".into()]))
        );
        assert_eq!(sent.broadcast.message.msgtype, "text");
        assert_eq!(sent.client_msg_id, None);
        let external = SendBroadcast::try_from(request(Some(Pb::External(pb::ExternalAudience {
            external_user_ids: vec!["wmA".into()],
            sender: "zhangsan".into(),
        }))))
        .unwrap();
        assert_eq!(
            external.broadcast.audience.check_platform(Platform::Work),
            Ok(())
        );

        assert!(refusal(request(None)).contains("set tag_id, all, open_ids or external"));
        assert!(refusal(request(Some(Pb::All(false)))).contains("all must be true"));
        let bad_id = refusal(request(Some(Pb::OpenIds(pb::OpenIdList {
            open_ids: vec!["o B".into()],
        }))));
        assert!(bad_id.contains("open_ids[0]"), "{bad_id}");
        let no_sender = refusal(request(Some(Pb::External(pb::ExternalAudience {
            external_user_ids: vec!["wmA".into()],
            sender: String::new(),
        }))));
        assert!(no_sender.contains("audience.sender"), "{no_sender}");
        let not_json = refusal(pb::SendBroadcastRequest {
            message_json: "{".into(),
            ..request(Some(Pb::All(true)))
        });
        assert!(not_json.starts_with("message_json: not JSON"), "{not_json}");
    }
}
