//! The callback envelope: how a request from WeChat is opened, and how the passive reply to it
//! is sealed. Official Accounts and WeCom, POST callbacks and GET URL verifications, plain and
//! encrypted requests all go through the one [`open`].
//!
//! [`open`] checks a request in one fixed order, cheapest first, so that a forged or replayed
//! request costs as little as possible and is refused for the same reason at every entry point:
//!
//! 1. the encoding: whether the account takes this request plain or encrypted (its mode; WeCom
//!    and every encrypted request need a key) — read from the query alone;
//! 2. the query: the signature (`signature`, or `msg_signature` when encrypted), `timestamp`,
//!    `nonce`, and `echostr` for a URL verification;
//! 3. the clock: `timestamp` is a number of seconds within `callbacks.max_clock_skew_seconds` of
//!    now, so that a captured request cannot be replayed later;
//! 4. when encrypted, the `Encrypt` value: parsed out of the body's XML, or the WeCom `echostr`;
//! 5. the signature, one SHA-1 compared in constant time: `signature` covers token, timestamp and
//!    nonce, `msg_signature` those and the `Encrypt` value;
//! 6. when encrypted, AES: the current key, then the previous one (a key rotation), and the
//!    appid or corpid the message must end with.
//!
//! The [`Seal`] of an opened request answers in kind: a passive reply to an encrypted request is
//! encrypted with the key that opened it and signed (compatible mode too); a reply to a plain
//! request stays plain, as WeChat reads it there.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::crypto::{self, CryptoError, MsgCrypto};
use super::query::{required, CallbackQuery};
use super::xml::{self, Document, XmlError};
use crate::domain::autoreply::Reply;
use crate::domain::Platform;
use crate::pb;
use crate::wechat::account::{Account, CallbackMode};

/// Why a request did not open. Each case names what a sender got wrong; `crate::error` maps
/// them to HTTP statuses (forged or stale → 401, the rest → 400) and metrics outcomes.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("missing query parameter {0:?}")]
    MissingParam(&'static str),
    #[error("query parameter {0:?} is given more than once")]
    DuplicateParam(&'static str),
    #[error("signature does not verify")]
    BadSignature,
    #[error("timestamp \"{}\" is not a number of seconds", crate::domain::Untrusted(.0))]
    BadTimestamp(String),
    #[error(
        "timestamp is {skew_seconds} s away from the gateway's clock (allowed: {max_seconds} s)"
    )]
    StaleTimestamp { skew_seconds: u64, max_seconds: u64 },
    #[error("{0}")]
    ModeRefused(&'static str),
    /// The encrypted envelope's XML (the message inside is read by the caller).
    #[error("cannot parse XML: {0}")]
    Xml(#[from] XmlError),
    #[error("cannot decrypt: {0}")]
    Decrypt(#[from] CryptoError),
}

/// Which of the callback URL's two uses a request is.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'r> {
    /// POST: a message or event, carried in the body.
    Callback(&'r [u8]),
    /// GET: URL verification; the answer is the `echostr` (decrypted, on WeCom).
    Verification,
}

/// A request that opened.
pub struct Opened<'r> {
    /// The message XML of a callback, or what a URL verification answers. Borrowed from the
    /// request when it was plain; the decrypted bytes when it was encrypted.
    pub content: Cow<'r, [u8]>,
    /// Seals the passive reply to it.
    pub seal: Seal<'r>,
}

/// How the passive reply to an opened request is sealed: borrowed from the account and the
/// query, nothing copied until there is a reply.
pub struct Seal<'r> {
    /// The key that decrypted the request (the previous one during a key rotation); `None` for
    /// a plain request.
    key: Option<&'r MsgCrypto>,
    account: &'r Account,
    timestamp: &'r str,
    nonce: &'r str,
}

/// An encrypted, signed message: the `Encrypt` value and its `msg_signature`.
pub struct Sealed {
    pub encrypt: String,
    pub msg_signature: String,
}

/// Opens a request for `account` (see the module documentation for the order of the checks).
/// `max_skew`: how far `timestamp` may be from the clock; `None` checks only that it is a number.
pub fn open<'r>(
    account: &'r Account,
    q: &'r CallbackQuery<'r>,
    entry: Entry<'r>,
    max_skew: Option<Duration>,
) -> Result<Opened<'r>, EnvelopeError> {
    // 1. The encoding.
    let encrypted = is_encrypted(account, q, entry)?;
    // 2. The query.
    let signature = if encrypted {
        required(&q.msg_signature, "msg_signature")?
    } else {
        required(&q.signature, "signature")?
    };
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let echostr = match entry {
        Entry::Callback(_) => "",
        Entry::Verification => required(&q.echostr, "echostr")?,
    };
    // 3. The clock.
    check_timestamp(timestamp, max_skew, unix_now)?;
    let token = account.token.expose();
    let mut seal = Seal {
        key: None,
        account,
        timestamp,
        nonce,
    };
    if !encrypted {
        // 5. The signature; nothing to decrypt.
        if !crypto::signature_holds(signature, token, timestamp, nonce) {
            return Err(EnvelopeError::BadSignature);
        }
        let content = match entry {
            Entry::Callback(body) => body,
            Entry::Verification => echostr.as_bytes(),
        };
        return Ok(Opened {
            content: Cow::Borrowed(content),
            seal,
        });
    }
    // 4. The `Encrypt` value; 5. the signature over it; 6. AES.
    let (content, key) = match entry {
        Entry::Callback(body) => {
            let envelope = Document::parse(body)?;
            let encrypt = envelope
                .get("Encrypt")
                .ok_or(XmlError::Missing("Encrypt"))?;
            verify_and_decrypt(account, signature, timestamp, nonce, encrypt)?
        }
        Entry::Verification => {
            // A `+` of the base64 echostr that reached us unescaped was decoded as a space.
            let echostr = match echostr.contains(' ') {
                true => Cow::Owned(echostr.replace(' ', "+")),
                false => Cow::Borrowed(echostr),
            };
            verify_and_decrypt(account, signature, timestamp, nonce, &echostr)?
        }
    };
    seal.key = Some(key);
    Ok(Opened {
        content: Cow::Owned(content),
        seal,
    })
}

/// Whether the request is encrypted, refusing an encoding the account does not take.
fn is_encrypted(
    account: &Account,
    q: &CallbackQuery<'_>,
    entry: Entry<'_>,
) -> Result<bool, EnvelopeError> {
    let encrypted = match (account.platform, entry) {
        // WeCom encrypts everything, its URL verification's echostr too.
        (Platform::Work, _) => true,
        // An Official Account's URL verification is signed, never encrypted, in every mode.
        (Platform::Mp, Entry::Verification) => false,
        (Platform::Mp, Entry::Callback(_)) => {
            let encrypted = q.encrypt_type.as_deref() == Some("aes");
            match (encrypted, account.mode) {
                (true, CallbackMode::Plain) => {
                    return Err(EnvelopeError::ModeRefused(
                        "encrypted callback, but this account is configured for plain mode",
                    ))
                }
                (false, CallbackMode::Safe) => {
                    return Err(EnvelopeError::ModeRefused(
                        "plain callback, but this account is configured for safe mode (encrypt_type=aes)",
                    ))
                }
                _ => encrypted,
            }
        }
    };
    // The configuration requires a key for these accounts; an `Account` built otherwise is
    // refused here rather than trusted.
    if encrypted && account.keys.is_empty() {
        return Err(EnvelopeError::ModeRefused(
            "encrypted callback, but no encoding_aes_key is configured for this account",
        ));
    }
    Ok(encrypted)
}

/// Refuses a timestamp that is not a number, or further than `max_skew` from `now()` (read
/// only when there is a limit).
fn check_timestamp(
    timestamp: &str,
    max_skew: Option<Duration>,
    now: impl FnOnce() -> u64,
) -> Result<(), EnvelopeError> {
    let ts: u64 = timestamp
        .parse()
        .map_err(|_| EnvelopeError::BadTimestamp(timestamp.to_owned()))?;
    let Some(max) = max_skew else {
        return Ok(());
    };
    let skew = now().abs_diff(ts);
    if skew > max.as_secs() {
        return Err(EnvelopeError::StaleTimestamp {
            skew_seconds: skew,
            max_seconds: max.as_secs(),
        });
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks `msg_signature` over `encrypt`, then decrypts it with the current key, then the
/// previous one. Returns the plaintext and the key that worked, so that a reply is encrypted
/// with the same key.
fn verify_and_decrypt<'a>(
    account: &'a Account,
    msg_signature: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
) -> Result<(Vec<u8>, &'a MsgCrypto), EnvelopeError> {
    let token = account.token.expose();
    if !crypto::msg_signature_holds(msg_signature, token, timestamp, nonce, encrypt) {
        return Err(EnvelopeError::BadSignature);
    }
    let mut first_err: Option<CryptoError> = None;
    for key in &account.keys {
        match key.decrypt(encrypt, &account.receiver_id) {
            Ok(plain) => return Ok((plain, key)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err
        .expect("is_encrypted refused an account without keys")
        .into())
}

/// Encrypts `msg` for the account's appid or corpid with `key` and signs it over token,
/// timestamp, nonce and the ciphertext: what WeChat does to a callback, and the gateway to a
/// reply.
pub fn seal_message(
    account: &Account,
    key: &MsgCrypto,
    timestamp: &str,
    nonce: &str,
    msg: &[u8],
) -> Sealed {
    let encrypt = key.encrypt(msg, &account.receiver_id);
    let msg_signature = crypto::msg_signature(account.token.expose(), timestamp, nonce, &encrypt);
    Sealed {
        encrypt,
        msg_signature,
    }
}

impl Seal<'_> {
    /// The passive reply `reply` to the sender of `event` (ToUserName and FromUserName
    /// swapped), sealed as the request was: in the encrypted envelope (`Encrypt`,
    /// `MsgSignature`, `TimeStamp`, `Nonce`, the request's timestamp and nonce) or plain.
    pub fn reply(&self, event: &pb::Event, reply: &Reply) -> String {
        let to = if event.open_id.is_empty() {
            &event.user_id
        } else {
            &event.open_id
        };
        let reply_xml = xml::passive_reply(to, &event.to_user_name, unix_now(), reply);
        match self.key {
            None => reply_xml,
            Some(key) => {
                let sealed = seal_message(
                    self.account,
                    key,
                    self.timestamp,
                    self.nonce,
                    reply_xml.as_bytes(),
                );
                xml::encrypted_reply(
                    &sealed.encrypt,
                    &sealed.msg_signature,
                    self.timestamp,
                    self.nonce,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, Secret};
    use crate::wechat::crypto::published::*;

    /// A second key, for rotations.
    const OTHER_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    const SKEW: Option<Duration> = Some(Duration::from_secs(300));

    fn account(platform: Platform, mode: CallbackMode, keys: &[&str]) -> Account {
        let (token, receiver) = match platform {
            Platform::Mp => (MP_TOKEN, MP_APPID),
            Platform::Work => (WECOM_TOKEN, WECOM_CORPID),
        };
        Account {
            id: AccountId::parse("acme").unwrap(),
            platform,
            receiver_id: receiver.into(),
            secret: Secret::new("s"),
            token: Secret::new(token),
            mode,
            keys: keys.iter().map(|k| MsgCrypto::new(k).unwrap()).collect(),
            encoding_aes_key: keys.first().map(|k| Secret::new(*k)),
            agent_id: 0,
        }
    }

    fn wecom() -> Account {
        account(Platform::Work, CallbackMode::Safe, &[WECOM_KEY])
    }

    fn query(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn open_query(
        account: &Account,
        query: &str,
        entry: Entry<'_>,
        max_skew: Option<Duration>,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let q = CallbackQuery::parse(query)?;
        open(account, &q, entry, max_skew).map(|o| o.content.into_owned())
    }

    fn now() -> String {
        unix_now().to_string()
    }

    #[test]
    fn the_published_wecom_url_verification_opens_to_its_echostr() {
        let q = query(&[
            ("msg_signature", WECOM_ECHOSTR_SIGNATURE),
            ("timestamp", "1409659589"),
            ("nonce", "263014780"),
            ("echostr", WECOM_ECHOSTR),
        ]);
        let echo = open_query(&wecom(), &q, Entry::Verification, None).unwrap();
        assert_eq!(echo, b"1616140317555161061");
        // The same, with the `+` of the echostr sent unescaped (read back as a space).
        let unescaped = q.replace("%2B", "+");
        assert_ne!(unescaped, q);
        let echo = open_query(&wecom(), &unescaped, Entry::Verification, None).unwrap();
        assert_eq!(echo, b"1616140317555161061");
        // Published in 2014: refused as a replay when the clock is checked.
        let e = open_query(&wecom(), &q, Entry::Verification, SKEW).unwrap_err();
        assert!(matches!(e, EnvelopeError::StaleTimestamp { .. }), "{e:?}");
    }

    #[test]
    fn the_published_wecom_callback_opens_to_its_message() {
        let q = query(&[
            ("msg_signature", WECOM_POST_SIGNATURE),
            ("timestamp", "1409659813"),
            ("nonce", "1372623149"),
        ]);
        let body = format!("<xml><ToUserName><![CDATA[{WECOM_CORPID}]]></ToUserName><Encrypt><![CDATA[{WECOM_POST_ENCRYPT}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>");
        let plain = open_query(&wecom(), &q, Entry::Callback(body.as_bytes()), None).unwrap();
        assert_eq!(plain, WECOM_POST_PLAIN.as_bytes());
        // Another corpid: the signature holds, the message is not for this account.
        let mut other = wecom();
        other.receiver_id = "ww0000000000000000".into();
        let e = open_query(&other, &q, Entry::Callback(body.as_bytes()), None).unwrap_err();
        assert!(
            matches!(
                e,
                EnvelopeError::Decrypt(CryptoError::ReceiverMismatch { .. })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn plain_requests_are_signed_over_token_timestamp_and_nonce() {
        let mp = account(Platform::Mp, CallbackMode::Compatible, &[MP_KEY]);
        let ts = now();
        let sig = crypto::signature(MP_TOKEN, &ts, "n");
        let q = query(&[("signature", &sig), ("timestamp", &ts), ("nonce", "n")]);
        let body = b"<xml/>";
        let opened = open_query(&mp, &q, Entry::Callback(body), SKEW).unwrap();
        assert_eq!(opened, body);
        let q = query(&[
            ("signature", &sig),
            ("timestamp", &ts),
            ("nonce", "n"),
            ("echostr", "e1"),
        ]);
        assert_eq!(
            open_query(&mp, &q, Entry::Verification, SKEW).unwrap(),
            b"e1"
        );
        let q = query(&[("signature", &sig), ("timestamp", &ts), ("nonce", "m")]);
        let e = open_query(&mp, &q, Entry::Callback(body), SKEW).unwrap_err();
        assert!(matches!(e, EnvelopeError::BadSignature), "{e:?}");
    }

    /// One order at every entry point: the encoding, the query, the clock, the envelope XML,
    /// the signature, AES.
    #[test]
    fn cheap_checks_come_first_at_every_entry_point() {
        let mp = account(Platform::Mp, CallbackMode::Safe, &[MP_KEY]);
        let plain_mp = account(Platform::Mp, CallbackMode::Plain, &[]);
        let work = wecom();
        let stale = (unix_now() - 3600).to_string();
        let forged = "0".repeat(40);
        let envelope = b"<xml><Encrypt>AAAA</Encrypt></xml>";
        let cases: Vec<(&Account, String, Entry<'_>, &str)> = vec![
            // The encoding before the query: nothing else is read.
            (&mp, query(&[]), Entry::Callback(b"<xml/>"), "ModeRefused"),
            (
                &plain_mp,
                query(&[("encrypt_type", "aes")]),
                Entry::Callback(envelope),
                "ModeRefused",
            ),
            // The query before the clock and the body.
            (
                &mp,
                query(&[("encrypt_type", "aes"), ("timestamp", "x")]),
                Entry::Callback(b"not xml"),
                "MissingParam(\"msg_signature\")",
            ),
            (
                &work,
                query(&[
                    ("msg_signature", &forged),
                    ("timestamp", &stale),
                    ("nonce", "n"),
                ]),
                Entry::Verification,
                "MissingParam(\"echostr\")",
            ),
            // The clock before the envelope XML and the signature: stale and forged is stale.
            (
                &mp,
                query(&[
                    ("encrypt_type", "aes"),
                    ("msg_signature", &forged),
                    ("timestamp", &stale),
                    ("nonce", "n"),
                ]),
                Entry::Callback(b"not xml"),
                "StaleTimestamp",
            ),
            (
                &plain_mp,
                query(&[
                    ("signature", &forged),
                    ("timestamp", "soon"),
                    ("nonce", "n"),
                ]),
                Entry::Callback(b"<xml/>"),
                "BadTimestamp",
            ),
            (
                &work,
                query(&[
                    ("msg_signature", &forged),
                    ("timestamp", &stale),
                    ("nonce", "n"),
                    ("echostr", "!!"),
                ]),
                Entry::Verification,
                "StaleTimestamp",
            ),
            // The envelope XML before the signature, the signature before AES.
            (
                &mp,
                query(&[
                    ("encrypt_type", "aes"),
                    ("msg_signature", &forged),
                    ("timestamp", &now()),
                    ("nonce", "n"),
                ]),
                Entry::Callback(b"<xml><ToUserName>x</ToUserName></xml>"),
                "Xml(Missing(\"Encrypt\"))",
            ),
            (
                &work,
                query(&[
                    ("msg_signature", &forged),
                    ("timestamp", &now()),
                    ("nonce", "n"),
                ]),
                Entry::Callback(envelope),
                "BadSignature",
            ),
        ];
        for (account, q, entry, expected) in cases {
            let e = open_query(account, &q, entry, SKEW).unwrap_err();
            assert!(
                format!("{e:?}").starts_with(expected),
                "{q} {entry:?}: {e:?}, expected {expected}"
            );
        }
    }

    #[test]
    fn a_reply_is_sealed_with_the_key_that_opened_the_request_and_opens_again() {
        // During a rotation: the request was encrypted with the previous key.
        let rotated = account(Platform::Mp, CallbackMode::Safe, &[OTHER_KEY, MP_KEY]);
        let old = MsgCrypto::new(MP_KEY).unwrap();
        let ts = now();
        let message = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>1</MsgId></xml>";
        let request = seal_message(&rotated, &old, &ts, "n1", message.as_bytes());
        let body = format!(
            "<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>",
            request.encrypt
        );
        let q = query(&[
            ("encrypt_type", "aes"),
            ("msg_signature", &request.msg_signature),
            ("timestamp", &ts),
            ("nonce", "n1"),
        ]);
        let q = CallbackQuery::parse(&q).unwrap();
        let opened = open(&rotated, &q, Entry::Callback(body.as_bytes()), SKEW).unwrap();
        assert_eq!(&*opened.content, message.as_bytes());

        let event = pb::Event {
            open_id: "oUser".into(),
            to_user_name: "gh_1".into(),
            ..Default::default()
        };
        let reply = Reply::Text {
            content: "hello".into(),
        };
        let sealed = opened.seal.reply(&event, &reply);
        let doc = Document::parse(sealed.as_bytes()).unwrap();
        assert_eq!(doc.get("TimeStamp"), Some(ts.as_str()));
        assert_eq!(doc.get("Nonce"), Some("n1"));
        let encrypt = doc.get("Encrypt").unwrap();
        assert!(crypto::msg_signature_holds(
            doc.get("MsgSignature").unwrap(),
            MP_TOKEN,
            &ts,
            "n1",
            encrypt
        ));
        // Only the previous key opens it.
        assert!(rotated.keys[0].decrypt(encrypt, MP_APPID).is_err());
        let inner = old.decrypt(encrypt, MP_APPID).unwrap();
        let inner = Document::parse(&inner).unwrap();
        assert_eq!(inner.get("ToUserName"), Some("oUser"));
        assert_eq!(inner.get("FromUserName"), Some("gh_1"));
        assert_eq!(inner.get("Content"), Some("hello"));

        // The sealed reply is itself an envelope that opens like a callback.
        let q = query(&[
            ("encrypt_type", "aes"),
            ("msg_signature", doc.get("MsgSignature").unwrap()),
            ("timestamp", &ts),
            ("nonce", "n1"),
        ]);
        let back = open_query(&rotated, &q, Entry::Callback(sealed.as_bytes()), SKEW).unwrap();
        assert_eq!(Document::parse(&back).unwrap(), inner);
    }

    #[test]
    fn a_reply_to_a_plain_request_stays_plain() {
        let mp = account(Platform::Mp, CallbackMode::Compatible, &[MP_KEY]);
        let ts = now();
        let sig = crypto::signature(MP_TOKEN, &ts, "n");
        let q = query(&[("signature", &sig), ("timestamp", &ts), ("nonce", "n")]);
        let q = CallbackQuery::parse(&q).unwrap();
        let opened = open(&mp, &q, Entry::Callback(b"<xml/>"), SKEW).unwrap();
        let event = pb::Event {
            user_id: "zhangsan".into(),
            to_user_name: "ww1".into(),
            ..Default::default()
        };
        let reply = Reply::Image {
            media_id: "M1".into(),
        };
        let xml = opened.seal.reply(&event, &reply);
        let doc = Document::parse(xml.as_bytes()).unwrap();
        assert_eq!(doc.get("ToUserName"), Some("zhangsan"));
        assert_eq!(doc.get("FromUserName"), Some("ww1"));
        assert_eq!(doc.get("MediaId"), Some("M1"));
        assert_eq!(doc.get("Encrypt"), None);
    }

    #[test]
    fn the_clock_window_is_checked_only_when_set() {
        let now = || 1_000_000;
        assert!(check_timestamp("1", None, || unreachable!()).is_ok());
        assert!(check_timestamp("999700", SKEW, now).is_ok());
        assert!(check_timestamp("1000300", SKEW, now).is_ok());
        let e = check_timestamp("1000301", SKEW, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "timestamp is 301 s away from the gateway's clock (allowed: 300 s)"
        );
        let e = check_timestamp("-1", None, now).unwrap_err();
        assert_eq!(e.to_string(), "timestamp \"-1\" is not a number of seconds");
    }
}
