//! Parametric QR codes (Official Accounts, `qrcode/create`) and "contact me" codes
//! (WeCom, `externalcontact/add_contact_way`), registered in the scene registry so that the
//! forwarder can attach their label to the events they bring.
//!
//! Order: every input is checked first (nothing reaches WeChat otherwise), then the scene is
//! registered (so that a scan arriving a moment after WeChat answered already finds its label),
//! then WeChat is called.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::autoreply::Reply;
use crate::domain::scene::{ContactWayState, Label, QrSpec, SceneInput};
use crate::domain::{AccountId, Actor, Platform};
use crate::error::ServiceError;
use crate::store::SceneRecord;
use crate::wechat::api::qrcode;

use super::Services;

/// Most metadata entries kept with a scene, and their sizes.
const MAX_METADATA: usize = 20;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 256;
/// Most members of one contact-me code (WeCom's limit for `user`).
const MAX_USERS: usize = 100;

/// A request as either transport received it.
#[derive(Debug, Clone)]
pub struct CreateQrCode {
    pub scene: SceneInput,
    pub permanent: bool,
    pub expire_seconds: Option<i64>,
    pub label: String,
    pub metadata: BTreeMap<String, String>,
    pub users: Vec<String>,
    /// The welcome reply of the followers (contacts) this code brings.
    pub welcome: Option<Reply>,
}

/// The answer, as both transports return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    /// The scene as a scan carries it.
    pub scene: String,
    pub ticket: String,
    pub url: String,
    pub image_url: String,
    /// Unix seconds; `None` for permanent and contact-me codes.
    pub expire_at: Option<i64>,
}

/// What to ask WeChat for, once validated.
enum Code {
    Mp(QrSpec),
    Work {
        state: ContactWayState,
        users: Vec<String>,
    },
}

#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create_qr_code(
    svc: &Services,
    account_id: &AccountId,
    actor: &Actor,
    req: CreateQrCode,
) -> Result<QrCode, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let label = Label::parse(&req.label).map_err(ServiceError::Validation)?;
    check_metadata(&req.metadata)?;
    if let Some(welcome) = &req.welcome {
        let problems = welcome.problems("welcome");
        if !problems.is_empty() {
            return Err(ServiceError::Validation(problems.join("; ")));
        }
    }
    let code = match account.platform {
        Platform::Mp => {
            if !req.users.is_empty() {
                return Err(ServiceError::Validation(
                    "users: only a WeCom contact-me code has members; leave users out on an \
                     Official Account"
                        .into(),
                ));
            }
            Code::Mp(
                QrSpec::parse(&req.scene, req.permanent, req.expire_seconds)
                    .map_err(ServiceError::Validation)?,
            )
        }
        Platform::Work => {
            if req.expire_seconds.is_some() {
                return Err(ServiceError::Validation(
                    "expire_seconds: a WeCom contact-me code does not expire; leave it out".into(),
                ));
            }
            let state = match &req.scene {
                SceneInput::Id(id) => ContactWayState::parse(&id.to_string()),
                SceneInput::Str(s) => ContactWayState::parse(s),
            }
            .map_err(ServiceError::Validation)?;
            Code::Work {
                state,
                users: check_users(&req.users)?,
            }
        }
    };
    let scene = match &code {
        Code::Mp(spec) => spec.scene_key(),
        Code::Work { state, .. } => state.as_str().to_owned(),
    };
    let now = unix_now();
    svc.store
        .put_scene(
            account_id.as_str(),
            &scene,
            &SceneRecord {
                label: label.as_str().to_owned(),
                metadata: req.metadata,
                actor: actor.to_string(),
                created_at: now,
                welcome: req.welcome,
            },
        )
        .await?;

    let answer = match code {
        Code::Mp(spec) => {
            let ticket = qrcode::create(&svc.tokens, &account, &spec).await?;
            let lifetime = ticket
                .expire_seconds
                .or(spec.expire_seconds().map(u64::from));
            QrCode {
                image_url: ticket.image_url(),
                scene,
                ticket: ticket.ticket,
                url: ticket.url,
                expire_at: match spec {
                    QrSpec::PermanentId { .. } | QrSpec::PermanentStr { .. } => None,
                    QrSpec::TemporaryId { .. } | QrSpec::TemporaryStr { .. } => {
                        lifetime.map(|l| (now + l) as i64)
                    }
                },
            }
        }
        Code::Work { state, users } => {
            let way = qrcode::add_contact_way(&svc.tokens, &account, &state, &users).await?;
            QrCode {
                scene,
                ticket: way.config_id,
                url: way.qr_code.clone(),
                image_url: way.qr_code,
                expire_at: None,
            }
        }
    };
    tracing::info!(scene = %answer.scene, label = %label, "QR code created");
    Ok(answer)
}

pub(super) fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if metadata.len() > MAX_METADATA {
        return Err(ServiceError::Validation(format!(
            "metadata: at most {MAX_METADATA} entries, got {}",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        let key_chars = k.chars().count();
        if key_chars == 0 || key_chars > MAX_METADATA_KEY_CHARS {
            return Err(ServiceError::Validation(format!(
                "metadata: keys are 1 to {MAX_METADATA_KEY_CHARS} characters, got {key_chars}"
            )));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(ServiceError::Validation(format!(
                "metadata.{k}: values are at most {MAX_METADATA_VALUE_CHARS} characters"
            )));
        }
    }
    Ok(())
}

fn check_users(users: &[String]) -> Result<Vec<String>, ServiceError> {
    if users.is_empty() || users.len() > MAX_USERS {
        return Err(ServiceError::Validation(format!(
            "users: a WeCom contact-me code needs 1 to {MAX_USERS} members (userid), got {}",
            users.len()
        )));
    }
    for u in users {
        if u.is_empty() || u.len() > 64 || u.chars().any(char::is_control) {
            return Err(ServiceError::Validation(format!(
                "users: {u:?} is not a WeCom userid (1 to 64 characters)"
            )));
        }
    }
    Ok(users.to_vec())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_users_are_bounded() {
        let mut m = BTreeMap::new();
        m.insert("campaign".to_owned(), "spring".to_owned());
        assert!(check_metadata(&m).is_ok());
        m.insert(String::new(), "x".to_owned());
        assert!(check_metadata(&m).is_err());
        assert!(check_users(&[]).is_err());
        assert!(check_users(&["zhangsan".into()]).is_ok());
        assert!(check_users(&vec!["u".to_owned(); 101]).is_err());
    }
}
