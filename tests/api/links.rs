//! Tracked links: created through the admin API and gRPC, limited to the configured domains;
//! opened inside WeChat they go through the fake's web OAuth (`snsapi_base`) and yield a
//! `LinkClick` event with the follower's openid; opened elsewhere, an anonymous click.
//! Redirects are followed by hand, as a browser would.

use std::time::Duration;

use reqwest::header::{LOCATION, USER_AGENT};
use serde_json::{json, Value};
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{CreateLinkRequest, Event, ListLinksRequest};

use crate::support::app::{spawn_app, AppOptions, TestApp, LINKS_BASE, MP_APP_ID};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::FakeWeChat;

const TOKEN: &str = "test-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);
pub const IN_WECHAT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) \
    NetType/WIFI Language/zh_CN";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0";
const ACCESS_TOKEN: &str = "/sns/oauth2/access_token";

pub async fn app_with(wechat: &FakeWeChat, crm: &FakeCrm) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    (spawn_app(opts, dir.path()).await, dir)
}

/// `POST /admin/v1/accounts/{account}/links`: status and JSON body.
pub async fn create_link(app: &TestApp, account: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .http
        .post(app.url(&format!("/admin/v1/accounts/{account}/links")))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A client that does not follow redirects: each hop is looked at.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The gateway's public URL as the test can reach it (`links.public_base_url` is a name the
/// test machine does not resolve).
fn reachable(app: &TestApp, url: &str) -> String {
    let path = url
        .strip_prefix(LINKS_BASE)
        .unwrap_or_else(|| panic!("{url} is not under {LINKS_BASE}"));
    app.url(path)
}

/// GET with a user agent; status and Location.
async fn get(url: &str, ua: &str) -> (u16, String) {
    let resp = browser()
        .get(url)
        .header(USER_AGENT, ua)
        .send()
        .await
        .unwrap();
    let location = resp
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), location)
}

fn query_param(url: &str, name: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// Opens a link the way WeChat's in-app browser does, through the fake OAuth: the gateway's
/// 302 into OAuth, WeChat's 302 back, the gateway's 302 to the target. Returns the callback
/// URL (to reload it) and the final Location.
pub async fn open_in_wechat(app: &TestApp, short_url: &str) -> (String, String) {
    let (status, to_oauth) = get(&reachable(app, short_url), IN_WECHAT).await;
    assert_eq!(status, 302);
    let (status, back) = get(&to_oauth, IN_WECHAT).await;
    assert_eq!(
        status, 302,
        "the fake's OAuth did not send the browser back"
    );
    let callback = reachable(app, &back);
    let (status, target) = get(&callback, IN_WECHAT).await;
    assert_eq!(status, 302);
    (callback, target)
}

fn clicks(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::LinkClick(_))))
        .collect()
}

fn click_of(e: &Event) -> &wechat_gateway::pb::LinkClick {
    match &e.kind {
        Some(Kind::LinkClick(c)) => c,
        other => panic!("not a link click: {other:?}"),
    }
}

#[tokio::test]
async fn a_link_opened_inside_wechat_goes_through_oauth_and_yields_a_click_with_the_openid() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let (status, link) = create_link(
        &app,
        "acme-mp",
        &json!({"target": "https://shop.acme.com/spring?utm_source=wechat", "label": "Spring sale"}),
    )
    .await;
    assert_eq!(status, 200, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 22);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    assert_eq!(link["url"], format!("{LINKS_BASE}/l/acme-mp/{code}"));
    assert_eq!(
        link["target"],
        "https://shop.acme.com/spring?utm_source=wechat"
    );
    assert_eq!(link["label"], "Spring sale");

    // Hop 1: the gateway sends the in-app browser into WeChat's web OAuth, silently.
    let short = link["url"].as_str().unwrap();
    let (status, to_oauth) = get(&reachable(&app, short), IN_WECHAT).await;
    assert_eq!(status, 302);
    assert!(
        to_oauth.starts_with(&format!("{}/connect/oauth2/authorize?", wechat.base())),
        "{to_oauth}"
    );
    assert!(to_oauth.ends_with("#wechat_redirect"), "{to_oauth}");
    assert_eq!(query_param(&to_oauth, "appid"), MP_APP_ID);
    assert_eq!(query_param(&to_oauth, "scope"), "snsapi_base");
    assert_eq!(query_param(&to_oauth, "response_type"), "code");
    assert_eq!(
        query_param(&to_oauth, "redirect_uri"),
        format!("{LINKS_BASE}/l/acme-mp/{code}/oauth")
    );
    let state = query_param(&to_oauth, "state");
    assert!(
        state.len() <= 128 && state.bytes().all(|b| b.is_ascii_alphanumeric()),
        "WeChat allows only [a-zA-Z0-9]{{0,128}} in state: {state}"
    );
    assert!(!state.contains("shop.acme.com"), "the target never travels");

    // Hop 2: WeChat sends it back with a code; hop 3: the gateway redirects to the target.
    wechat.set_oauth_user("oClicker");
    let (status, back) = get(&to_oauth, IN_WECHAT).await;
    assert_eq!(status, 302);
    let callback = reachable(&app, &back);
    let (status, target) = get(&callback, IN_WECHAT).await;
    assert_eq!(status, 302);
    assert_eq!(target, "https://shop.acme.com/spring?utm_source=wechat");

    let exchange = &wechat.requests_to(ACCESS_TOKEN)[0];
    assert_eq!(exchange.query["appid"], MP_APP_ID);
    assert_eq!(exchange.query["secret"], "mp-secret");
    assert_eq!(exchange.query["code"], query_param(&back, "code"));
    assert_eq!(exchange.query["grant_type"], "authorization_code");

    let events = crm.wait_for(|evs| !clicks(evs).is_empty(), WAIT).await;
    let click = clicks(&events)[0];
    assert_eq!(click.open_id, "oClicker");
    assert_eq!(click.account_id, "acme-mp");
    assert!(click.occurred_at.is_some());
    let c = click_of(click);
    assert_eq!(c.code, code);
    assert_eq!(c.label, "Spring sale");
    assert_eq!(c.target, "https://shop.acme.com/spring?utm_source=wechat");
    assert!(!c.anonymous);
    // The forwarder enriched it like any event of a follower.
    assert_eq!(click.union_id, "union-oClicker");

    // The callback again (a reload, or someone replaying it with another code): the state was
    // used, so it is refused before WeChat is asked anything, and no second click is recorded.
    let (status, _) = get(&callback, IN_WECHAT).await;
    assert_eq!(status, 400, "a used state is refused");
    let replayed = format!(
        "{}?code=another&state={}",
        callback.split('?').next().unwrap(),
        query_param(&callback, "state")
    );
    let (status, _) = get(&replayed, IN_WECHAT).await;
    assert_eq!(
        status, 400,
        "a used state is refused with any code: {replayed}"
    );
    assert_eq!(
        wechat.count(ACCESS_TOKEN),
        1,
        "WeChat saw exactly one OAuth exchange"
    );
    // A sentinel: an anonymous open, delivered after anything recorded before it.
    let (status, _) = get(&reachable(&app, short), BROWSER).await;
    assert_eq!(status, 302);
    let events = crm
        .wait_for(
            |evs| clicks(evs).iter().any(|e| click_of(e).anonymous),
            WAIT,
        )
        .await;
    let identified: Vec<_> = clicks(&events)
        .into_iter()
        .filter(|e| !click_of(e).anonymous)
        .collect();
    assert_eq!(identified.len(), 1, "{identified:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_link_opened_elsewhere_or_with_a_forged_state_is_an_anonymous_click_to_the_stored_target()
{
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let (_, mp) = create_link(
        &app,
        "acme-mp",
        &json!({"target": "https://acme.com/a", "label": "A"}),
    )
    .await;
    let (status, work) = create_link(
        &app,
        "acme-work",
        &json!({"target": "https://acme.com/w", "label": "W"}),
    )
    .await;
    assert_eq!(status, 200, "{work}");

    // A desktop browser: straight to the target.
    let (status, location) = get(&reachable(&app, mp["url"].as_str().unwrap()), BROWSER).await;
    assert_eq!((status, location.as_str()), (302, "https://acme.com/a"));
    // A WeCom account has no Official Account OAuth: anonymous even inside WeChat.
    let (status, location) = get(&reachable(&app, work["url"].as_str().unwrap()), IN_WECHAT).await;
    assert_eq!((status, location.as_str()), (302, "https://acme.com/w"));
    // A callback whose state the gateway did not sign: no exchange, anonymous, and the
    // redirect goes to the stored target whatever the query says.
    let code = mp["code"].as_str().unwrap();
    let forged = app.url(&format!(
        "/l/acme-mp/{code}/oauth?code=stolen&state={}&target=https://evil.com/",
        "A".repeat(58)
    ));
    let (status, location) = get(&forged, IN_WECHAT).await;
    assert_eq!((status, location.as_str()), (302, "https://acme.com/a"));
    assert_eq!(wechat.count(ACCESS_TOKEN), 0);

    let events = crm.wait_for(|evs| clicks(evs).len() >= 3, WAIT).await;
    for e in clicks(&events) {
        assert!(click_of(e).anonymous, "{e:?}");
        assert_eq!(e.open_id, "");
        assert!(e.profile.is_none());
    }
    assert_eq!(
        clicks(&events)
            .iter()
            .filter(|e| e.account_id == "acme-work")
            .count(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn foreign_targets_are_refused_at_creation_with_the_rule_named_and_unknown_codes_get_404() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    for (target, rule) in [
        ("https://evil.com/", "not one of links.allowed_domains"),
        (
            "https://acme.com.evil.com/",
            "not one of links.allowed_domains",
        ),
        ("https://notacme.com/", "not one of links.allowed_domains"),
        ("http://acme.com/", "must be an https:// URL"),
        ("https://acme.com@evil.com/", "user name or password"),
        ("https://acme.com:8443/", "port"),
        ("https://acme.com\\@evil.com/", "backslashes"),
        ("https://127.0.0.1/", "IP address"),
        ("javascript:alert(1)", "https://"),
        ("", "required"),
    ] {
        let (status, body) = create_link(&app, "acme-mp", &json!({"target": target})).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{target}: {message}");
    }
    let (status, body) = create_link(
        &app,
        "acme-mp",
        &json!({"target": "https://acme.com/", "label": "x".repeat(129)}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("label"));
    let (status, _) = create_link(&app, "nope", &json!({"target": "https://acme.com/"})).await;
    assert_eq!(status, 404);
    let unauthenticated = app
        .http
        .post(app.url("/admin/v1/accounts/acme-mp/links"))
        .json(&json!({"target": "https://acme.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // Nothing refused was stored: the list holds only the link created next.
    let (status, ok) = create_link(
        &app,
        "acme-mp",
        &json!({"target": "https://shop.example.cn/x", "label": "ok"}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let list: Value = app
        .http
        .get(app.url("/admin/v1/accounts/acme-mp/links"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["links"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["links"][0]["code"], ok["code"]);

    let code = ok["code"].as_str().unwrap();
    for path in [
        "/l/acme-mp/AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "/l/acme-mp/short".to_owned(),
        format!("/l/acme-work/{code}"),
        format!("/l/nope/{code}"),
        "/l/acme-mp/AAAAAAAAAAAAAAAAAAAAAA/oauth?code=c&state=s".to_owned(),
    ] {
        let resp = browser().get(app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.headers().get(LOCATION).is_none());
        assert!(resp.text().await.unwrap().contains("does not exist"));
    }
    assert!(wechat.requests().is_empty(), "{:?}", wechat.requests());
    app.stop().await;
}

#[tokio::test]
async fn grpc_create_link_and_list_links_apply_the_same_rules() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let mut client = GatewayClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let refused = client
        .create_link(CreateLinkRequest {
            account_id: "acme-mp".into(),
            target: "https://evil.com/".into(),
            label: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("links.allowed_domains"));
    let created = client
        .create_link(CreateLinkRequest {
            account_id: "acme-mp".into(),
            target: "https://acme.com/grpc".into(),
            label: "from the CRM".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.url,
        format!("{LINKS_BASE}/l/acme-mp/{}", created.code)
    );
    let listed = client
        .list_links(ListLinksRequest {
            account_id: "acme-mp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.links, vec![created]);
    app.stop().await;
}

#[tokio::test]
async fn anonymous_opens_from_one_client_make_one_event_per_link_per_window_but_always_redirect() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    let (_, mut config) = crate::support::app::load_config(dir.path(), &opts);
    // Long enough that six opens fit in it on a loaded CI machine (2 s did not, once).
    config.links.anonymous_click_window = Duration::from_secs(6);
    let app = crate::support::app::spawn_configured(config).await;
    let mut urls = Vec::new();
    for target in ["https://acme.com/a", "https://acme.com/b"] {
        let (status, link) = create_link(&app, "acme-mp", &json!({"target": target})).await;
        assert_eq!(status, 200, "{link}");
        urls.push((reachable(&app, link["url"].as_str().unwrap()), target));
    }
    let (a, b) = (&urls[0], &urls[1]);
    for _ in 0..5 {
        let (status, location) = get(&a.0, BROWSER).await;
        assert_eq!(
            (status, location.as_str()),
            (302, a.1),
            "every open redirects"
        );
    }
    // Another link from the same client has its own allowance: a sentinel for the first five.
    assert_eq!(get(&b.0, BROWSER).await.0, 302);
    let events = crm
        .wait_for(
            |evs| clicks(evs).iter().any(|e| click_of(e).target == b.1),
            WAIT,
        )
        .await;
    let on_a = |evs: &[Event]| {
        clicks(evs)
            .iter()
            .filter(|e| click_of(e).target == a.1)
            .count()
    };
    assert_eq!(on_a(&events), 1, "five opens in the window, one event");

    // After the window, the next open is an event again.
    tokio::time::sleep(Duration::from_millis(6100)).await;
    assert_eq!(get(&a.0, BROWSER).await.0, 302);
    let events = crm.wait_for(|evs| on_a(evs) >= 2, WAIT).await;
    assert_eq!(on_a(&events), 2);
    app.stop().await;
}
