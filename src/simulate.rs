//! `wechat-gateway simulate`: plays the WeChat platform against a running gateway. It builds a
//! sample callback, signs it with the account's Token and, where the account encrypts, seals it
//! with its EncodingAESKey as the gateway seals a reply ([`seal_message`]), then POSTs it (or
//! runs URL verification) and prints the answer.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::config::Config;
use crate::domain::Platform;
use crate::wechat::account::{Account, CallbackMode};
use crate::wechat::crypto;
use crate::wechat::envelope::{seal_message, Sealed};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Base URL of the gateway (default: http://<http.listen> from the configuration).
    #[arg(long)]
    pub url: Option<String>,
    /// Account id (default: the first account in the configuration).
    #[arg(long)]
    pub account: Option<String>,
    /// What to send.
    #[arg(long, value_enum, default_value_t = SampleKind::Text)]
    pub kind: SampleKind,
    /// Sender: an openid (Official Account) or a member UserID (WeCom).
    #[arg(long, default_value = "oSimulatedFollower000000000")]
    pub user: String,
    /// Text of a `text` message.
    #[arg(long, default_value = "hello from wechat-gateway simulate")]
    pub content: String,
    /// Scene of a `subscribe-qr` or `scan` event, or State of an `add-external-contact`.
    #[arg(long, default_value = "simulated-campaign")]
    pub scene: String,
    /// EventKey of a `click` event.
    #[arg(long, default_value = "SIMULATED_KEY")]
    pub key: String,
    /// MsgId of a message (default: derived from the current time, so each run is new).
    #[arg(long)]
    pub msg_id: Option<u64>,
    /// Encoding to use on an Official Account (default: the account's mode).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Send URL verification (GET with echostr) instead of a callback.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SampleKind {
    Text,
    Subscribe,
    SubscribeQr,
    Scan,
    Click,
    Unsubscribe,
    EnterAgent,
    AddExternalContact,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Plain,
    Compatible,
    Safe,
}

/// Builds the callback XML WeChat would send for `kind`.
pub fn sample_xml(account: &Account, args: &SimulateArgs, now: u64) -> anyhow::Result<String> {
    let to = match account.platform {
        Platform::Mp => "gh_simulated0000",
        Platform::Work => account.receiver_id.as_str(),
    };
    let msg_id = args.msg_id.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let head = format!(
        "<ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime>",
        cdata(to),
        cdata(&args.user)
    );
    let agent = match account.platform {
        Platform::Work => format!("<AgentID>{}</AgentID>", account.agent_id),
        Platform::Mp => String::new(),
    };
    let event = |name: &str, extra: String| {
        format!(
            "<xml>{head}<MsgType><![CDATA[event]]></MsgType><Event>{}</Event>{extra}{agent}</xml>",
            cdata(name)
        )
    };
    let work_only = |kind: &str| -> anyhow::Result<()> {
        if account.platform != Platform::Work {
            bail!(
                "--kind {kind} is a WeCom event; account {} is an Official Account",
                account.id
            )
        }
        Ok(())
    };
    Ok(match args.kind {
        SampleKind::Text => format!(
            "<xml>{head}<MsgType><![CDATA[text]]></MsgType><Content>{}</Content><MsgId>{msg_id}</MsgId>{agent}</xml>",
            cdata(&args.content)
        ),
        SampleKind::Subscribe => event("subscribe", String::new()),
        SampleKind::SubscribeQr => event(
            "subscribe",
            format!(
                "<EventKey>{}</EventKey><Ticket><![CDATA[simulated-ticket]]></Ticket>",
                cdata(&format!("qrscene_{}", args.scene))
            ),
        ),
        SampleKind::Scan => event(
            "SCAN",
            format!(
                "<EventKey>{}</EventKey><Ticket><![CDATA[simulated-ticket]]></Ticket>",
                cdata(&args.scene)
            ),
        ),
        SampleKind::Click => event(
            if account.platform == Platform::Work { "click" } else { "CLICK" },
            format!("<EventKey>{}</EventKey>", cdata(&args.key)),
        ),
        SampleKind::Unsubscribe => event("unsubscribe", String::new()),
        SampleKind::EnterAgent => {
            work_only("enter-agent")?;
            event("enter_agent", "<EventKey><![CDATA[]]></EventKey>".into())
        }
        SampleKind::AddExternalContact => {
            work_only("add-external-contact")?;
            event(
                "change_external_contact",
                format!(
                    "<ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID>{}</UserID><ExternalUserID><![CDATA[wmSimulatedExternal]]></ExternalUserID><State>{}</State><WelcomeCode><![CDATA[simulated-welcome-code]]></WelcomeCode>",
                    cdata(&args.user),
                    cdata(&args.scene)
                ),
            )
        }
    })
}

/// Wraps text in CDATA, splitting any `]]>` so the section cannot be closed early.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub async fn run(cfg: &Config, args: &SimulateArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let account = match &args.account {
        Some(id) => cfg
            .accounts
            .iter()
            .find(|a| a.id.as_str() == id)
            .with_context(|| format!("no account {id:?} in the configuration"))?,
        None => cfg.accounts.first().context("no accounts configured")?,
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.http.listen));
    let url = format!(
        "{}/wechat/{}/{}",
        base.trim_end_matches('/'),
        account.platform.as_str(),
        account.id
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let timestamp = now.to_string();
    let nonce = nonce();
    let token = account.token.expose();
    let client = reqwest::Client::new();

    if args.verify {
        let echostr = format!("echo-{}", nonce);
        let request = match account.platform {
            Platform::Mp => client.get(&url).query(&[
                ("signature", crypto::signature(token, &timestamp, &nonce)),
                ("timestamp", timestamp.clone()),
                ("nonce", nonce.clone()),
                ("echostr", echostr),
            ]),
            Platform::Work => {
                let key = account
                    .keys
                    .first()
                    .context("the account has no encoding_aes_key")?;
                let sealed = seal_message(account, key, &timestamp, &nonce, echostr.as_bytes());
                client.get(&url).query(&[
                    ("msg_signature", sealed.msg_signature),
                    ("timestamp", timestamp.clone()),
                    ("nonce", nonce.clone()),
                    ("echostr", sealed.encrypt),
                ])
            }
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!("{status} {text}");
        if !status.is_success() {
            bail!("the gateway answered {status}");
        }
        return Ok(());
    }
    let body = sample_xml(account, args, now)?;
    let mode = match (account.platform, args.mode) {
        (Platform::Work, _) => CallbackMode::Safe,
        (Platform::Mp, Some(ModeArg::Plain)) => CallbackMode::Plain,
        (Platform::Mp, Some(ModeArg::Compatible)) => CallbackMode::Compatible,
        (Platform::Mp, Some(ModeArg::Safe)) => CallbackMode::Safe,
        (Platform::Mp, None) => account.mode,
    };
    let (status, text) = post_callback(&client, &base, account, mode, &body, &args.user).await?;
    println!("{status} {text}");
    if !status.is_success() {
        bail!("the gateway answered {status}");
    }
    Ok(())
}

/// POSTs `body` (a callback's XML) to the account's callback URL under `base` as WeChat would:
/// signed with the account's Token, and in compatible and safe mode sealed with its
/// EncodingAESKey. `open_id` is the `openid` query parameter an Official Account's callback
/// carries. Also the sandbox's way of sending its MASSSENDJOBFINISH events
/// ([`crate::sandbox`]). Returns the gateway's status and body.
pub async fn post_callback(
    client: &reqwest::Client,
    base: &str,
    account: &Account,
    mode: CallbackMode,
    body: &str,
    open_id: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let url = format!(
        "{}/wechat/{}/{}",
        base.trim_end_matches('/'),
        account.platform.as_str(),
        account.id
    );
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let nonce = nonce();
    let token = account.token.expose();
    let mode = match account.platform {
        Platform::Work => CallbackMode::Safe,
        Platform::Mp => mode,
    };
    let signature = crypto::signature(token, &timestamp, &nonce);
    let request = match mode {
        CallbackMode::Plain => client
            .post(&url)
            .query(&[
                ("signature", signature.as_str()),
                ("timestamp", &timestamp),
                ("nonce", &nonce),
                ("openid", open_id),
            ])
            .body(body.to_owned()),
        CallbackMode::Compatible | CallbackMode::Safe => {
            let key = account
                .keys
                .first()
                .context("the account has no encoding_aes_key")?;
            let Sealed {
                encrypt: enc,
                msg_signature,
            } = seal_message(account, key, &timestamp, &nonce, body.as_bytes());
            let envelope = match account.platform {
                Platform::Mp => format!(
                    "<xml><ToUserName><![CDATA[gh_simulated0000]]></ToUserName><Encrypt>{}</Encrypt></xml>",
                    cdata(&enc)
                ),
                Platform::Work => format!(
                    "<xml><ToUserName>{}</ToUserName><AgentID>{}</AgentID><Encrypt>{}</Encrypt></xml>",
                    cdata(&account.receiver_id),
                    account.agent_id,
                    cdata(&enc)
                ),
            };
            // Compatible mode also carries the plain fields; WeChat sends both.
            let envelope = if matches!(mode, CallbackMode::Compatible) {
                body.replacen(
                    "<xml>",
                    &format!("<xml><Encrypt>{}</Encrypt>", cdata(&enc)),
                    1,
                )
            } else {
                envelope
            };
            let mut q = vec![
                ("timestamp", timestamp.clone()),
                ("nonce", nonce.clone()),
                ("msg_signature", msg_signature),
            ];
            if account.platform == Platform::Mp {
                q.push(("signature", signature));
                q.push(("encrypt_type", "aes".into()));
                q.push(("openid", open_id.to_owned()));
            }
            client.post(&url).query(&q).body(envelope)
        }
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml;

    #[test]
    fn cdata_sections_cannot_be_closed_early() {
        let doc = format!("<xml><Content>{}</Content></xml>", cdata("a]]>b<c>"));
        let parsed = xml::Document::parse(doc.as_bytes()).unwrap();
        assert_eq!(parsed.get("Content"), Some("a]]>b<c>"));
    }
}
