//! Codes to scan: an Official Account's parametric QR codes (`qrcode/create`, "生成带参数的二维码")
//! and a WeCom corp's "contact me" codes (`externalcontact/add_contact_way`). What a code may
//! carry is checked before, by the domain types ([`crate::domain::scene`]).

use serde::{Deserialize, Serialize};

use crate::domain::scene::{ContactWayState, QrSpec};
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// The answer of `qrcode/create`.
#[derive(Debug, Clone, Deserialize)]
pub struct QrTicket {
    pub ticket: String,
    /// Absent for permanent codes.
    #[serde(default)]
    pub expire_seconds: Option<u64>,
    /// The URL the QR image encodes.
    pub url: String,
}

/// Where WeChat serves the image of a ticket (the ticket URL-encoded).
const SHOW_QR_CODE: &str = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=";

impl QrTicket {
    /// The QR image of the ticket (`showqrcode`).
    pub fn image_url(&self) -> String {
        format!("{SHOW_QR_CODE}{}", url_encode(&self.ticket))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a ticket is base64, so
/// `+`, `/` and `=` must be encoded).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer of `externalcontact/add_contact_way`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContactWay {
    pub config_id: String,
    /// The URL of the QR code image (scene 2).
    #[serde(default)]
    pub qr_code: String,
}

/// The body of `qrcode/create`.
#[derive(Debug, Serialize)]
struct Create<'a> {
    /// Temporary codes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_seconds: Option<u32>,
    action_name: &'static str,
    action_info: ActionInfo<'a>,
}

#[derive(Debug, Serialize)]
struct ActionInfo<'a> {
    scene: Scene<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Scene<'a> {
    Id { scene_id: u32 },
    Str { scene_str: &'a str },
}

impl<'a> From<&'a QrSpec> for Create<'a> {
    fn from(spec: &'a QrSpec) -> Self {
        let (action_name, scene) = match spec {
            QrSpec::TemporaryId { scene_id, .. } => (
                "QR_SCENE",
                Scene::Id {
                    scene_id: *scene_id,
                },
            ),
            QrSpec::TemporaryStr { scene, .. } => (
                "QR_STR_SCENE",
                Scene::Str {
                    scene_str: scene.as_str(),
                },
            ),
            QrSpec::PermanentId { scene_id } => (
                "QR_LIMIT_SCENE",
                Scene::Id {
                    scene_id: *scene_id,
                },
            ),
            QrSpec::PermanentStr { scene } => (
                "QR_LIMIT_STR_SCENE",
                Scene::Str {
                    scene_str: scene.as_str(),
                },
            ),
        };
        Self {
            expire_seconds: spec.expire_seconds(),
            action_name,
            action_info: ActionInfo { scene },
        }
    }
}

/// The body of `externalcontact/add_contact_way`.
#[derive(Debug, Serialize)]
struct AddContactWay<'a> {
    /// 1: one member, 2: several.
    r#type: u8,
    /// 2: a QR code.
    scene: u8,
    state: &'a str,
    user: &'a [String],
}

/// `cgi-bin/qrcode/create`: the ticket of a parametric QR code.
pub async fn create(
    tokens: &TokenAuthority,
    account: &Account,
    spec: &QrSpec,
) -> Result<QrTicket, TokenError> {
    tokens
        .post(
            account,
            "qrcode/create",
            "/cgi-bin/qrcode/create",
            &Create::from(spec),
        )
        .await
}

/// WeCom `cgi-bin/externalcontact/add_contact_way`: a contact-me QR code of `users` (their
/// userids), whose scans carry `state`.
pub async fn add_contact_way(
    tokens: &TokenAuthority,
    account: &Account,
    state: &ContactWayState,
    users: &[String],
) -> Result<ContactWay, TokenError> {
    let body = AddContactWay {
        r#type: if users.len() == 1 { 1 } else { 2 },
        scene: 2,
        state: state.as_str(),
        user: users,
    };
    tokens
        .post(
            account,
            "externalcontact/add_contact_way",
            "/cgi-bin/externalcontact/add_contact_way",
            &body,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scene::SceneInput;

    fn body(spec: &QrSpec) -> serde_json::Value {
        serde_json::to_value(Create::from(spec)).unwrap()
    }

    #[test]
    fn tickets_are_url_encoded_for_the_image_url() {
        assert_eq!(
            url_encode("gQH47joAAAAAAAAAASxodHRw+Oi8v/a=="),
            "gQH47joAAAAAAAAAASxodHRw%2BOi8v%2Fa%3D%3D"
        );
        assert_eq!(url_encode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn the_body_names_the_action_and_the_scene_and_only_a_temporary_code_expires() {
        let spec = QrSpec::parse(&SceneInput::Id(42), false, Some(600)).unwrap();
        assert_eq!(
            body(&spec),
            serde_json::json!({"expire_seconds": 600, "action_name": "QR_SCENE",
                "action_info": {"scene": {"scene_id": 42}}})
        );
        let spec = QrSpec::parse(&SceneInput::Str("spring-expo".into()), true, None).unwrap();
        assert_eq!(
            body(&spec),
            serde_json::json!({"action_name": "QR_LIMIT_STR_SCENE",
                "action_info": {"scene": {"scene_str": "spring-expo"}}})
        );
        let spec = QrSpec::parse(&SceneInput::Str("x".into()), false, Some(60)).unwrap();
        assert_eq!(
            body(&spec),
            serde_json::json!({"expire_seconds": 60, "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": "x"}}})
        );
        let spec = QrSpec::parse(&SceneInput::Id(7), true, None).unwrap();
        assert_eq!(
            body(&spec),
            serde_json::json!({"action_name": "QR_LIMIT_SCENE",
                "action_info": {"scene": {"scene_id": 7}}})
        );
    }
}
