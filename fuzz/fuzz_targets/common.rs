//! What the fuzz targets share: one account per platform (Tencent's published sample values),
//! the callback pipeline as `src/http/callbacks.rs` runs it (envelope → verify → decrypt →
//! parse → normalize), and the checks every produced event must pass.

#![allow(dead_code)] // each target uses a part

use std::sync::LazyLock;
use std::time::SystemTime;

use prost::Message as _;
use wechat_gateway::domain::{AccountId, Platform};
use wechat_gateway::pb;
use wechat_gateway::wechat::crypto::{self, CryptoError, MsgCrypto};
use wechat_gateway::wechat::normalize::normalize;
use wechat_gateway::wechat::xml::{self, Document, XmlError};

/// Official Account sample (WXBizMsgCrypt): token, EncodingAESKey, appid.
pub const MP: (&str, &str, &str) = (
    "pamtest",
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    "wxb11529c136998cb6",
);
/// WeCom sample (WXBizMsgCrypt for 企业微信): token, EncodingAESKey, corpid.
pub const WORK: (&str, &str, &str) = (
    "QDG6eK",
    "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "wx5823bf96d3bd56c7",
);

/// The two accounts, built once.
pub static ACCOUNTS: LazyLock<[Account; 2]> =
    LazyLock::new(|| [Account::new(Platform::Mp), Account::new(Platform::Work)]);

pub struct Account {
    pub id: AccountId,
    pub platform: Platform,
    pub token: &'static str,
    pub key: &'static str,
    pub receiver_id: &'static str,
    pub crypto: MsgCrypto,
}

impl Account {
    pub fn new(platform: Platform) -> Self {
        let (token, key, receiver_id) = match platform {
            Platform::Mp => MP,
            Platform::Work => WORK,
        };
        Self {
            id: AccountId::parse("fuzz").unwrap(),
            platform,
            token,
            key,
            receiver_id,
            crypto: MsgCrypto::new(key).unwrap(),
        }
    }
}

/// Why the pipeline refused a callback.
#[derive(Debug)]
pub enum Refused {
    Xml(XmlError),
    Signature,
    Decrypt(CryptoError),
}

impl From<XmlError> for Refused {
    fn from(e: XmlError) -> Self {
        Self::Xml(e)
    }
}

impl From<CryptoError> for Refused {
    fn from(e: CryptoError) -> Self {
        Self::Decrypt(e)
    }
}

/// An encrypted callback, step by step as the HTTP handler takes it (minus the clock check and
/// the store): parse the envelope, check `msg_signature` over its `Encrypt`, decrypt for the
/// account's appid/corpid, parse the message, normalize it.
pub fn open_callback(
    account: &Account,
    body: &[u8],
    timestamp: &str,
    nonce: &str,
    msg_signature: &str,
) -> Result<pb::Event, Refused> {
    let envelope = Document::parse(body)?;
    let encrypt = envelope
        .get("Encrypt")
        .ok_or(XmlError::Missing("Encrypt"))?;
    let expected = crypto::msg_signature(account.token, timestamp, nonce, encrypt);
    if !crypto::signatures_match(&expected, msg_signature) {
        return Err(Refused::Signature);
    }
    let plain = account.crypto.decrypt(encrypt, account.receiver_id)?;
    Ok(parse_and_normalize(account, &plain)?)
}

/// Parses a decrypted message and normalizes it; checks the event when there is one.
pub fn parse_and_normalize(account: &Account, xml: &[u8]) -> Result<pb::Event, XmlError> {
    let doc = Document::parse(xml)?;
    let raw = std::str::from_utf8(xml).expect("Document::parse accepted invalid UTF-8");
    let event = normalize(
        &account.id,
        account.platform,
        &doc,
        raw,
        SystemTime::UNIX_EPOCH,
    )?;
    check_event(&event);
    Ok(event)
}

/// An event must have a 40-hex-digit id, encode and decode back to itself (what the store and
/// the gRPC sink do) and serialize as a JSON line (what the stdout sink does).
pub fn check_event(event: &pb::Event) {
    assert_eq!(event.id.len(), 40, "{event:?}");
    assert!(event.id.bytes().all(|b| b.is_ascii_hexdigit()), "{event:?}");
    let bytes = event.encode_to_vec();
    let back = pb::Event::decode(bytes.as_slice()).expect("an encoded event decodes");
    assert_eq!(&back, event);
    serde_json::to_string(event).expect("an event serializes as JSON");
}

/// XML 1.0's Char production, which the reply writers keep (and drop everything else).
pub fn is_xml_char(c: char) -> bool {
    !matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// A passive text reply carrying `content` parses back to it (less what XML cannot carry).
pub fn check_text_reply(content: &str) {
    let reply = xml::text_reply("oUser", "gh_account", 1_700_000_000, content);
    let doc = Document::parse(reply.as_bytes()).expect("a text reply parses");
    let expected: String = content.chars().filter(|&c| is_xml_char(c)).collect();
    assert_eq!(doc.child("Content"), Some(expected.as_str()));
}
