//! Validated domain types. Each is parsed once at the edge (configuration, HTTP path, gRPC
//! request) and is valid wherever it appears afterwards. No I/O here.

pub mod access;
pub mod autoreply;
pub mod broadcast;
pub mod group_message;
pub mod identity;
pub mod link;
pub mod media;
pub mod menu;
pub mod message;
pub mod scene;
pub mod template;
pub mod untrusted;
pub mod wecom;

pub use untrusted::Untrusted;

use std::fmt;

/// The gateway's own name for a configured account (`[[accounts]].id`), used in URLs and keys.
///
/// 1 to 64 characters of `[A-Za-z0-9_-]`: safe in a URL path, a Redis key and a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("account id {s:?} must be 1 to 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "account id {s:?} may contain only letters, digits, '-' and '_'"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked for a change: the `name` of the admin token presented over HTTP, or of the
/// `[[grpc.tokens]]` entry (`grpc` when none are configured); what it may do is its
/// [`access::Scope`]. Recorded with what it changed
/// (menu versions, reply rules, broadcast jobs) and in log lines; never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The caller's name, as the door that authenticated it knows it.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which WeChat product an account belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Official Account (公众号): `platform = "mp"`.
    Mp,
    /// WeCom application (企业微信): `platform = "work"`.
    Work,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "mp" => Ok(Self::Mp),
            "work" => Ok(Self::Work),
            other => Err(format!(
                "unknown platform {other:?}: expected \"mp\" (Official Account) or \"work\" (WeCom)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp => "mp",
            Self::Work => "work",
        }
    }
}

/// A secret string (app secret, token, AES key, admin token). `Debug` and `Display` print
/// `[redacted]` so that a secret never reaches a log line by accident; read it with
/// [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is this secret, compared in constant time (the length is not
    /// secret).
    pub fn matches(&self, presented: &str) -> bool {
        self.0.len() == presented.len()
            && subtle::ConstantTimeEq::ct_eq(self.0.as_bytes(), presented.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_allow_url_safe_names_only() {
        assert!(AccountId::parse("acme-mp_1").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("a/b").is_err());
        assert!(AccountId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn token_comparison_is_exact() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("abcd"));
        assert!(!Secret::new("").matches("a"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }
}
