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
//! After a valid `msg_signature`, every failure (base64, block length, padding, length field,
//! appid or corpid, and the XML of the decrypted message, which the caller reads) is one and the
//! same [`EnvelopeError::Undecryptable`]: one status, one body, one log reason, nothing taken
//! from the decrypted bytes. Whoever holds the Token but not the EncodingAESKey can sign altered
//! ciphertexts; distinct answers would let them read a captured message (a padding oracle).
//!
//! An Official Account in compatible or safe mode takes only encrypted callbacks: the event is
//! read from the `Encrypt` value that `msg_signature` covers, never from the plain fields that
//! compatible mode sends beside it, which no signature covers.
//!
//! After a valid `msg_signature`, every failure (base64, block length, padding, length field,
//! appid or corpid, and the XML of the decrypted message, which the caller reads) is one and the
//! same [`EnvelopeError::Undecryptable`]: one status, one body, one log reason, nothing taken
//! from the decrypted bytes. Whoever holds the Token but not the EncodingAESKey can sign altered
//! ciphertexts; distinct answers would let them read a captured message (a padding oracle).
//!
//! An Official Account in compatible or safe mode takes only encrypted callbacks: the event is
//! read from the `Encrypt` value that `msg_signature` covers, never from the plain fields that
//! compatible mode sends beside it, which no signature covers.
//!
//! The [`Seal`] of an opened request answers in kind: a passive reply to an encrypted request is
//! encrypted with the key that opened it and signed (compatible mode too); a reply to a plain
//! request stays plain, as WeChat reads it there.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::crypto::{self, MsgCrypto};
use super::query::{required, CallbackQuery};
use super::xml::{self, Document, XmlError};
use crate::domain::autoreply::Reply;
use crate::domain::Platform;
use crate::pb;
use crate::wechat::account::{Account, CallbackMode};

/// Why a request did not open. Each case before the signature names what a sender got wrong;
/// after it, [`EnvelopeError::Undecryptable`] names nothing. `crate::error` maps them to HTTP
/// statuses (forged or stale → 401, the rest → 400) and metrics outcomes.
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
    /// The encrypted envelope's XML, before the signature (the message inside is read by the
    /// caller).
    #[error("cannot parse XML: {0}")]
    Xml(#[from] XmlError),
    /// Anything wrong after a valid `msg_signature`: the ciphertext, its padding, length field or
    /// appid/corpid, or the decrypted message. One fixed case on purpose (no oracle, issue 18):
    /// it carries nothing, so no answer or log line can say which check failed.
    #[error("the encrypted message does not open for this account")]
    Undecryptable,
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

impl Opened<'_> {
    /// Whether the request was encrypted: a failure to read its message is then
    /// [`EnvelopeError::Undecryptable`] too.
    pub fn encrypted(&self) -> bool {
        self.seal.key.is_some()
    }
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
            let (echo, key) = verify_and_decrypt(account, signature, timestamp, nonce, &echostr)?;
            // The answer is the plaintext itself: answering any ciphertext that decrypts would
            // let whoever holds the Token read a captured callback (an XML message) by sending
            // its `Encrypt` as an echostr. WeCom's echostr is a random number.
            if !is_echostr(&echo) {
                return Err(EnvelopeError::Undecryptable);
            }
            (echo, key)
        }
    };
    seal.key = Some(key);
    Ok(Opened {
        content: Cow::Owned(content),
        seal,
    })
}

/// Whether a decrypted WeCom echostr is one WeCom could have sent (a random number, e.g.
/// `1616140317555161061` in Tencent's sample): 1 to 128 ASCII letters, digits, `-` or `_`.
/// Never a message: those are XML (or JSON), and start with `<` (or `{`).
fn is_echostr(plain: &[u8]) -> bool {
    (1..=128).contains(&plain.len())
        && plain
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
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
                // Compatible mode too: WeChat encrypts every callback there as well (the plain
                // fields beside `Encrypt` are not signed), so a plain one is not WeChat's.
                (false, CallbackMode::Safe) => {
                    return Err(EnvelopeError::ModeRefused(
                        "plain callback, but this account is configured for safe mode (encrypt_type=aes)",
                    ))
                }
                (false, CallbackMode::Compatible) => {
                    return Err(EnvelopeError::ModeRefused(
                        "plain callback, but this account is configured for compatible mode, which is read from Encrypt only (encrypt_type=aes)",
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
/// with the same key. Every key is tried whichever check failed with the one before, and every
/// failure is the one [`EnvelopeError::Undecryptable`].
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
    for key in &account.keys {
        if let Ok(plain) = key.decrypt(encrypt, &account.receiver_id) {
            return Ok((plain, key));
        }
    }
    Err(EnvelopeError::Undecryptable)
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
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

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
        assert!(matches!(e, EnvelopeError::Undecryptable), "{e:?}");
    }

    #[test]
    fn plain_requests_are_signed_over_token_timestamp_and_nonce() {
        let mp = account(Platform::Mp, CallbackMode::Plain, &[]);
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
        let mp = account(Platform::Mp, CallbackMode::Plain, &[]);
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

    /// A frame `prefix ‖ be32(declared) ‖ msg ‖ receiver ‖ pad × pad_byte`.
    fn frame(declared: u32, msg: &[u8], receiver: &str, pad: usize, pad_byte: u8) -> Vec<u8> {
        let mut plain = b"0123456789abcdef".to_vec();
        plain.extend_from_slice(&declared.to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(receiver.as_bytes());
        plain.extend(std::iter::repeat_n(pad_byte, pad));
        plain
    }

    /// `Encrypt` values that fail at each stage after the signature, for `receiver` under
    /// `key`, with what each is. The message (`secret`) is valid XML, so that only the one thing
    /// each case changes is wrong.
    fn failing_at_each_stage(key: &MsgCrypto, receiver: &str) -> Vec<(&'static str, String)> {
        let msg = b"<xml><Content>secret 4242</Content></xml>";
        let len = 20 + msg.len() + receiver.len();
        let pad = 32 - len % 32;
        let good = frame(msg.len() as u32, msg, receiver, pad, pad as u8);
        assert!(key
            .decrypt(&key.encrypt_blocks_raw(&good), receiver)
            .is_ok());
        let mut bad_pad = good.clone();
        *bad_pad.last_mut().unwrap() = 0;
        let sealed = STANDARD.decode(key.encrypt(msg, receiver)).unwrap();
        vec![
            ("base64", "!!not-base64!!".to_owned()),
            ("block length", STANDARD.encode(&sealed[..sealed.len() - 5])),
            ("padding", key.encrypt_blocks_raw(&bad_pad)),
            (
                "length field",
                key.encrypt_blocks_raw(&frame(4242, msg, receiver, pad, pad as u8)),
            ),
            ("receiver id", key.encrypt(msg, "wx0000000000000000")),
            ("not XML", key.encrypt(b"secret 4242, no XML", receiver)),
        ]
    }

    #[test]
    fn every_failure_after_a_valid_signature_is_one_undecryptable_that_names_nothing() {
        let mp = account(Platform::Mp, CallbackMode::Safe, &[MP_KEY]);
        let work = wecom();
        let ts = now();
        for account in [&mp, &work] {
            let key = &account.keys[0];
            for (what, encrypt) in failing_at_each_stage(key, &account.receiver_id) {
                let sealed_sig = crypto::msg_signature(account.token.expose(), &ts, "n", &encrypt);
                let mut pairs = vec![
                    ("msg_signature", sealed_sig.as_str()),
                    ("timestamp", &ts),
                    ("nonce", "n"),
                ];
                if account.platform == Platform::Mp {
                    pairs.push(("encrypt_type", "aes"));
                }
                let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
                let q = query(&pairs);
                let got = open_query(account, &q, Entry::Callback(body.as_bytes()), SKEW);
                let e = match (what, got) {
                    // The envelope opens; it is the caller's reading of the XML that fails,
                    // and `Opened::encrypted` tells it to answer the same.
                    ("not XML", Ok(content)) => {
                        assert!(Document::parse(&content).is_err());
                        continue;
                    }
                    (_, Ok(_)) => panic!("{what}: opened"),
                    (_, Err(e)) => e,
                };
                assert!(matches!(e, EnvelopeError::Undecryptable), "{what}: {e:?}");
                for shown in [e.to_string(), format!("{e:?}")] {
                    assert!(!shown.contains("4242") && !shown.contains("wx"), "{shown}");
                }
                if account.platform == Platform::Work {
                    pairs.push(("echostr", &encrypt));
                    let q = query(&pairs);
                    let e = open_query(account, &q, Entry::Verification, SKEW);
                    if what != "not XML" {
                        assert!(matches!(e, Err(EnvelopeError::Undecryptable)), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_wecom_url_verification_answers_only_an_echostr_never_a_captured_message() {
        let work = wecom();
        let ts = now();
        // A captured callback's `Encrypt` sent back as an echostr, correctly signed (whoever
        // holds the Token can): it decrypts, but it is a message, and is not answered.
        for plain in [WECOM_POST_PLAIN, "", "12 34", "{\"msgid\":\"1\"}"] {
            let encrypt = work.keys[0].encrypt(plain.as_bytes(), WECOM_CORPID);
            let sig = crypto::msg_signature(WECOM_TOKEN, &ts, "n", &encrypt);
            let q = query(&[
                ("msg_signature", &sig),
                ("timestamp", &ts),
                ("nonce", "n"),
                ("echostr", &encrypt),
            ]);
            let e = open_query(&work, &q, Entry::Verification, SKEW).unwrap_err();
            assert!(
                matches!(e, EnvelopeError::Undecryptable),
                "{plain:?}: {e:?}"
            );
        }
        assert!(is_echostr(b"1616140317555161061"));
        assert!(is_echostr(b"echo-2a_f"));
        assert!(!is_echostr(&[b'7'; 129]));
    }

    #[test]
    fn during_a_rotation_both_keys_are_tried_and_a_failure_is_still_undecryptable() {
        let rotated = account(Platform::Mp, CallbackMode::Safe, &[OTHER_KEY, MP_KEY]);
        let ts = now();
        let old = MsgCrypto::new(MP_KEY).unwrap();
        let good = old.encrypt(b"<xml/>", MP_APPID);
        let mut cases = failing_at_each_stage(&old, MP_APPID);
        cases.retain(|(what, _)| *what != "not XML");
        for (what, encrypt) in [("previous key", good)].into_iter().chain(cases) {
            let sig = crypto::msg_signature(MP_TOKEN, &ts, "n", &encrypt);
            let q = query(&[
                ("encrypt_type", "aes"),
                ("msg_signature", &sig),
                ("timestamp", &ts),
                ("nonce", "n"),
            ]);
            let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
            let got = open_query(&rotated, &q, Entry::Callback(body.as_bytes()), SKEW);
            match what {
                "previous key" => assert_eq!(got.unwrap(), b"<xml/>"),
                _ => assert!(matches!(got, Err(EnvelopeError::Undecryptable)), "{what}"),
            }
        }
    }

    #[test]
    fn compatible_mode_reads_the_event_only_from_encrypt_and_refuses_plain_callbacks() {
        let compat = account(Platform::Mp, CallbackMode::Compatible, &[MP_KEY]);
        let ts = now();
        let inner = "<xml><FromUserName>oReal</FromUserName><Content>signed</Content></xml>";
        let sealed = seal_message(&compat, &compat.keys[0], &ts, "n", inner.as_bytes());
        // As WeChat sends it: the plain fields beside `Encrypt`; here they say something else.
        let body = format!(
            "<xml><FromUserName>oForged</FromUserName><Content>forged</Content><Encrypt><![CDATA[{}]]></Encrypt></xml>",
            sealed.encrypt
        );
        let q = query(&[
            ("encrypt_type", "aes"),
            ("msg_signature", &sealed.msg_signature),
            ("timestamp", &ts),
            ("nonce", "n"),
        ]);
        let opened = open_query(&compat, &q, Entry::Callback(body.as_bytes()), SKEW).unwrap();
        assert_eq!(opened, inner.as_bytes());

        // A correctly signed plain callback (a `signature` any callback URL carries): refused.
        let sig = crypto::signature(MP_TOKEN, &ts, "n");
        let q = query(&[("signature", &sig), ("timestamp", &ts), ("nonce", "n")]);
        let e = open_query(&compat, &q, Entry::Callback(b"<xml/>"), SKEW).unwrap_err();
        assert!(matches!(e, EnvelopeError::ModeRefused(_)), "{e:?}");
        // Encrypted, but the body has no `Encrypt`: refused before the signature.
        let q = query(&[
            ("encrypt_type", "aes"),
            ("msg_signature", &sealed.msg_signature),
            ("timestamp", &ts),
            ("nonce", "n"),
        ]);
        let e = open_query(&compat, &q, Entry::Callback(inner.as_bytes()), SKEW).unwrap_err();
        assert!(
            matches!(e, EnvelopeError::Xml(XmlError::Missing("Encrypt"))),
            "{e:?}"
        );
        // Its URL verification stays signed and plain, as WeChat sends it in every mode.
        let q = query(&[
            ("signature", &sig),
            ("timestamp", &ts),
            ("nonce", "n"),
            ("echostr", "e1"),
        ]);
        assert_eq!(
            open_query(&compat, &q, Entry::Verification, SKEW).unwrap(),
            b"e1"
        );
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
