//! The identity token that the `/oauth/{account}` entry hands to an H5 page (issue 14): who the
//! follower is, signed so that the page's backend can trust it without calling the gateway.
//!
//! It is a JSON Web Token (RFC 7519) in compact form, HS256 (RFC 7518 section 3.2):
//! `BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(HMAC-SHA256(key, BASE64URL(header) "."
//! BASE64URL(claims)))`, base64url without padding (RFC 7515 section 2), the key being the bytes
//! of `links.identity_secret`. The header is always `{"alg":"HS256","typ":"JWT"}`. The claims,
//! always all present (docs/h5.md documents them for the page's backend):
//!
//! | claim | what |
//! | --- | --- |
//! | `iss` | `"wechat-gateway"` |
//! | `sub` | the follower's openid |
//! | `union_id` | the UnionID when WeChat gave one, else `""` |
//! | `account` | the gateway's account id |
//! | `scope` | `"snsapi_base"` or `"snsapi_userinfo"` |
//! | `aud` | the host of the return URL: a page must refuse a token meant for another host |
//! | `iat`, `exp` | unix seconds: issued at, and `iat + 300` |
//! | `jti` | a unique id (the sign-in's nonce) for the page to refuse a token used twice |

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::Serialize;

/// How long a token is good for.
pub const TOKEN_TTL_SECONDS: u64 = 300;
/// `iss` of every token.
pub const ISSUER: &str = "wechat-gateway";
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The claims, in this order on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityClaims {
    pub iss: &'static str,
    pub sub: String,
    pub union_id: String,
    pub account: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// The signed token of `claims` under `key`.
pub fn issue(key: &[u8], claims: &IdentityClaims) -> String {
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = hmac_sha256(key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_token_is_a_compact_hs256_jwt_over_its_claims() {
        let claims = IdentityClaims {
            iss: ISSUER,
            sub: "oAlice".into(),
            union_id: String::new(),
            account: "acme-mp".into(),
            scope: "snsapi_base".into(),
            aud: "shop.acme.com".into(),
            iat: 1_000,
            exp: 1_300,
            jti: "n".into(),
        };
        let token = issue(b"k", &claims);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HEADER.as_bytes());
        let body: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body["sub"], "oAlice");
        assert_eq!(body["exp"], 1_300);
        let mac = hmac_sha256(b"k", format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap(), mac);
        assert_ne!(issue(b"other", &claims), token);
    }
}
