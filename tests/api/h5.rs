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
use wechat_gateway::pb::event::Kind;
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

// The OAuth entry: `GET /oauth/{account}` → WeChat's authorize page (the fake) → the callback →
// the return URL with the identity token, which the Python verifier of docs/h5.md accepts.

const IDENTITY_SECRET: &str = "test-identity-secret-0123456789abcdef";

async fn oauth_app(
    wechat: &FakeWeChat,
    crm: &crate::support::crm::FakeCrm,
    secret: Option<&str>,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    let mut toml = crate::support::app::config_toml(&opts);
    if let Some(secret) = secret {
        toml = toml.replace(
            "allowed_domains = [\"acme.com\", \"shop.example.cn\"]",
            &format!("allowed_domains = [\"acme.com\", \"shop.example.cn\"]\nidentity_secret = \"{secret}\""),
        );
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let config = wechat_gateway::config::load(&path).unwrap();
    (crate::support::app::spawn_configured(config).await, dir)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET without following redirects: status, Location and body.
async fn open(url: &str) -> (u16, String, String) {
    let resp = browser().get(url).send().await.unwrap();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        resp.status().as_u16(),
        location,
        resp.text().await.unwrap_or_default(),
    )
}

fn entry_url(app: &TestApp, account: &str, scope: &str, ret: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("scope", scope)
        .append_pair("return", ret)
        .finish();
    app.url(&format!("/oauth/{account}?{q}"))
}

/// Entry → authorize (the fake) → the callback URL, mapped to the app's real address.
async fn through_wechat(app: &TestApp, account: &str, scope: &str, ret: &str) -> String {
    let (status, authorize, body) = open(&entry_url(app, account, scope, ret)).await;
    assert_eq!(status, 302, "{body}");
    assert!(authorize.contains(&format!("scope={scope}")), "{authorize}");
    assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
    let (status, callback, _) = open(authorize.trim_end_matches("#wechat_redirect")).await;
    assert_eq!(status, 302);
    let path = callback
        .strip_prefix(crate::support::app::LINKS_BASE)
        .unwrap_or_else(|| panic!("{callback}"));
    app.url(path)
}

/// The verifier of docs/h5.md, run by python3: the claims, or the error it raised.
fn python_verify(token: &str, secret: &str, host: &str) -> Result<Value, String> {
    let doc = std::fs::read_to_string(crate::support::sandbox::root().join("docs/h5.md")).unwrap();
    let block = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/h5.md has a ```python block");
    let script = format!(
        "{block}\nimport sys\nprint(json.dumps(verify(sys.argv[1], sys.argv[2].encode(), sys.argv[3])))\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script, token, secret, host])
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn token_of(location: &str) -> String {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "identity_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no token in {location}"))
}

#[tokio::test]
async fn both_scopes_identify_the_follower_with_an_event_and_a_token_the_documented_verifier_accepts(
) {
    let wechat = FakeWeChat::start().await;
    let crm = crate::support::crm::FakeCrm::start().await;
    let (app, _dir) = oauth_app(&wechat, &crm, Some(IDENTITY_SECRET)).await;
    wechat.set_oauth_user("oAliceH5");
    let ret = "https://shop.acme.com/welcome?from=menu#top";

    let callback = through_wechat(&app, "acme-plain", "snsapi_userinfo", ret).await;
    let (status, back, body) = open(&callback).await;
    assert_eq!(status, 302, "{body}");
    assert!(
        back.starts_with("https://shop.acme.com/welcome?from=menu&identity_token="),
        "{back}"
    );
    assert!(back.ends_with("#top"), "{back}");
    let token = token_of(&back);
    let claims = python_verify(&token, IDENTITY_SECRET, "shop.acme.com").unwrap();
    assert_eq!(claims["sub"], "oAliceH5");
    assert_eq!(claims["union_id"], "union-oAliceH5");
    assert_eq!(claims["scope"], "snsapi_userinfo");
    assert_eq!(claims["account"], "acme-plain");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    // The verifier refuses another secret, another host and a tampered token.
    assert!(python_verify(
        &token,
        "another-secret-0123456789abcdef0123",
        "shop.acme.com"
    )
    .is_err());
    assert!(python_verify(&token, IDENTITY_SECRET, "evil.example.com").is_err());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = serde_json::to_vec(&json!({"sub": "oMallory"})).unwrap();
    parts[1] = base64_url(&forged);
    assert!(python_verify(&parts.join("."), IDENTITY_SECRET, "shop.acme.com").is_err());
    assert_eq!(wechat.count("/sns/userinfo"), 1);

    wechat.set_oauth_user("oBobH5");
    let callback = through_wechat(&app, "acme-plain", "snsapi_base", "https://acme.com/").await;
    let (status, back, _) = open(&callback).await;
    assert_eq!(status, 302);
    let claims = python_verify(&token_of(&back), IDENTITY_SECRET, "acme.com").unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some("oBobH5"), Some("snsapi_base"))
    );
    assert_eq!(
        wechat.count("/sns/userinfo"),
        1,
        "snsapi_base reads no profile"
    );

    let events = crm
        .wait_for(
            |e| {
                e.iter()
                    .filter(|e| matches!(e.kind, Some(Kind::H5Identified(_))))
                    .count()
                    >= 2
            },
            Duration::from_secs(20),
        )
        .await;
    let identified: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::H5Identified(h)) => Some((e, h)),
            _ => None,
        })
        .collect();
    assert_eq!(identified.len(), 2);
    let (alice, profile) = identified
        .iter()
        .find(|(e, _)| e.open_id == "oAliceH5")
        .unwrap();
    assert_eq!(alice.union_id, "union-oAliceH5");
    assert_eq!(profile.nickname, "Alice 爱丽丝");
    assert_eq!(
        profile.avatar_url,
        "https://thirdwx.qlogo.cn/mmopen/fake/132"
    );
    assert_eq!(profile.return_host, "shop.acme.com");
    let (_, bob) = identified
        .iter()
        .find(|(e, _)| e.open_id == "oBobH5")
        .unwrap();
    assert_eq!(
        (bob.scope.as_str(), bob.nickname.as_str()),
        ("snsapi_base", "")
    );
    // The recorder is one per test process (other tests count too): at least these two.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(oauth_count(&metrics, "identified") >= 2, "{metrics}");
    app.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn bad_return_urls_replayed_or_forged_states_and_refused_codes_get_clear_errors() {
    let wechat = FakeWeChat::start().await;
    let crm = crate::support::crm::FakeCrm::start().await;
    let (app, _dir) = oauth_app(&wechat, &crm, Some(IDENTITY_SECRET)).await;

    // A return URL off links.allowed_domains, or not https: 400 before WeChat.
    for bad in [
        "https://evil.example.com/",
        "http://acme.com/",
        "https://acme.com:8443/",
        "",
    ] {
        let (status, _, body) = open(&entry_url(&app, "acme-plain", "snsapi_base", bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("return"), "{body}");
    }
    let (status, _, _) = open(&entry_url(
        &app,
        "acme-plain",
        "snsapi_login",
        "https://acme.com/",
    ))
    .await;
    assert_eq!(status, 400);
    // WeCom: not supported; unknown account: 404.
    let (status, _, body) = open(&entry_url(
        &app,
        "acme-work",
        "snsapi_base",
        "https://acme.com/",
    ))
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not supported"), "{body}");
    let (status, _, _) = open(&entry_url(&app, "nope", "snsapi_base", "https://acme.com/")).await;
    assert_eq!(status, 404);

    // A callback used twice: the second is refused before any WeChat call.
    let callback = through_wechat(&app, "acme-plain", "snsapi_base", "https://acme.com/").await;
    assert_eq!(open(&callback).await.0, 302);
    let exchanges = wechat.count("/sns/oauth2/access_token");
    let (status, _, body) = open(&callback).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("already used"), "{body}");
    assert_eq!(wechat.count("/sns/oauth2/access_token"), exchanges);

    // A state for another return URL (the return swapped), or made up: 400, no WeChat call.
    let callback = through_wechat(&app, "acme-plain", "snsapi_base", "https://acme.com/").await;
    let swapped = callback.replace(
        "return=https%3A%2F%2Facme.com%2F",
        "return=https%3A%2F%2Fshop.acme.com%2F",
    );
    assert_ne!(swapped, callback);
    let (status, _, body) = open(&swapped).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid or expired"), "{body}");
    let forged = format!(
        "{}&state=AAAAAAAAAAAAAAAA9999999999{}",
        callback.split("&state=").next().unwrap(),
        "0".repeat(32)
    );
    let (status, _, _) = open(&forged).await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count("/sns/oauth2/access_token"), exchanges);

    // WeChat refuses the code (40029): a clear 502 page naming the errcode.
    let callback = through_wechat(&app, "acme-plain", "snsapi_base", "https://acme.com/").await;
    let bad_code = callback.replace("code=oauthcode", "code=bogus");
    let (status, _, body) = open(&bad_code).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("40029"), "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for outcome in ["bad_request", "replayed", "bad_state", "wechat_error"] {
        assert!(oauth_count(&metrics, outcome) >= 1, "{outcome}: {metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_an_identity_secret_the_entry_says_it_is_off() {
    let wechat = FakeWeChat::start().await;
    let crm = crate::support::crm::FakeCrm::start().await;
    let (app, _dir) = oauth_app(&wechat, &crm, None).await;
    let (status, _, body) = open(&entry_url(
        &app,
        "acme-plain",
        "snsapi_base",
        "https://acme.com/",
    ))
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("links.identity_secret"), "{body}");
    assert_eq!(wechat.count("/connect/oauth2/authorize"), 0);
    app.stop().await;
}

/// The value of `wgw_identity_oauth_total{account="acme-plain",outcome}`.
fn oauth_count(metrics: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wgw_identity_oauth_total{")
                && l.contains("account=\"acme-plain\"")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
