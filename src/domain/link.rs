//! Tracked links: the rules that keep them from being an open redirect, their unguessable
//! codes, and the signed OAuth `state` that carries a click through WeChat's `snsapi_base`
//! authorization and back.
//!
//! - A target is an `https` URL whose host is one of `links.allowed_domains` or a subdomain of
//!   one, with no userinfo and no explicit port. It is parsed with the WHATWG URL parser (the
//!   one browsers use), so that the host we check is the host a browser will visit: IDN is
//!   compared in punycode, `\` and other ways of smuggling a second host are refused up front.
//! - A code is 22 base62 characters drawn from the thread CSPRNG: about 131 bits, far past
//!   guessing. Base62 because WeChat allows only `[a-zA-Z0-9]` in `state`, and the code shares
//!   the URL path with it.
//! - The `state` is `nonce (16) + expiry (10 digits) + MAC (32 hex)`, all alphanumeric and 58
//!   characters (WeChat allows 128). The MAC is HMAC-SHA1 over the account, the code, the nonce
//!   and the expiry, keyed with the account's app secret, so that a callback cannot be minted
//!   for another link or replayed after it expires. The target never travels in the state: it
//!   is read from the stored link.

use rand::Rng;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Longest target accepted (browsers and WeChat's in-app browser handle far more; a CRM link
/// longer than this is a mistake).
pub const MAX_TARGET_CHARS: usize = 2048;
/// Longest label.
pub const MAX_LABEL_CHARS: usize = 128;
pub const CODE_CHARS: usize = 22;
const NONCE_CHARS: usize = 16;
const MAC_HEX: usize = 32;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A lowercase ASCII host name with at least one dot: labels of letters, digits and `-`, not
/// starting or ending with `-` (RFC 1123), 1 to 63 characters each, 253 in all.
pub fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A link target that passed every rule (see the module comment); `as_str` is the normalized
/// URL that the redirect sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget(String);

impl LinkTarget {
    pub fn parse(raw: &str, allowed_domains: &[String]) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("target: required (an https:// URL)".into());
        }
        if raw.chars().count() > MAX_TARGET_CHARS {
            return Err(format!(
                "target: at most {MAX_TARGET_CHARS} characters, got {}",
                raw.chars().count()
            ));
        }
        // The URL parser would quietly strip or reinterpret these; a browser may differ.
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(
                "target: must not contain whitespace, control characters or backslashes".into(),
            );
        }
        let url =
            reqwest::Url::parse(raw).map_err(|e| format!("target: {raw:?} is not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!(
                "target: must be an https:// URL, got scheme {:?}",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("target: must not carry a user name or password (user@host)".into());
        }
        if url.port().is_some() {
            return Err("target: must not name a port".into());
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err("target: must name a host".into());
        }
        // The parser normalizes every IPv4 spelling (0x7f.1, 2130706433) to dotted decimal.
        if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err("target: must name a host, not an IP address".into());
        }
        let host = host.trim_end_matches('.');
        let allowed = allowed_domains.iter().any(|d| {
            host == d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        });
        if !allowed {
            return Err(if allowed_domains.is_empty() {
                "target: no domain is allowed (set links.allowed_domains)".into()
            } else {
                format!(
                    "target: host {host:?} is not one of links.allowed_domains ({}) or a subdomain of one",
                    allowed_domains.join(", ")
                )
            });
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A link's code: [`CODE_CHARS`] base62 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCode(String);

impl LinkCode {
    pub fn generate() -> Self {
        Self(random_base62(CODE_CHARS))
    }

    /// A code as it appears in a URL path; anything else is no link.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == CODE_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn random_base62(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// A fresh random nonce for one click.
pub fn new_nonce() -> String {
    random_base62(NONCE_CHARS)
}

/// WeChat's web OAuth authorize URL (网页授权), in its documented form: `#wechat_redirect` must
/// end it. `scope` is `snsapi_base` or `snsapi_userinfo`; `state` is one this module signed.
/// Shared by tracked links and the H5 OAuth entry.
pub fn oauth_authorize_url(
    oauth_base: &str,
    app_id: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
) -> String {
    format!(
        "{oauth_base}/connect/oauth2/authorize?appid={app_id}&redirect_uri={}&response_type=code&scope={scope}&state={state}#wechat_redirect",
        url_encode(redirect_uri),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
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

/// The OAuth `state` of one click: valid until `expires_at` (unix seconds).
pub fn sign_state(key: &[u8], account: &str, code: &str, nonce: &str, expires_at: u64) -> String {
    let expiry = format!("{expires_at:010}");
    let mac = state_mac(key, account, code, nonce, &expiry);
    format!("{nonce}{expiry}{mac}")
}

/// The nonce of a `state` this gateway signed for this link and that has not expired.
pub fn verify_state<'s>(
    key: &[u8],
    account: &str,
    code: &str,
    state: &'s str,
    now: u64,
) -> Result<&'s str, &'static str> {
    if state.len() != NONCE_CHARS + 10 + MAC_HEX || !state.is_ascii() {
        return Err("malformed state");
    }
    let (nonce, rest) = state.split_at(NONCE_CHARS);
    let (expiry, mac) = rest.split_at(10);
    let expected = state_mac(key, account, code, nonce, expiry);
    if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return Err("state signature does not verify");
    }
    let expires_at: u64 = expiry.parse().map_err(|_| "malformed state")?;
    if expires_at < now {
        return Err("state expired");
    }
    Ok(nonce)
}

fn state_mac(key: &[u8], account: &str, code: &str, nonce: &str, expiry: &str) -> String {
    let msg = format!("wgw-link-state\n{account}\n{code}\n{nonce}\n{expiry}");
    hex::encode(&hmac_sha1(key, msg.as_bytes())[..MAC_HEX / 2])
}

/// HMAC-SHA1 (RFC 2104), written out because it is ten lines and the crate has SHA-1 already.
fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["acme.com".into(), "xn--fiqs8s.cn".into()]
    }

    #[test]
    fn targets_on_allowed_domains_pass_and_are_normalized() {
        for (raw, want) in [
            (
                "https://acme.com/spring?x=1#a",
                "https://acme.com/spring?x=1#a",
            ),
            ("https://shop.acme.com", "https://shop.acme.com/"),
            ("https://ACME.com:443/p", "https://acme.com/p"),
            ("https://中国.cn/x", "https://xn--fiqs8s.cn/x"),
            ("https://acme.com./x", "https://acme.com./x"),
        ] {
            assert_eq!(
                LinkTarget::parse(raw, &allowed()).unwrap().as_str(),
                want,
                "{raw}"
            );
        }
    }

    #[test]
    fn open_redirect_tricks_are_refused_with_the_rule_named() {
        for (raw, rule) in [
            ("http://acme.com/", "https://"),
            ("https://evil.com/", "not one of links.allowed_domains"),
            ("https://acme.com.evil.com/", "not one of"),
            ("https://evilacme.com/", "not one of"),
            ("https://acme.com@evil.com/", "user name"),
            ("https://user:pw@acme.com/", "user name"),
            ("https://acme.com:8443/", "port"),
            ("https://acme.com\\@evil.com/", "backslashes"),
            ("https://acme.com\t.evil.com/", "whitespace"),
            ("https://93.184.216.34/", "IP address"),
            ("javascript:alert(1)", "https://"),
            ("//evil.com/", "not a URL"),
            ("", "required"),
            ("https://еvil.acme.com.ru/", "not one of"),
        ] {
            let e = LinkTarget::parse(raw, &allowed()).unwrap_err();
            assert!(e.contains(rule), "{raw}: {e}");
        }
        let long = format!("https://acme.com/{}", "a".repeat(MAX_TARGET_CHARS));
        assert!(LinkTarget::parse(&long, &allowed())
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn host_names_in_the_configuration_are_lowercase_ascii() {
        assert!(is_host_name("acme.com"));
        assert!(is_host_name("xn--fiqs8s.cn"));
        for bad in [
            "acme",
            "Acme.com",
            "https://acme.com",
            "acme.com:443",
            ".acme.com",
            "-a.com",
            "中国.cn",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn codes_are_22_base62_characters_and_distinct() {
        let a = LinkCode::generate();
        let b = LinkCode::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), CODE_CHARS);
        assert!(LinkCode::parse(a.as_str()).is_some());
        assert!(LinkCode::parse("short").is_none());
        assert!(LinkCode::parse(&"a/".repeat(11)).is_none());
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 test case 2.
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn a_state_verifies_only_for_its_link_key_and_time() {
        let nonce = new_nonce();
        let state = sign_state(b"secret", "acme-mp", "CODE", &nonce, 1_000);
        assert_eq!(state.len(), 58);
        assert!(state.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            verify_state(b"secret", "acme-mp", "CODE", &state, 999),
            Ok(nonce.as_str())
        );
        assert_eq!(
            verify_state(b"secret", "acme-mp", "CODE", &state, 1_001),
            Err("state expired")
        );
        assert!(verify_state(b"other", "acme-mp", "CODE", &state, 999).is_err());
        assert!(verify_state(b"secret", "acme-mp", "OTHER", &state, 999).is_err());
        assert!(verify_state(b"secret", "other-mp", "CODE", &state, 999).is_err());
        let later = state.replace(&format!("{:010}", 1_000), &format!("{:010}", 9_999));
        assert!(verify_state(b"secret", "acme-mp", "CODE", &later, 999).is_err());
        assert!(verify_state(b"secret", "acme-mp", "CODE", "x", 0).is_err());
    }
}
