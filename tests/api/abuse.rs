//! Abuse: every kind of bad request gets the contract's status and a message that says what was
//! wrong, and none of them produces an event. The refusals already proven in
//! `callbacks.rs` (forged and replayed Official Account callbacks, a wrong appid, a wrong key,
//! bad base64, an oversize plain body, a DOCTYPE bomb, a plain body to a safe-mode account, an
//! unknown account) and in `admin.rs` (missing and wrong admin tokens) are not repeated here.
//!
//! "No event" is checked without sleeping: after the bad requests, one good callback (a
//! sentinel) goes to every account that was attacked. Delivery is in order per account, so once
//! every sentinel has reached the CRM, anything a bad request had stored would have too.
//!
//! The last test runs the real binary with real-looking secrets at `RUST_LOG=debug` and reads
//! everything it prints.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

use crate::support::app::{
    app_with_crm, now, unique_msg_id, TestApp, ADMIN_TOKEN, MP_APP_ID, MP_KEY, WORK_CORP_ID,
    WORK_KEY, WORK_TOKEN,
};
use crate::support::crm::FakeCrm;
use crate::support::redis::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// A text message that would be accepted if it arrived correctly.
fn text_xml(from: &str) -> String {
    crate::support::app::text_xml(from, "abuse", unique_msg_id())
}

/// The one answer to every failure after a valid `msg_signature` (no decryption oracle).
const UNDECRYPTABLE: &str = "the encrypted message does not open for this account";

/// Asserts the status and that the plain-text answer names the reason.
async fn assert_refused(resp: reqwest::Response, status: u16, reason: &str, what: &str) {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: answered {got} {body:?}");
    assert!(
        body.contains(reason),
        "{what}: the answer {body:?} does not say {reason:?}"
    );
}

/// Sends one good callback to each account and waits for all of them at the CRM; then checks
/// that they are the only events it ever received.
async fn assert_only_sentinels_arrive(app: &TestApp, crm: &FakeCrm, accounts: &[&str]) {
    for account in accounts {
        let xml = text_xml(&format!("oSentinel-{account}"));
        let resp = if *account == "acme-plain" {
            app.post_plain(account, &xml).await
        } else {
            app.post_safe(account, &xml).await
        };
        assert_eq!(resp.status(), 200, "sentinel for {account}");
    }
    let events = crm
        .wait_for(
            |evs| {
                accounts
                    .iter()
                    .all(|a| evs.iter().any(|e| e.account_id == *a))
            },
            WAIT,
        )
        .await;
    let senders: Vec<_> = events
        .iter()
        .map(|e| {
            if e.open_id.is_empty() {
                e.user_id.clone()
            } else {
                e.open_id.clone()
            }
        })
        .collect();
    assert_eq!(
        events.len(),
        accounts.len(),
        "a bad request produced an event: {senders:?}"
    );
    assert!(
        senders.iter().all(|s| s.starts_with("oSentinel-")),
        "{senders:?}"
    );
}

/// The raw AES key of an EncodingAESKey (43 characters + "=", trailing bits allowed).
fn raw_key(encoding_aes_key: &str) -> [u8; 32] {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(format!("{encoding_aes_key}="))
        .unwrap()
        .try_into()
        .unwrap()
}

/// AES-256-CBC (iv = key[..16]) of whole blocks, with no framing or padding added: the way to
/// craft an envelope that is correctly encrypted but malformed inside.
fn seal_raw(encoding_aes_key: &str, plain: &[u8]) -> String {
    assert_eq!(plain.len() % 16, 0, "test bug: whole blocks only");
    let key = raw_key(encoding_aes_key);
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let mut buf = plain.to_vec();
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into()).encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

/// `random16 ‖ be32(declared) ‖ msg ‖ receiver`, then `pad` bytes of `pad_byte`.
fn frame(declared: u32, msg: &[u8], receiver: &str, pad: usize, pad_byte: u8) -> Vec<u8> {
    let mut plain = b"0123456789abcdef".to_vec();
    plain.extend_from_slice(&declared.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(receiver.as_bytes());
    plain.extend(std::iter::repeat_n(pad_byte, pad));
    plain
}

/// WXBizMsgCrypt's pad length (to 32-byte blocks) for `len` bytes.
fn pad_for(len: usize) -> usize {
    32 - len % 32
}

#[tokio::test]
async fn forged_and_replayed_wecom_callbacks_and_url_verifications_are_refused() {
    let (app, crm, _dir) = app_with_crm().await;
    let xml = text_xml("zhangsan");
    let encrypt = app.encrypt_for("acme-work", &xml, None);
    let envelope = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");

    // A WeCom callback whose msg_signature is forged, or signed with another token.
    let ts = now().to_string();
    assert_refused(
        app.post_envelope("acme-work", &envelope, &"0".repeat(40), &ts)
            .await,
        401,
        "signature does not verify",
        "forged WeCom msg_signature",
    )
    .await;
    let other_token = crypto::msg_signature("not-the-token", &ts, "nonce2", &encrypt);
    assert_refused(
        app.post_envelope("acme-work", &envelope, &other_token, &ts)
            .await,
        401,
        "signature does not verify",
        "WeCom msg_signature made with another token",
    )
    .await;
    // The signature covers the Encrypt value: a valid signature of another message fails.
    let other = app.encrypt_for("acme-work", &text_xml("lisi"), None);
    let sig_of_other = crypto::msg_signature(WORK_TOKEN, &ts, "nonce2", &other);
    assert_refused(
        app.post_envelope("acme-work", &envelope, &sig_of_other, &ts)
            .await,
        401,
        "signature does not verify",
        "WeCom msg_signature of another Encrypt",
    )
    .await;

    // A correctly signed WeCom callback replayed an hour later, or dated in the future.
    for (skew, what) in [(-3600i64, "an hour ago"), (3600, "an hour ahead")] {
        let ts = now().saturating_add_signed(skew);
        assert_refused(
            app.post_encrypted("acme-work", &encrypt, ts).await,
            401,
            "away from the gateway's clock",
            &format!("WeCom callback dated {what}"),
        )
        .await;
    }

    // URL verifications replayed: correctly signed, but stale.
    let stale = (now() - 3600).to_string();
    let sig = crypto::signature("pamtest", &stale, "n1");
    let resp = app
        .verify_url("acme-mp", &sig, &stale, "n1", "replayed")
        .await;
    assert_refused(resp, 401, "away from the gateway's clock", "stale mp GET").await;
    let echostr = app.encrypt_for("acme-work", "1616140317555161061", None);
    let sig = crypto::msg_signature(WORK_TOKEN, &stale, "n2", &echostr);
    let resp = app
        .verify_url("acme-work", &sig, &stale, "n2", &echostr)
        .await;
    assert_refused(
        resp,
        401,
        "away from the gateway's clock",
        "stale WeCom GET",
    )
    .await;

    // A WeCom echostr correctly signed, but not something the account's key encrypted: the
    // gateway must not answer it (answering would let anyone pass verification).
    let ts = now().to_string();
    let forged_echo = STANDARD.encode([0x5au8; 64]);
    let sig = crypto::msg_signature(WORK_TOKEN, &ts, "n3", &forged_echo);
    let resp = app
        .verify_url("acme-work", &sig, &ts, "n3", &forged_echo)
        .await;
    assert_refused(resp, 400, UNDECRYPTABLE, "undecryptable WeCom echostr").await;
    // The same echostr with the signature of another echostr.
    let sig = crypto::msg_signature(WORK_TOKEN, &ts, "n3", &forged_echo);
    let resp = app.verify_url("acme-work", &sig, &ts, "n3", &echostr).await;
    assert_refused(
        resp,
        401,
        "signature does not verify",
        "echostr of another signature",
    )
    .await;

    assert_only_sentinels_arrive(&app, &crm, &["acme-work"]).await;
    app.stop().await;
}

#[tokio::test]
async fn envelopes_that_do_not_decrypt_for_the_account_are_refused_with_one_answer_that_names_nothing(
) {
    let (app, crm, _dir) = app_with_crm().await;
    // Trailing newlines (ignored after the root) make the pad at least 2 bytes, so that changing
    // one pad byte below leaves the last one intact.
    let mut msg = text_xml("oCrafted");
    while pad_for(20 + msg.len() + MP_APP_ID.len()) < 2
        || pad_for(20 + msg.len() + WORK_CORP_ID.len()) < 2
    {
        msg.push('\n');
    }
    let post = |account: &'static str, encrypt: String| {
        let app = &app;
        async move { app.post_encrypted(account, &encrypt, now()).await }
    };

    // Sealed for another corpid with the account's own key.
    let other_corp = MsgCrypto::new(WORK_KEY)
        .unwrap()
        .encrypt(msg.as_bytes(), "ww0000000000000000");
    assert_refused(
        post("acme-work", other_corp).await,
        400,
        UNDECRYPTABLE,
        "WeCom message for another corpid",
    )
    .await;

    for (account, key, receiver) in [
        ("acme-mp", MP_KEY, MP_APP_ID),
        ("acme-work", WORK_KEY, WORK_CORP_ID),
    ] {
        let body = msg.as_bytes();
        let len = 20 + body.len() + receiver.len();
        let pad = pad_for(len);

        // Control: the crafted frame is accepted when it is right (so the refusals below are
        // about the one thing each changes). It is a retry of one message: one event at most.
        let good = frame(body.len() as u32, body, receiver, pad, pad as u8);
        assert_eq!(post(account, seal_raw(key, &good)).await.status(), 200);

        // Bad padding: the last byte says one more than there is, a pad byte differs, 0, 33.
        let mut p = good.clone();
        *p.last_mut().unwrap() = (pad + 1) as u8;
        let mut q = good.clone();
        let mid = q.len() - 2;
        q[mid] ^= 0x01;
        let mut zero = good.clone();
        *zero.last_mut().unwrap() = 0;
        let over = frame(body.len() as u32, body, receiver, pad + 32, 33);
        for (plain, what) in [
            (p, "pad length off by one"),
            (q, "pad byte changed"),
            (zero, "pad value 0"),
            (over, "pad value 33"),
        ] {
            assert_refused(
                post(account, seal_raw(key, &plain)).await,
                400,
                UNDECRYPTABLE,
                &format!("{account}: {what}"),
            )
            .await;
        }

        // Truncated length field: it declares more than the message holds.
        for declared in [body.len() as u32 + receiver.len() as u32 + 1, u32::MAX] {
            let plain = frame(declared, body, receiver, pad, pad as u8);
            assert_refused(
                post(account, seal_raw(key, &plain)).await,
                400,
                UNDECRYPTABLE,
                &format!("{account}: length field {declared}"),
            )
            .await;
        }
        // Too short to hold even the random prefix and the length field.
        let mut short = vec![b'r'; 12];
        short.extend([20u8; 20]);
        assert_refused(
            post(account, seal_raw(key, &short)).await,
            400,
            UNDECRYPTABLE,
            &format!("{account}: frame shorter than its header"),
        )
        .await;

        // Ciphertext cut to a length that is no multiple of the AES block.
        let full = STANDARD
            .decode(app.encrypt_for(account, &msg, None))
            .unwrap();
        assert_refused(
            post(account, STANDARD.encode(&full[..full.len() - 5])).await,
            400,
            UNDECRYPTABLE,
            &format!("{account}: truncated ciphertext"),
        )
        .await;
        // Base64 in the URL-safe alphabet (WeChat uses the standard one).
        let url_safe = STANDARD
            .encode(&full)
            .replace('+', "-")
            .replace('/', "_")
            .replace('=', "");
        if url_safe != STANDARD.encode(&full) {
            assert_refused(
                post(account, url_safe).await,
                400,
                UNDECRYPTABLE,
                &format!("{account}: URL-safe base64"),
            )
            .await;
        }
    }
    // No Encrypt element at all.
    let ts = now().to_string();
    let sig = crypto::msg_signature(WORK_TOKEN, &ts, "nonce2", "");
    assert_refused(
        app.post_envelope(
            "acme-work",
            "<xml><ToUserName>x</ToUserName></xml>",
            &sig,
            &ts,
        )
        .await,
        400,
        "missing element <Encrypt>",
        "envelope without Encrypt",
    )
    .await;

    // Only the two control frames (one per account) and the sentinels became events.
    for account in ["acme-mp", "acme-work"] {
        let xml = text_xml(&format!("oSentinel-{account}"));
        assert_eq!(app.post_safe(account, &xml).await.status(), 200);
    }
    let sentinel = |e: &wechat_gateway::pb::Event| {
        e.open_id.starts_with("oSentinel-") || e.user_id.starts_with("oSentinel-")
    };
    let events = crm
        .wait_for(|evs| evs.iter().filter(|e| sentinel(e)).count() == 2, WAIT)
        .await;
    let crafted: Vec<_> = events.iter().filter(|e| !sentinel(e)).collect();
    assert_eq!(crafted.len(), 2, "only the control frames: {crafted:?}");
    assert_ne!(crafted[0].account_id, crafted[1].account_id);
    app.stop().await;
}

#[tokio::test]
async fn hostile_xml_is_refused_in_plain_bodies_envelopes_and_decrypted_messages() {
    let (app, crm, _dir) = app_with_crm().await;
    let head = "<ToUserName>gh</ToUserName><FromUserName>oHostile</FromUserName>\
                <CreateTime>1700000000</CreateTime><MsgType>text</MsgType><MsgId>1</MsgId>";
    let deep = |levels: usize| {
        format!(
            "<xml>{head}{}x{}</xml>",
            "<a>".repeat(levels),
            "</a>".repeat(levels)
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        // Entity bombs without a DOCTYPE: references to entities that were never declared.
        (
            format!("<xml>{head}<Content>&lol9;&lol9;&lol9;</Content></xml>"),
            "undefined entity",
            "undeclared entity reference",
        ),
        // External entity (XXE) and an external DTD.
        (
            format!("<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml>{head}<Content>&xxe;</Content></xml>"),
            "DOCTYPE",
            "XXE",
        ),
        (
            format!("<!DOCTYPE xml SYSTEM \"http://attacker.example/x.dtd\"><xml>{head}</xml>"),
            "DOCTYPE",
            "external DTD",
        ),
        // A quadratic-blowup style bomb: one big entity used many times.
        (
            format!(
                "<!DOCTYPE x [<!ENTITY a \"{}\">]><xml>{head}<Content>{}</Content></xml>",
                "a".repeat(4000),
                "&a;".repeat(4000)
            ),
            "DOCTYPE",
            "quadratic blowup",
        ),
        // Deep nesting: one level past the limit, and a nesting bomb within the body limit.
        (deep(8), "nested deeper than 8 levels", "9 levels"),
        (
            format!("<xml>{}", "<a>".repeat(12_000)),
            "nested deeper than 8 levels",
            "nesting bomb",
        ),
        // Not UTF-8: a Latin-1 é where UTF-8 was due (the body is built below).
        (String::new(), "not valid UTF-8", "Latin-1"),
        // Control characters XML forbids (they would collide with the event id's separator).
        (
            format!("<xml>{head}<Content>a&#x1f;b</Content></xml>"),
            "invalid character reference",
            "control character reference",
        ),
    ];
    let latin1: Vec<u8> = [
        b"<xml>".as_slice(),
        head.as_bytes(),
        b"<Content>caf\xe9</Content></xml>",
    ]
    .concat();

    for (xml, reason, what) in &cases {
        let body: Vec<u8> = if xml.is_empty() {
            latin1.clone()
        } else {
            xml.clone().into_bytes()
        };
        // Plain body to a plain-mode account.
        let ts = now().to_string();
        let sig = crypto::signature("pamtest", &ts, "n");
        let resp = app
            .post_query(
                "/wechat/mp/acme-plain",
                &[
                    ("signature", sig.as_str()),
                    ("timestamp", &ts),
                    ("nonce", "n"),
                ],
                body.clone(),
            )
            .await;
        assert_refused(resp, 400, reason, &format!("plain: {what}")).await;

        // Inside the decrypted message, correctly encrypted and signed (safe mode and WeCom):
        // the one answer of every decrypt failure, which names nothing of the plaintext.
        for account in ["acme-mp", "acme-work"] {
            let receiver = &app.account(account).receiver_id;
            let encrypt = app.account(account).keys[0].encrypt(&body, receiver);
            assert_refused(
                app.post_encrypted(account, &encrypt, now()).await,
                400,
                UNDECRYPTABLE,
                &format!("{account}, decrypted: {what}"),
            )
            .await;
        }

        // As the outer envelope itself (the Encrypt value inside is a valid message).
        let encrypt = app.encrypt_for("acme-work", &text_xml("zhangsan"), None);
        let envelope = match *what {
            "Latin-1" => {
                let mut e = b"<xml><ToUserName>caf\xe9</ToUserName><Encrypt><![CDATA[".to_vec();
                e.extend_from_slice(encrypt.as_bytes());
                e.extend_from_slice(b"]]></Encrypt></xml>");
                e
            }
            _ => xml
                .replace(head, &format!("<Encrypt><![CDATA[{encrypt}]]></Encrypt>"))
                .into_bytes(),
        };
        let ts = now().to_string();
        let sig = crypto::msg_signature(WORK_TOKEN, &ts, "n", &encrypt);
        let resp = app
            .post_query(
                "/wechat/work/acme-work",
                &[
                    ("msg_signature", sig.as_str()),
                    ("timestamp", &ts),
                    ("nonce", "n"),
                ],
                envelope,
            )
            .await;
        assert_refused(resp, 400, reason, &format!("envelope: {what}")).await;
    }

    // An encrypted body over the limit is refused before anything is read.
    let huge = app.encrypt_for("acme-work", &"x".repeat(60_000), None);
    assert_refused(
        app.post_encrypted("acme-work", &huge, now()).await,
        413,
        "payload reached size limit",
        "oversize WeCom body",
    )
    .await;

    assert_only_sentinels_arrive(&app, &crm, &["acme-plain", "acme-mp", "acme-work"]).await;
    app.stop().await;
}

#[tokio::test]
async fn requests_missing_parameters_or_addressed_to_no_account_are_refused() {
    let (app, crm, _dir) = app_with_crm().await;
    let xml = text_xml("oParams");
    let ts = now().to_string();
    let sig = crypto::signature("pamtest", &ts, "n");
    let full = [
        ("signature", sig.as_str()),
        ("timestamp", ts.as_str()),
        ("nonce", "n"),
    ];

    // Plain POST: each of signature, timestamp and nonce left out.
    for missing in ["signature", "timestamp", "nonce"] {
        let query: Vec<_> = full.iter().filter(|(k, _)| *k != missing).collect();
        let resp = app
            .post_query("/wechat/mp/acme-plain", &query, xml.clone())
            .await;
        assert_refused(
            resp,
            400,
            &format!("missing query parameter \"{missing}\""),
            &format!("plain POST without {missing}"),
        )
        .await;
    }
    // No query string at all, and a timestamp that is not a number of seconds.
    let resp = app
        .http
        .post(app.url("/wechat/mp/acme-plain"))
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_refused(resp, 400, "missing query parameter", "no query string").await;
    let sig = crypto::signature("pamtest", "yesterday", "n");
    let resp = app
        .post_query(
            "/wechat/mp/acme-plain",
            &[
                ("signature", sig.as_str()),
                ("timestamp", "yesterday"),
                ("nonce", "n"),
            ],
            xml.clone(),
        )
        .await;
    assert_refused(
        resp,
        400,
        "not a number of seconds",
        "timestamp not a number",
    )
    .await;

    // Encrypted POST (safe mode and WeCom) without msg_signature, timestamp or nonce.
    for account in ["acme-mp", "acme-work"] {
        let encrypt = app.encrypt_for(account, &xml, None);
        let msg_sig =
            crypto::msg_signature(app.account(account).token.expose(), &ts, "n", &encrypt);
        let platform = app.account(account).platform.as_str();
        for missing in ["msg_signature", "timestamp", "nonce"] {
            let mut query = vec![
                ("msg_signature", msg_sig.as_str()),
                ("timestamp", ts.as_str()),
                ("nonce", "n"),
            ];
            if platform == "mp" {
                query.push(("encrypt_type", "aes"));
            }
            query.retain(|(k, _)| *k != missing);
            let resp = app
                .post_query(
                    &format!("/wechat/{platform}/{account}"),
                    &query,
                    format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
                )
                .await;
            assert_refused(
                resp,
                400,
                &format!("missing query parameter \"{missing}\""),
                &format!("{account} POST without {missing}"),
            )
            .await;
        }
    }

    // URL verifications without echostr or signature.
    let resp = app.get_query("/wechat/mp/acme-mp", &full).await;
    assert_refused(resp, 400, "missing query parameter \"echostr\"", "mp GET").await;
    let resp = app
        .get_query(
            "/wechat/work/acme-work",
            &[("timestamp", ts.as_str()), ("nonce", "n"), ("echostr", "e")],
        )
        .await;
    assert_refused(
        resp,
        400,
        "missing query parameter \"msg_signature\"",
        "WeCom GET",
    )
    .await;

    // Unknown accounts on the WeCom path, and an account on the other platform's path.
    let encrypt = app.encrypt_for("acme-work", &xml, None);
    assert_refused(
        app.post_envelope(
            "acme-work",
            &format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
            "x",
            &ts,
        )
        .await,
        401,
        "signature does not verify",
        "control: the WeCom path answers",
    )
    .await;
    for (path, reason) in [
        ("/wechat/work/no-such-account", "unknown account"),
        ("/wechat/work/acme-mp", "this endpoint is for work accounts"),
        ("/wechat/mp/acme-work", "this endpoint is for mp accounts"),
    ] {
        let resp = app.post_query(path, &full, xml.clone()).await;
        assert_refused(resp, 404, reason, &format!("POST {path}")).await;
        let resp = app.get_query(path, &full).await;
        assert_refused(resp, 404, reason, &format!("GET {path}")).await;
    }

    assert_only_sentinels_arrive(&app, &crm, &["acme-plain", "acme-mp", "acme-work"]).await;
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_refuse_near_miss_tokens_and_change_nothing() {
    let (app, crm, _dir) = app_with_crm().await;
    crm.reject_user("oDead", true);
    let resp = app.post_plain("acme-plain", &text_xml("oDead")).await;
    assert_eq!(resp.status(), 200);
    let sentinel = text_xml("oAfterDead");
    assert_eq!(app.post_plain("acme-plain", &sentinel).await.status(), 200);
    crm.wait_for(|evs| evs.iter().any(|e| e.open_id == "oAfterDead"), WAIT)
        .await;
    crm.reject_user("oDead", false);
    let dead_letters = || async {
        app.admin("GET", "/dead-letters", None).await.1["dead_letters"]
            .as_array()
            .unwrap()
            .clone()
    };
    // The forwarder dead-letters the refused event once the CRM has answered: wait for it.
    let deadline = std::time::Instant::now() + WAIT;
    let id = loop {
        if let Some(letter) = dead_letters().await.first() {
            break letter["event_id"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // A prefix, an extension, another case, the token of another scheme, an empty bearer, and
    // the token passed anywhere but the Authorization header.
    let upper = ADMIN_TOKEN.to_uppercase();
    let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let extended = format!("{ADMIN_TOKEN}0");
    let basic = format!("Basic {}", STANDARD.encode(format!("ops:{ADMIN_TOKEN}")));
    let cases: Vec<(Option<String>, &str)> = vec![
        (Some(format!("Bearer {prefix}")), "invalid_token"),
        (Some(format!("Bearer {extended}")), "invalid_token"),
        (Some(format!("Bearer {upper}")), "invalid_token"),
        (Some(basic), "missing_token"),
        (Some("Bearer ".to_owned()), "missing_token"),
        (Some(ADMIN_TOKEN.to_owned()), "missing_token"),
        (None, "missing_token"),
    ];
    for (auth, code) in &cases {
        let mut req = app
            .http
            .post(app.url(&format!(
                "/admin/v1/dead-letters/{id}/replay?token={ADMIN_TOKEN}"
            )))
            .header("X-Admin-Token", ADMIN_TOKEN);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], *code, "{auth:?}: {body}");
    }

    // Nothing was replayed: the dead letter is still there and the CRM never got it.
    let listed = dead_letters().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["event_id"], id.as_str());
    let second = text_xml("oLast");
    assert_eq!(app.post_plain("acme-plain", &second).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oLast"), WAIT)
        .await;
    assert!(events.iter().all(|e| e.open_id != "oDead"), "{events:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets never reach the logs
// ---------------------------------------------------------------------------------------------

/// Real-looking secrets, none of which appears anywhere else in the configuration or the
/// requests (so finding one in the output can only be a leak).
const MP_APP_SECRET: &str = "3f8a6c1e9b2d4f7a0c5e8b1d3f6a9c2e";
const MP_CB_TOKEN: &str = "Tk7pQ2vX9mR4sL8wNc3b";
const MP_AES_KEY: &str = "Xq3LmN8vR2tY6wZ0aB4cD7eF1gH5jK9pS3uV6xW8yZ1";
const MP_PREVIOUS_AES_KEY: &str = "Pz9Kw2Lm5Nq8Rt1Vx4Yb7Ac0Df3Gh6Jk9Mp2Qs5Tu8W";
const WORK_SECRET: &str = "wS8dK3mP6qT9vX2zB5nF7hJ4lA1cE0gRy6Uo3Ii";
const WORK_CB_TOKEN: &str = "Ww4hJ7kL0mN3pQ6r";
const WORK_AES_KEY: &str = "Hd6Fg9Jk2Lm5Np8Qr1St4Uv7Wx0Yz3Ab6Cd9Ef2Gh5J";
const ADMIN_SECRET: &str = "adm-9f2c7e4b1a8d6f3c0e5b2a7d4f1c8e6b";
const REDIS_PASSWORD: &str = "r3d1sPw-7c9e2a4f6b8d";
const MP_REAL_APP_ID: &str = "wx1a2b3c4d5e6f7a8b";
const WORK_REAL_CORP_ID: &str = "ww9f8e7d6c5b4a3f2e";

const SECRETS: [(&str, &str); 9] = [
    ("app_secret", MP_APP_SECRET),
    ("mp token", MP_CB_TOKEN),
    ("mp encoding_aes_key", MP_AES_KEY),
    ("previous_encoding_aes_key", MP_PREVIOUS_AES_KEY),
    ("WeCom secret", WORK_SECRET),
    ("WeCom token", WORK_CB_TOKEN),
    ("WeCom encoding_aes_key", WORK_AES_KEY),
    ("admin token", ADMIN_SECRET),
    ("redis password", REDIS_PASSWORD),
];

/// Sets the password of a running `redis-server` (the helper starts them without one).
fn require_password(url: &str, password: &str) {
    let addr = url.trim_start_matches("redis://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cmd = format!(
        "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n${}\r\n{password}\r\n",
        password.len()
    );
    conn.write_all(cmd.as_bytes()).unwrap();
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
}

/// Everything the process printed, line by line, on both streams.
type Output = Arc<Mutex<Vec<String>>>;

fn collect(
    stream: impl Read + Send + 'static,
    out: Output,
    addr: Option<std::sync::mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut addr = addr;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http_addr=").nth(1) {
                if let Some(tx) = addr.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
            out.lock().unwrap().push(line);
        }
    })
}

fn assert_no_secret(output: &[String], what: &str) {
    for (name, secret) in SECRETS {
        let leaks: Vec<_> = output.iter().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{what}: the {name} appears in the output: {:?}",
            &leaks[..leaks.len().min(3)]
        );
    }
}

fn secrets_config(dir: &Path, redis_url: &str) -> String {
    let store_url = redis_url.replace("redis://", &format!("redis://:{REDIS_PASSWORD}@"));
    format!(
        r#"
[http]
listen = "127.0.0.1:0"

[grpc]
listen = "127.0.0.1:0"

[store]
backend = "redis"
redis_url = "{store_url}/0"
path = {path:?}

[wechat]
# Nothing leaves the machine: WeChat's API is a closed loopback port.
mp_api_base = "http://127.0.0.1:9"
work_api_base = "http://127.0.0.1:9"

[log]
level = "debug"

[[admin.tokens]]
name = "ops"
token = "{ADMIN_SECRET}"

[[accounts]]
id = "real-mp"
platform = "mp"
app_id = "{MP_REAL_APP_ID}"
app_secret = "{MP_APP_SECRET}"
token = "{MP_CB_TOKEN}"
encoding_aes_key = "{MP_AES_KEY}"
previous_encoding_aes_key = "{MP_PREVIOUS_AES_KEY}"

[[accounts]]
id = "real-work"
platform = "work"
corp_id = "{WORK_REAL_CORP_ID}"
agent_id = 1000002
secret = "{WORK_SECRET}"
token = "{WORK_CB_TOKEN}"
encoding_aes_key = "{WORK_AES_KEY}"
"#,
        path = dir.join("data").to_string_lossy(),
    )
}

struct Running {
    child: Child,
    addr: SocketAddr,
    output: Output,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(config: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wechat-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary starts");
    let output: Output = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let readers = vec![
        collect(child.stdout.take().unwrap(), output.clone(), None),
        collect(child.stderr.take().unwrap(), output.clone(), Some(tx)),
    ];
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the gateway did not log its address: {:?}",
                output.lock().unwrap()
            )
        });
    Running {
        child,
        addr: addr.parse().expect("a socket address"),
        output,
        readers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_logs_its_secrets_even_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    require_password(&redis.url(), REDIS_PASSWORD);
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, secrets_config(dir.path(), &redis.url())).unwrap();

    let mut gw = tokio::task::spawn_blocking(move || start_gateway(&config))
        .await
        .unwrap();
    wechat_gateway::wechat::api::install_tls_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let mp = MsgCrypto::new(MP_AES_KEY).unwrap();
    let old = MsgCrypto::new(MP_PREVIOUS_AES_KEY).unwrap();
    let work = MsgCrypto::new(WORK_AES_KEY).unwrap();
    let post = |path: String, query: Vec<(&'static str, String)>, body: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.post(format!("{base}{path}"))
                .query(&query)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let signed_at = |token: &str, encrypt: &str, ts: u64| {
        let ts = ts.to_string();
        let sig = crypto::msg_signature(token, &ts, "nonce", encrypt);
        vec![
            ("msg_signature", sig),
            ("timestamp", ts),
            ("nonce", "nonce".to_owned()),
            ("encrypt_type", "aes".to_owned()),
        ]
    };
    let signed = |token: &str, encrypt: &str| signed_at(token, encrypt, now());
    let envelope = |encrypt: &str| format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
    let msg = |from: &str| {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
             <MsgType>text</MsgType><Content>hello</Content><MsgId>{}</MsgId></xml>",
            now(),
            unique_msg_id()
        )
    };

    // Good callbacks: safe mode with the current and the previous key, WeCom.
    let mut statuses = Vec::new();
    for (crypto, receiver, token, path, from) in [
        (
            &mp,
            MP_REAL_APP_ID,
            MP_CB_TOKEN,
            "/wechat/mp/real-mp",
            "oSecretsA",
        ),
        (
            &old,
            MP_REAL_APP_ID,
            MP_CB_TOKEN,
            "/wechat/mp/real-mp",
            "oSecretsB",
        ),
        (
            &work,
            WORK_REAL_CORP_ID,
            WORK_CB_TOKEN,
            "/wechat/work/real-work",
            "zhangsan",
        ),
    ] {
        let encrypt = crypto.encrypt(msg(from).as_bytes(), receiver);
        statuses.push(post(path.to_owned(), signed(token, &encrypt), envelope(&encrypt)).await);
    }
    assert_eq!(statuses, [200, 200, 200], "the good callbacks");

    // Bad ones: forged signature, wrong key, wrong appid, stale, garbage, unknown account.
    let encrypt = mp.encrypt(msg("oBad").as_bytes(), MP_REAL_APP_ID);
    let mut forged = signed(MP_CB_TOKEN, &encrypt);
    forged[0].1 = "0".repeat(40);
    let wrong_key = MsgCrypto::new(MP_KEY)
        .unwrap()
        .encrypt(msg("oBad").as_bytes(), MP_REAL_APP_ID);
    let wrong_appid = mp.encrypt(msg("oBad").as_bytes(), "wx0000000000000000");
    let stale = signed_at(MP_CB_TOKEN, &encrypt, now() - 7200);
    let statuses = vec![
        post("/wechat/mp/real-mp".into(), forged, envelope(&encrypt)).await,
        post(
            "/wechat/mp/real-mp".into(),
            signed(MP_CB_TOKEN, &wrong_key),
            envelope(&wrong_key),
        )
        .await,
        post(
            "/wechat/mp/real-mp".into(),
            signed(MP_CB_TOKEN, &wrong_appid),
            envelope(&wrong_appid),
        )
        .await,
        post("/wechat/mp/real-mp".into(), stale, envelope(&encrypt)).await,
        post(
            "/wechat/work/real-work".into(),
            signed(WORK_CB_TOKEN, "AAAA"),
            "<xml><Encrypt>AAAA</Encrypt></xml>".into(),
        )
        .await,
        post(
            "/wechat/work/nobody".into(),
            vec![],
            "<!DOCTYPE x><xml/>".into(),
        )
        .await,
    ];
    assert_eq!(
        statuses,
        [401, 400, 400, 401, 400, 404],
        "the bad callbacks"
    );

    // URL verifications, good and bad.
    let ts = now().to_string();
    let sig = crypto::signature(MP_CB_TOKEN, &ts, "n");
    let resp = http
        .get(format!("{base}/wechat/mp/real-mp"))
        .query(&[
            ("signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "n"),
            ("echostr", "echo-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "echo-1");
    let echostr = work.encrypt(b"echo-2", WORK_REAL_CORP_ID);
    let sig = crypto::msg_signature(WORK_CB_TOKEN, &ts, "n", &echostr);
    let resp = http
        .get(format!("{base}/wechat/work/real-work"))
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "n"),
            ("echostr", &echostr),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "echo-2");

    // Admin requests: with the token, without it, with a near miss.
    let resp = http
        .get(format!("{base}/admin/v1/dead-letters"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for auth in [None, Some(&ADMIN_SECRET[1..])] {
        let mut req = http.get(format!("{base}/admin/v1/dead-letters"));
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    // Admin actions that need WeChat's access token: the gateway asks for one (app secret and
    // corpsecret travel in that request) from an API base where nothing listens.
    for (account, body) in [
        ("real-mp", serde_json::json!({"scene": "expo"})),
        (
            "real-work",
            serde_json::json!({"scene": "expo", "users": ["zhangsan"]}),
        ),
    ] {
        let resp = http
            .post(format!("{base}/admin/v1/accounts/{account}/qrcodes"))
            .bearer_auth(ADMIN_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            504,
            "{account}: {}",
            resp.text().await.unwrap()
        );
    }
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the gateway reaches the password-protected Redis"
    );

    // The events come out on stdout (no CRM configured): wait for all three, then stop the
    // gateway gracefully so that everything it would log has been written.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let printed = gw
            .output
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"content\":\"hello\""))
            .count();
        if printed >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the events were not printed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = gw.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait().unwrap();
        for r in std::mem::take(&mut gw.readers) {
            r.join().unwrap();
        }
        (status, gw)
    })
    .await
    .unwrap();
    let (status, gw) = status;
    assert!(
        status.success(),
        "the gateway exits cleanly on SIGTERM: {status}"
    );

    let output = gw.output.lock().unwrap().clone();
    // The run was verbose and covered what it should: debug lines, refusals, the events.
    assert!(
        output.iter().any(|l| l.contains("DEBUG")),
        "RUST_LOG=debug took effect"
    );
    assert!(output.iter().any(|l| l.contains("callback refused")));
    assert!(output.iter().any(|l| l.contains("wechat-gateway started")));
    // What a request carries does reach the logs (the refusal names the account of its path),
    // so a secret that leaked the same way would be seen here. The appid inside a decrypted
    // message does not: a decrypt failure names nothing of the plaintext.
    assert!(output
        .iter()
        .any(|l| l.contains("callback refused") && l.contains("real-mp")));
    assert!(output.iter().all(|l| !l.contains("wx0000000000000000")));
    assert_no_secret(&output, "serve");

    // check-config on a configuration whose secrets are wrong prints every problem, and still
    // none of the secrets.
    let bad = dir.path().join("bad.toml");
    let text = secrets_config(dir.path(), &redis.url())
        .replace(MP_AES_KEY, &MP_AES_KEY[..40])
        .replace(ADMIN_SECRET, &ADMIN_SECRET[..12]);
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wechat-gateway"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_owned)
        .collect();
    assert!(printed.iter().any(|l| l.contains("43")), "{printed:?}");
    assert_no_secret(&printed, "check-config");
    for partial in [&MP_AES_KEY[..40], &ADMIN_SECRET[..12]] {
        assert!(
            printed.iter().all(|l| !l.contains(partial)),
            "check-config echoes a secret: {printed:?}"
        );
    }
}

/// The same secrets, now with a WeChat API that answers (the fake), and refuses: token fetches
/// refused, calls refused with quota, IP-whitelist and token errors, 5xx. Neither the
/// configuration's secrets nor the access tokens WeChat issued appear in anything the gateway
/// printed at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_logs_secrets_or_access_tokens_when_wechat_refuses_its_calls() {
    use crate::support::fake_wechat::{FakeWeChat, Injected};

    let dir = tempfile::tempdir().unwrap();
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    require_password(&redis.url(), REDIS_PASSWORD);
    let fake = FakeWeChat::start().await;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        secrets_config(dir.path(), &redis.url()).replace("http://127.0.0.1:9", &fake.base()),
    )
    .unwrap();
    let mut gw = start_gateway(&config);
    wechat_gateway::wechat::api::install_tls_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let qrcode = async |account: &str| {
        let body = match account {
            "real-mp" => serde_json::json!({"scene": "expo"}),
            _ => serde_json::json!({"scene": "expo", "users": ["zhangsan"]}),
        };
        let resp = http
            .post(format!("{base}/admin/v1/accounts/{account}/qrcodes"))
            .bearer_auth(ADMIN_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };

    // WeChat refuses the token fetch itself (invalid appsecret, 40125; invalid corpsecret, 40001
    // on gettoken): the secrets were just sent in that request.
    fake.inject("/cgi-bin/stable_token", Injected::Errcode(40125), 1);
    fake.inject("/cgi-bin/gettoken", Injected::Errcode(40001), 1);
    for account in ["real-mp", "real-work"] {
        let (status, body) = qrcode(account).await;
        assert_eq!(status, 502, "{account}: {body}");
    }
    // Tokens issued; calls refused with WeChat's documented errors, then a 5xx storm.
    for (account, path) in [
        ("real-mp", "/cgi-bin/qrcode/create"),
        ("real-work", "/cgi-bin/externalcontact/add_contact_way"),
    ] {
        // A refused fetch is answered from memory for a moment (FAILURE_HOLD), never looped on.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = qrcode(account).await;
            if status == 200 {
                break;
            }
            assert!(
                body.contains("40125") || body.contains("40001"),
                "{account}: {body}"
            );
            assert!(std::time::Instant::now() < deadline, "{account}: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (errcode, status) in [(45009, 502), (40164, 502)] {
            fake.inject(path, Injected::Errcode(errcode), 1);
            assert_eq!(qrcode(account).await.0, status, "{account} {errcode}");
        }
        fake.inject(path, Injected::Status(502), 3);
        assert!(qrcode(account).await.0 >= 500, "{account}: 5xx three times");
    }
    // Tokens replaced behind the gateway's back: 40001, evicted, fetched again with
    // force_refresh, and the call retried.
    fake.invalidate_tokens();
    for account in ["real-mp", "real-work"] {
        assert_eq!(qrcode(account).await.0, 200, "{account}");
    }
    let mut tokens: HashSet<String> = fake
        .requests()
        .iter()
        .map(|r| r.token().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    tokens.extend(
        [MP_REAL_APP_ID, WORK_REAL_CORP_ID]
            .into_iter()
            .filter_map(|c| fake.current_token(c)),
    );
    assert!(tokens.len() >= 4, "tokens were issued and used: {tokens:?}");

    let pid = gw.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let gw = tokio::task::spawn_blocking(move || {
        gw.child.wait().unwrap();
        for r in std::mem::take(&mut gw.readers) {
            r.join().unwrap();
        }
        gw
    })
    .await
    .unwrap();
    let output = gw.output.lock().unwrap().clone();
    assert!(
        output.iter().any(|l| l.contains("DEBUG")),
        "RUST_LOG=debug took effect"
    );
    assert_no_secret(&output, "serve, WeChat refusing");
    for token in &tokens {
        let leaks: Vec<_> = output
            .iter()
            .filter(|l| l.contains(token.as_str()))
            .collect();
        assert!(
            leaks.is_empty(),
            "an access token reached the logs: {leaks:?}"
        );
    }
}
