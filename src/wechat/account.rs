//! The runtime shape of one configured account: what the callback envelope, the WeChat API
//! client and the use cases read (its id and platform, secrets, callback mode and AES keys).
//! `crate::config` parses and checks the file and builds these once at start-up; nothing here
//! knows the file's shape.

use crate::domain::{AccountId, Platform, Secret};
use crate::wechat::crypto::MsgCrypto;

/// Which callback encodings an Official Account accepts (WeChat's 消息加解密方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMode {
    /// 明文模式: unencrypted bodies only.
    Plain,
    /// 兼容模式: both; an encrypted body is checked with `msg_signature`.
    Compatible,
    /// 安全模式: encrypted bodies only. A plain-mode `signature` covers only token, timestamp and
    /// nonce, not the body, so accepting plain bodies here would let a captured signature carry
    /// a forged body.
    Safe,
}

/// One configured account, ready for the callback path (AES keys derived once, here).
#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub platform: Platform,
    /// The id that encrypted messages must end with: the appid (mp) or the corpid (work).
    pub receiver_id: String,
    /// The app secret (mp) or the application secret (work), for the WeChat API.
    pub secret: Secret,
    pub token: Secret,
    pub mode: CallbackMode,
    /// Current key first, then the previous one during a key rotation.
    pub keys: Vec<MsgCrypto>,
    /// The EncodingAESKey itself, kept for `simulate`, which encrypts like WeChat does.
    pub encoding_aes_key: Option<Secret>,
    /// WeCom application id; 0 on Official Accounts.
    pub agent_id: i64,
}
