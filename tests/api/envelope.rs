//! What a signature proves, and nothing more (issue 18): after a valid `msg_signature` every
//! failure gets one answer and one log line that say nothing of the plaintext (no decryption
//! oracle); a compatible-mode account reads its events only from the signed `Encrypt`; a
//! plain-mode `signature` seen with one body is refused with another, on every instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use wechat_gateway::pb::event::Kind;
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

use crate::support::app::{
    app_with_crm, config_toml, fresh_nonce, now, spawn_app, text_xml, unique_msg_id, AppOptions,
    TestApp, MP_APP_ID, MP_KEY, MP_TOKEN, NEW_KEY, WORK_CORP_ID, WORK_KEY, WORK_TOKEN,
};
use crate::support::crm::FakeCrm;
use crate::support::process::GatewayProcess;

const WAIT: Duration = Duration::from_secs(20);

/// The one answer to every failure after a valid signature.
const UNDECRYPTABLE: &str = "the encrypted message does not open for this account";

/// Marks the plaintext: neither may appear in any answer or log line.
const SECRET: &str = "SECRET-4242";
/// The length field of the "length field too big" case.
const DECLARED: u32 = 4242;
/// The appid the "wrong appid" case is sealed for.
const OTHER_APPID: &str = "wx0000000000000000";

/// AES-256-CBC (iv = key[..16]) of whole blocks, with no framing or padding added.
fn seal_raw(encoding_aes_key: &str, plain: &[u8]) -> String {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key: [u8; 32] = engine
        .decode(format!("{encoding_aes_key}="))
        .unwrap()
        .try_into()
        .unwrap();
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let mut buf = plain.to_vec();
    let (blocks, tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    assert!(tail.is_empty(), "test bug: whole blocks only");
    cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into()).encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

/// `random16 ‖ be32(declared) ‖ msg ‖ receiver ‖ pad × pad_byte`, padded to 32 bytes.
fn frame(declared: u32, msg: &[u8], receiver: &str, pad_byte: Option<u8>) -> Vec<u8> {
    let mut plain = b"0123456789abcdef".to_vec();
    plain.extend_from_slice(&declared.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(receiver.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad_byte.unwrap_or(pad as u8), pad));
    plain
}

/// `Encrypt` values for an account (its key and appid/corpid) that each fail at one stage
/// after the signature, with the stage's name. `verification`: the stages a WeCom `echostr`
/// can fail (it is not XML, but must not be a message).
fn failing_at_each_stage(key: &str, receiver: &str, verification: bool) -> Vec<(String, String)> {
    let crypto = MsgCrypto::new(key).unwrap();
    let msg = text_xml("oOracle", SECRET, unique_msg_id());
    let msg = msg.as_bytes();
    let good = frame(msg.len() as u32, msg, receiver, None);
    let sealed = STANDARD.decode(seal_raw(key, &good)).unwrap();
    let mut url_unsafe = seal_raw(key, &good);
    url_unsafe.replace_range(10..11, "!");
    let mut cases = vec![
        ("bad base64", url_unsafe),
        (
            "length not a multiple of 16",
            STANDARD.encode(&sealed[..sealed.len() - 5]),
        ),
        (
            "bad padding",
            seal_raw(key, &frame(msg.len() as u32, msg, receiver, Some(0))),
        ),
        (
            "length field too big",
            seal_raw(key, &frame(DECLARED, msg, receiver, None)),
        ),
        ("wrong appid", crypto.encrypt(msg, OTHER_APPID)),
    ];
    if verification {
        // A captured callback sent back as an echostr: it decrypts, but it is a message.
        cases.push(("a message as echostr", crypto.encrypt(msg, receiver)));
    } else {
        let not_xml = format!("{SECRET} is not XML");
        let not_a_message = format!("<xml><Content>{SECRET}</Content></xml>");
        cases.push((
            "non-XML plaintext",
            crypto.encrypt(not_xml.as_bytes(), receiver),
        ));
        cases.push((
            "XML that is no message",
            crypto.encrypt(not_a_message.as_bytes(), receiver),
        ));
    }
    cases
        .into_iter()
        .map(|(what, encrypt)| (what.to_owned(), encrypt))
        .collect()
}

/// The query of an encrypted request, correctly signed over `encrypt`.
fn signed(token: &str, encrypt: &str, mp: bool) -> Vec<(&'static str, String)> {
    let ts = now().to_string();
    let nonce = fresh_nonce();
    let mut q = vec![
        (
            "msg_signature",
            crypto::msg_signature(token, &ts, &nonce, encrypt),
        ),
        ("timestamp", ts),
        ("nonce", nonce),
    ];
    if mp {
        q.push(("encrypt_type", "aes".to_owned()));
    }
    q
}

/// Every stage after a valid signature, on every encrypted kind of account (safe mode, compatible
/// mode, during a key rotation with the message under either key, WeCom) and on WeCom's URL
/// verification, is answered `400` with one fixed body, and logged in one fixed line per
/// account; neither says anything of the plaintext. Runs the real binary to read its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_after_a_valid_signature_gets_one_answer_and_one_log_line_naming_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let toml = config_toml(&AppOptions::embedded(&dir.path().join("data")));
    std::fs::write(&config, toml).unwrap();
    let gateway = tokio::task::spawn_blocking(move || GatewayProcess::start(&config))
        .await
        .unwrap();
    wechat_gateway::wechat::api::install_tls_provider();
    let http = reqwest::Client::new();
    let base = format!("http://{}", gateway.addr);

    let mut requests: Vec<(String, String, reqwest::RequestBuilder)> = Vec::new();
    for (account, key, receiver, token) in [
        ("acme-mp", MP_KEY, MP_APP_ID, MP_TOKEN),
        ("acme-compat", MP_KEY, MP_APP_ID, MP_TOKEN),
        // A rotation: under the new key, and under the previous one.
        ("acme-rotated", NEW_KEY, MP_APP_ID, MP_TOKEN),
        ("acme-rotated", MP_KEY, MP_APP_ID, MP_TOKEN),
        ("acme-work", WORK_KEY, WORK_CORP_ID, WORK_TOKEN),
    ] {
        let mp = account != "acme-work";
        let path = format!("{base}/wechat/{}/{account}", if mp { "mp" } else { "work" });
        for (what, encrypt) in failing_at_each_stage(key, receiver, false) {
            let body = format!(
                "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            );
            let request = http
                .post(&path)
                .query(&signed(token, &encrypt, mp))
                .body(body);
            requests.push((format!("POST {account}"), what, request));
        }
        if !mp {
            for (what, encrypt) in failing_at_each_stage(key, receiver, true) {
                let mut query = signed(token, &encrypt, false);
                query.push(("echostr", encrypt));
                let request = http.get(&path).query(&query);
                requests.push((format!("GET {account}"), what, request));
            }
        }
    }

    let mut answers = BTreeMap::new();
    for (entry, what, request) in requests {
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let body = resp.text().await.unwrap();
        answers
            .entry((status, content_type, body))
            .or_insert_with(Vec::new)
            .push(format!("{entry}: {what}"));
    }
    let only: Vec<_> = answers.keys().collect();
    assert_eq!(answers.len(), 1, "distinct answers: {answers:#?}");
    let (status, content_type, body) = only[0];
    assert_eq!(*status, 400);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(body, UNDECRYPTABLE);
    let sent = answers.values().next().unwrap().len();
    assert_eq!(sent, 5 * 7 + 6, "every case was sent");

    // One log line per request, the same line for every stage of one entry point: without its
    // timestamp, it differs only by the account it names.
    let lines = tokio::task::spawn_blocking(move || {
        let lines = gateway.wait_for_log("reason=\"bad_encryption\"", sent);
        (lines, gateway.log())
    })
    .await
    .unwrap();
    let (refusals, log) = lines;
    assert_eq!(refusals.len(), sent, "{refusals:#?}");
    let distinct: BTreeSet<&str> = refusals
        .iter()
        .map(|l| l.split_once(' ').map_or(l.as_str(), |(_, rest)| rest))
        .collect();
    // acme-mp, acme-compat, acme-rotated; acme-work's callbacks and its URL verifications.
    assert_eq!(distinct.len(), 5, "{distinct:#?}");
    for line in &log {
        for leak in [SECRET, OTHER_APPID, "oOracle", "does not match", "padding"] {
            assert!(!line.contains(leak), "{leak:?} reached the log: {line}");
        }
    }
    // Nor the length field's value (the timestamp of a line is left out: it could hold it).
    for line in &distinct {
        assert!(!line.contains(&DECLARED.to_string()), "{line}");
    }
}

/// WeChat's compatible mode sends the plain fields beside `Encrypt`; only `Encrypt` is covered
/// by `msg_signature`, so only it is read. A plain callback (its `signature` is on every URL
/// WeChat calls) and an envelope without `Encrypt` are refused with 400.
#[tokio::test]
async fn compatible_accounts_read_only_the_signed_encrypt_and_refuse_plain_bodies() {
    let (app, crm, _dir) = app_with_crm().await;
    let inner = text_xml("oSigned", "from Encrypt", unique_msg_id());
    let encrypt = app.encrypt_for("acme-compat", &inner, None);
    let forged_beside = text_xml("oForged", "from the plain fields", unique_msg_id()).replacen(
        "<xml>",
        &format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>"),
        1,
    );
    let query = signed(MP_TOKEN, &encrypt, true);
    let resp = app
        .post_query("/wechat/mp/acme-compat", &query, forged_beside)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "success");

    // Plain, correctly signed: refused, as on a safe-mode account.
    for account in ["acme-compat", "acme-mp"] {
        let forged = text_xml("oForged", "plain", unique_msg_id());
        let resp = app.post_plain(account, &forged).await;
        assert_eq!(resp.status(), 400, "{account}");
        assert!(resp.text().await.unwrap().contains("plain callback"));
    }
    // Encrypted query, no `Encrypt` in the body (its plain fields alone).
    let query = signed(MP_TOKEN, "", true);
    let resp = app
        .post_query(
            "/wechat/mp/acme-compat",
            &query,
            text_xml("oForged", "no Encrypt", unique_msg_id()),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("missing element <Encrypt>"));

    let sentinel = text_xml("oSentinel", "last", unique_msg_id());
    assert_eq!(app.post_safe("acme-compat", &sentinel).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oSentinel"), WAIT)
        .await;
    let senders: Vec<_> = events.iter().map(|e| e.open_id.as_str()).collect();
    assert_eq!(senders, ["oSigned", "oSentinel"]);
    assert!(
        matches!(&events[0].kind, Some(Kind::Text(t)) if t.content == "from Encrypt"),
        "{:?}",
        events[0]
    );
    app.stop().await;
}

/// Sends body 1, its retry, then body 2 under the same signature (and in upper case) through
/// `first`, `second`, `first`, `second`; checks the answers.
async fn reuse_a_signature(first: &TestApp, second: &TestApp) {
    let ts = now();
    let nonce = fresh_nonce();
    let genuine = text_xml("oGenuine", "genuine", unique_msg_id());
    let resp = first
        .post_plain_signed("acme-plain", &genuine, ts, &nonce)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "success");
    // WeChat's retry, wherever it lands: the same answer, and no second event.
    let resp = second
        .post_plain_signed("acme-plain", &genuine, ts, &nonce)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "success");

    let forged = text_xml("oForger", "forged", unique_msg_id());
    let resp = first
        .post_plain_signed("acme-plain", &forged, ts, &nonce)
        .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.text().await.unwrap(),
        "this signature was already used with another body"
    );
    let sig = crypto::signature(MP_TOKEN, &ts.to_string(), &nonce).to_uppercase();
    let resp = second
        .post_query(
            "/wechat/mp/acme-plain",
            &[
                ("signature", sig.as_str()),
                ("timestamp", &ts.to_string()),
                ("nonce", &nonce),
            ],
            forged,
        )
        .await;
    assert_eq!(resp.status(), 401, "the signature in upper case");
}

/// Waits for the sentinel and checks that the genuine callback is the only other event.
async fn only_the_genuine_event_arrives(app: &TestApp, crm: &FakeCrm) {
    let sentinel = text_xml("oSentinel", "last", unique_msg_id());
    assert_eq!(app.post_plain("acme-plain", &sentinel).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oSentinel"), WAIT)
        .await;
    let senders: Vec<_> = events.iter().map(|e| e.open_id.as_str()).collect();
    assert_eq!(senders, ["oGenuine", "oSentinel"]);
}

#[tokio::test]
async fn a_plain_signature_seen_with_one_body_is_refused_with_another_and_a_retry_is_a_duplicate() {
    let (app, crm, _dir) = app_with_crm().await;
    reuse_a_signature(&app, &app).await;
    only_the_genuine_event_arrives(&app, &crm).await;
    app.stop().await;
}

#[tokio::test]
async fn a_plain_signature_reused_on_another_instance_of_one_redis_is_refused() {
    let url = crate::support::redis::fresh_db_url().await;
    let crm = FakeCrm::start().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), d1.path()).await;
    let b = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), d2.path()).await;
    reuse_a_signature(&a, &b).await;
    only_the_genuine_event_arrives(&b, &crm).await;
    a.stop().await;
    b.stop().await;
}
