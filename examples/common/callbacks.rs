//! Shared by the examples `loadgen` and `callback_cost`: pre-generated callbacks, each a complete
//! HTTP/1.1 request as WeChat sends it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::ValueEnum;
use wechat_gateway::domain::Platform;
use wechat_gateway::wechat::account::{Account, CallbackMode};
use wechat_gateway::wechat::crypto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Encrypted (安全模式), with `msg_signature`.
    Safe,
    /// Unencrypted (明文模式), with `signature`.
    Plain,
    /// Safe mode, each callback sent several times (see `loadgen`).
    Retries,
    /// Safe mode, every callback a text that contains `报价`, for a gateway with an auto-reply
    /// rule on that keyword: every answer is an encrypted passive reply.
    Reply,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One complete HTTP request per callback, ready to write.
pub fn generate(
    accounts: &[&Account],
    mode: Mode,
    host: &str,
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let ts = unix_now().to_string();
    // Distinct across runs too (the store of a reused gateway still remembers earlier MsgIds).
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
        .wrapping_mul(1000);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let account = accounts[i % accounts.len()];
        let (to, agent) = match account.platform {
            Platform::Mp => ("gh_0123456789ab".to_owned(), String::new()),
            Platform::Work => (
                account.receiver_id.clone(),
                format!("<AgentID>{}</AgentID>", account.agent_id),
            ),
        };
        let open_id = format!("oLoadgenFollower{:011}", i % 1000);
        let xml = format!(
            "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{open_id}]]></FromUserName>\
             <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[我想了解一下你们的产品报价 {i}]]></Content><MsgId>{}</MsgId>{agent}</xml>",
            salt.wrapping_add(i as u64)
        );
        let nonce = format!(
            "{:010}",
            (i as u64).wrapping_mul(2_654_435_761) % 10_000_000_000
        );
        let token = account.token.expose();
        let signature = crypto::signature(token, &ts, &nonce);
        let (query, body) = match mode {
            Mode::Plain => {
                // Compatible mode is read from `Encrypt` only, like safe mode.
                if account.mode != CallbackMode::Plain || account.platform == Platform::Work {
                    bail!(
                        "--mode plain needs an Official Account in plain mode; {} is not",
                        account.id
                    );
                }
                (
                    format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid={open_id}"),
                    xml,
                )
            }
            Mode::Safe | Mode::Retries | Mode::Reply => {
                let Some(key) = account.keys.first() else {
                    bail!(
                        "--mode {mode:?} needs an encoding_aes_key on account {}",
                        account.id
                    );
                };
                let encrypted = key.encrypt(xml.as_bytes(), &account.receiver_id);
                let msg_signature = crypto::msg_signature(token, &ts, &nonce, &encrypted);
                (
                    format!(
                        "signature={signature}&timestamp={ts}&nonce={nonce}&openid={open_id}\
                         &encrypt_type=aes&msg_signature={msg_signature}"
                    ),
                    format!(
                        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt>{agent}</xml>"
                    ),
                )
            }
        };
        let path = format!("/wechat/{}/{}", account.platform.as_str(), account.id);
        let mut req = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/4.0\r\nAccept: */*\r\n\
             Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        out.push(req);
    }
    Ok(out)
}
