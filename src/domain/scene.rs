//! Parametric QR codes and WeCom "contact me" codes, as WeChat limits them. Each type is parsed
//! once, at the door (admin HTTP or gRPC), with a message that names the rule broken; inside
//! the gateway a value of these types is always one WeChat accepts.
//!
//! The rules are those of "生成带参数的二维码" (Official Accounts, `qrcode/create`) and
//! "配置客户联系「联系我」方式" (WeCom, `externalcontact/add_contact_way`).

use std::fmt;

/// Shortest temporary code WeChat issues, in seconds.
pub const MIN_EXPIRE_SECONDS: u32 = 60;
/// Longest temporary code WeChat issues: 30 days.
pub const MAX_EXPIRE_SECONDS: u32 = 2_592_000;
/// Largest scene_id of a permanent code (QR_LIMIT_SCENE).
pub const MAX_PERMANENT_SCENE_ID: u32 = 100_000;
/// Largest scene_id of a temporary code (QR_SCENE: a non-zero 32-bit integer).
pub const MAX_TEMPORARY_SCENE_ID: u32 = i32::MAX as u32;
/// Longest scene_str (QR_STR_SCENE, QR_LIMIT_STR_SCENE), in characters.
pub const MAX_SCENE_STR_CHARS: usize = 64;
/// Longest `state` of a contact-me code, in characters.
pub const MAX_STATE_CHARS: usize = 30;

/// A string scene: 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SceneStr(String);

impl SceneStr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_SCENE_STR_CHARS {
            return Err(format!(
                "scene: a string scene (QR_STR_SCENE, QR_LIMIT_STR_SCENE) must be 1 to \
                 {MAX_SCENE_STR_CHARS} characters, got {chars}"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("scene: a string scene must not contain control characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `state` of a WeCom contact-me code: 1 to 30 characters. WeCom echoes it in the
/// `add_external_contact` event of every customer the code brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactWayState(String);

impl ContactWayState {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_STATE_CHARS {
            return Err(format!(
                "scene: the state of a WeCom contact-me code must be 1 to {MAX_STATE_CHARS} \
                 characters, got {chars}"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("scene: a state must not contain control characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the caller asked for as the scene: a number or a string, before the code type is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SceneInput {
    Id(i64),
    Str(String),
}

/// A validated Official Account QR code request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrSpec {
    /// QR_SCENE: 1..2^31-1, expiring.
    TemporaryId { scene_id: u32, expire_seconds: u32 },
    /// QR_STR_SCENE, expiring.
    TemporaryStr {
        scene: SceneStr,
        expire_seconds: u32,
    },
    /// QR_LIMIT_SCENE: 1..100000.
    PermanentId { scene_id: u32 },
    /// QR_LIMIT_STR_SCENE.
    PermanentStr { scene: SceneStr },
}

impl QrSpec {
    /// `expire_seconds` applies to temporary codes only; `None` there means the maximum.
    pub fn parse(
        scene: &SceneInput,
        permanent: bool,
        expire_seconds: Option<i64>,
    ) -> Result<Self, String> {
        if permanent {
            if expire_seconds.is_some() {
                return Err(
                    "expire_seconds: a permanent code does not expire; leave expire_seconds out"
                        .into(),
                );
            }
            return Ok(match scene {
                SceneInput::Id(id) => Self::PermanentId {
                    scene_id: id_in(*id, MAX_PERMANENT_SCENE_ID, "QR_LIMIT_SCENE")?,
                },
                SceneInput::Str(s) => Self::PermanentStr {
                    scene: SceneStr::parse(s)?,
                },
            });
        }
        let expire_seconds = match expire_seconds {
            None => MAX_EXPIRE_SECONDS,
            Some(e) if (MIN_EXPIRE_SECONDS as i64..=MAX_EXPIRE_SECONDS as i64).contains(&e) => {
                e as u32
            }
            Some(e) => {
                return Err(format!(
                    "expire_seconds: a temporary code lives {MIN_EXPIRE_SECONDS} to \
                     {MAX_EXPIRE_SECONDS} seconds (30 days), got {e}"
                ))
            }
        };
        Ok(match scene {
            SceneInput::Id(id) => Self::TemporaryId {
                scene_id: id_in(*id, MAX_TEMPORARY_SCENE_ID, "QR_SCENE")?,
                expire_seconds,
            },
            SceneInput::Str(s) => Self::TemporaryStr {
                scene: SceneStr::parse(s)?,
                expire_seconds,
            },
        })
    }

    /// The scene as WeChat writes it in a scan's EventKey (without `qrscene_`): the registry key.
    pub fn scene_key(&self) -> String {
        match self {
            Self::TemporaryId { scene_id, .. } | Self::PermanentId { scene_id } => {
                scene_id.to_string()
            }
            Self::TemporaryStr { scene, .. } | Self::PermanentStr { scene } => {
                scene.as_str().to_owned()
            }
        }
    }

    pub fn expire_seconds(&self) -> Option<u32> {
        match self {
            Self::TemporaryId { expire_seconds, .. }
            | Self::TemporaryStr { expire_seconds, .. } => Some(*expire_seconds),
            Self::PermanentId { .. } | Self::PermanentStr { .. } => None,
        }
    }
}

fn id_in(id: i64, max: u32, action: &str) -> Result<u32, String> {
    if (1..=max as i64).contains(&id) {
        Ok(id as u32)
    } else {
        Err(format!(
            "scene: the scene_id of a {action} code must be 1 to {max}, got {id}"
        ))
    }
}

/// A label: what the CRM sees on every event of the code. At most 128 characters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(format!(
                "label: at most {} characters, got {chars}",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> SceneInput {
        SceneInput::Id(n)
    }

    fn s(v: &str) -> SceneInput {
        SceneInput::Str(v.into())
    }

    #[test]
    fn permanent_scene_ids_are_1_to_100000() {
        assert!(QrSpec::parse(&id(1), true, None).is_ok());
        assert!(QrSpec::parse(&id(100_000), true, None).is_ok());
        for bad in [0, -1, 100_001] {
            let e = QrSpec::parse(&id(bad), true, None).unwrap_err();
            assert!(e.contains("QR_LIMIT_SCENE code must be 1 to 100000"), "{e}");
        }
    }

    #[test]
    fn temporary_scene_ids_are_non_zero_32_bit() {
        assert!(QrSpec::parse(&id(2_147_483_647), false, None).is_ok());
        assert!(QrSpec::parse(&id(2_147_483_648), false, None).is_err());
        assert!(QrSpec::parse(&id(0), false, None).is_err());
    }

    #[test]
    fn string_scenes_are_1_to_64_characters_counted_as_characters() {
        assert!(QrSpec::parse(&s(&"场".repeat(64)), true, None).is_ok());
        let e = QrSpec::parse(&s(&"a".repeat(65)), false, None).unwrap_err();
        assert!(e.contains("1 to 64 characters, got 65"), "{e}");
        assert!(QrSpec::parse(&s(""), false, None).is_err());
        assert!(QrSpec::parse(&s("a\nb"), false, None).is_err());
    }

    #[test]
    fn expire_seconds_is_60_to_30_days_and_only_for_temporary_codes() {
        for ok in [60, 2_592_000] {
            assert_eq!(
                QrSpec::parse(&s("x"), false, Some(ok))
                    .unwrap()
                    .expire_seconds(),
                Some(ok as u32)
            );
        }
        for bad in [59, 2_592_001, -5] {
            let e = QrSpec::parse(&s("x"), false, Some(bad)).unwrap_err();
            assert!(e.contains("60 to 2592000 seconds"), "{e}");
        }
        assert_eq!(
            QrSpec::parse(&s("x"), false, None)
                .unwrap()
                .expire_seconds(),
            Some(MAX_EXPIRE_SECONDS)
        );
        assert!(QrSpec::parse(&s("x"), true, Some(600))
            .unwrap_err()
            .contains("does not expire"));
    }

    #[test]
    fn the_scene_key_is_what_a_scan_carries() {
        // The request body of each kind of code is checked in `crate::wechat::api::qrcode`.
        let spec = QrSpec::parse(&id(42), false, Some(600)).unwrap();
        assert_eq!(spec.scene_key(), "42");
        let spec = QrSpec::parse(&s("spring-expo"), true, None).unwrap();
        assert_eq!(spec.scene_key(), "spring-expo");
    }

    #[test]
    fn contact_way_states_are_1_to_30_characters() {
        assert!(ContactWayState::parse(&"s".repeat(30)).is_ok());
        let e = ContactWayState::parse(&"s".repeat(31)).unwrap_err();
        assert!(e.contains("1 to 30 characters, got 31"), "{e}");
        assert!(ContactWayState::parse("").is_err());
    }

    #[test]
    fn labels_are_bounded() {
        assert!(Label::parse("").is_ok());
        assert!(Label::parse(&"l".repeat(129)).is_err());
    }
}
