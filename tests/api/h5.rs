//! Identity on H5 pages (issue 14, item 5), against the fake WeChat API.
//!
//! JS-SDK signatures: `POST /admin/v1/accounts/{account}/jsapi-signature` and gRPC
//! `GetJsapiSignature` sign a page with the ticket the fake issued, as WeChat's algorithm says
//! (the test's own SHA-1 is first checked against the JS-SDK document's published example); the
//! ticket is fetched once for a crowd of requests and once for two instances on one Redis, and
//! refreshed when it nears its expiry or when WeChat refuses the access token.

use std::time::Duration;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::GetJsapiSignatureRequest;

use crate::support::app::{spawn_app, AppOptions, TestApp, MP_APP_ID, WORK_CORP_ID};
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const GETTICKET: &str = "/cgi-bin/ticket/getticket";

async fn app(wechat: &FakeWeChat) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    (spawn_app(opts, dir.path()).await, dir)
}

/// WeChat's signature, written from the JS-SDK document (附录1) for the test.
fn sha1_signature(ticket: &str, nonce: &str, timestamp: i64, url: &str) -> String {
    let s = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}");
    hex::encode(Sha1::digest(s.as_bytes()))
}

#[test]
fn the_tests_signature_matches_the_js_sdk_documents_example() {
    // JS-SDK document, 附录1 (JS-SDK使用权限签名算法), the published example.
    assert_eq!(
        sha1_signature(
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
            "Wm3WZYTPz0wzccnW",
            1414587457,
            "http://mp.weixin.qq.com?params=value",
        ),
        "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    );
}

async fn sign(app: &TestApp, account: &str, url: &str) -> (u16, Value) {
    app.admin(
        "POST",
        &format!("/accounts/{account}/jsapi-signature"),
        Some(&json!({ "url": url })),
    )
    .await
}

fn check(body: &Value, ticket: &str, url_signed: &str, field: &str) {
    let ts = body["timestamp"].as_i64().unwrap();
    let nonce = body["nonce_str"].as_str().unwrap();
    assert_eq!(
        body[field].as_str().unwrap(),
        sha1_signature(ticket, nonce, ts, url_signed),
        "{field} of {body}"
    );
}

#[tokio::test]
async fn an_official_account_page_is_signed_with_its_jsapi_ticket_without_the_fragment() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    let (status, body) = sign(&app, "acme-plain", "https://shop.acme.com/p?x=1&y=2#/cart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["app_id"], MP_APP_ID);
    assert!(body.get("agent_signature").is_none(), "{body}");
    let now = crate::support::app::now() as i64;
    assert!(
        (body["timestamp"].as_i64().unwrap() - now).abs() < 120,
        "{body}"
    );
    let ticket = wechat.current_ticket(MP_APP_ID, "jsapi").unwrap();
    check(
        &body,
        &ticket,
        "https://shop.acme.com/p?x=1&y=2",
        "signature",
    );
    let sent = wechat.requests_to(GETTICKET);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].query.get("type").map(String::as_str), Some("jsapi"));

    // Not a page URL: refused before any WeChat call.
    for bad in [
        "",
        "javascript:alert(1)",
        "/relative/page",
        "https://a.com/x y",
    ] {
        let (status, body) = sign(&app, "acme-plain", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = sign(&app, "nope", "https://shop.acme.com/").await;
    assert_eq!(status, 404);
    assert_eq!(wechat.count(GETTICKET), 1);

    // gRPC: the same signature, from the same cached ticket.
    let mut client = GatewayClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let r = client
        .get_jsapi_signature(GetJsapiSignatureRequest {
            account_id: "acme-plain".into(),
            url: "https://shop.acme.com/q".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.app_id, MP_APP_ID);
    assert_eq!(
        r.signature,
        sha1_signature(
            &ticket,
            &r.nonce_str,
            r.timestamp,
            "https://shop.acme.com/q"
        )
    );
    assert!(r.agent_signature.is_empty());
    assert_eq!(wechat.count(GETTICKET), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_wecom_page_gets_the_corp_and_the_agent_signature() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    let (status, body) = sign(&app, "acme-work", "https://shop.acme.com/w#top").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["app_id"], WORK_CORP_ID);
    assert_eq!(body["agent_id"], 1000002);
    let corp = wechat.current_ticket(WORK_CORP_ID, "jsapi").unwrap();
    let agent = wechat.current_ticket(WORK_CORP_ID, "agent").unwrap();
    assert_ne!(corp, agent);
    check(&body, &corp, "https://shop.acme.com/w", "signature");
    check(&body, &agent, "https://shop.acme.com/w", "agent_signature");
    assert_eq!(wechat.count("/cgi-bin/get_jsapi_ticket"), 1);
    let agent_calls = wechat.requests_to("/cgi-bin/ticket/get");
    assert_eq!(agent_calls.len(), 1);
    assert_eq!(
        agent_calls[0].query.get("type").map(String::as_str),
        Some("agent_config")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_signatures_cost_one_ticket_fetch() {
    let wechat = FakeWeChat::start().await;
    // Slow, so that the twelve requests all arrive while the first fetch is out.
    wechat.delay(GETTICKET, Duration::from_millis(300));
    let (app, _dir) = app(&wechat).await;
    let requests = (0..12).map(|i| {
        let app = &app;
        async move { sign(app, "acme-plain", &format!("https://shop.acme.com/p{i}")).await }
    });
    let answers = futures::future::join_all(requests).await;
    let ticket = wechat.current_ticket(MP_APP_ID, "jsapi").unwrap();
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        check(
            body,
            &ticket,
            &format!("https://shop.acme.com/p{i}"),
            "signature",
        );
    }
    assert_eq!(wechat.count(GETTICKET), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_one_ticket() {
    let wechat = FakeWeChat::start().await;
    wechat.delay(GETTICKET, Duration::from_millis(300));
    let url = fresh_db_url().await;
    let mut apps = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let opts = AppOptions::redis(&url).wechat(&wechat.base());
        apps.push(spawn_app(opts, dir.path()).await);
        dirs.push(dir);
    }
    let requests = (0..12).map(|i| {
        let app = &apps[i % 2];
        async move { sign(app, "acme-plain", "https://shop.acme.com/").await }
    });
    let answers = futures::future::join_all(requests).await;
    let ticket = wechat.current_ticket(MP_APP_ID, "jsapi").unwrap();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        check(body, &ticket, "https://shop.acme.com/", "signature");
    }
    assert_eq!(wechat.count(GETTICKET), 1);
    assert_eq!(wechat.count("/cgi-bin/stable_token"), 1);
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_ticket_near_its_expiry_or_a_rejected_token_is_replaced() {
    let wechat = FakeWeChat::start().await;
    // Issued with 200 s left: inside the 300 s refresh window, so the next request replaces it.
    wechat.set_ticket_expires_in(200);
    let (app, _dir) = app(&wechat).await;
    let (status, _) = sign(&app, "acme-plain", "https://shop.acme.com/").await;
    assert_eq!(status, 200);
    let first = wechat.current_ticket(MP_APP_ID, "jsapi").unwrap();
    let (status, body) = sign(&app, "acme-plain", "https://shop.acme.com/").await;
    assert_eq!(status, 200, "{body}");
    let second = wechat.current_ticket(MP_APP_ID, "jsapi").unwrap();
    assert_ne!(first, second);
    check(&body, &second, "https://shop.acme.com/", "signature");
    assert_eq!(wechat.count(GETTICKET), 2);

    // The access token expired (42001) when the ticket is fetched (each ticket is issued near
    // its expiry, so each request fetches one): a new token, then the ticket.
    let tokens = wechat.count("/cgi-bin/stable_token");
    wechat.inject(GETTICKET, Injected::Errcode(42001), 1);
    let (status, body) = sign(&app, "acme-plain", "https://shop.acme.com/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(wechat.count("/cgi-bin/stable_token"), tokens + 1);
    // And one replaced elsewhere (40001 for the old one).
    wechat.invalidate_tokens();
    let (status, body) = sign(&app, "acme-plain", "https://shop.acme.com/").await;
    assert_eq!(status, 200, "{body}");
    check(
        &body,
        &wechat.current_ticket(MP_APP_ID, "jsapi").unwrap(),
        "https://shop.acme.com/",
        "signature",
    );
    assert_eq!(wechat.count("/cgi-bin/stable_token"), tokens + 2);

    // WeChat refusing the ticket itself is a 502 with its errcode, not a loop.
    wechat.inject(GETTICKET, Injected::Errcode(45009), 1);
    let (status, body) = sign(&app, "acme-plain", "https://shop.acme.com/").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("45009"),
        "{body}"
    );
    app.stop().await;
}
