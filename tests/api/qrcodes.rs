//! Acting on WeChat: parametric QR codes and contact-me codes through the admin API and gRPC, the
//! one token authority behind them (shared by instances on one Redis), and attribution of the
//! events a code brings to its label. WeChat is a fake (`support::fake_wechat`) that issues a
//! new token on every fetch and refuses any other with 40001.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{create_qr_code_request, send_message_request};
use wechat_gateway::pb::{CreateQrCodeRequest, SendMessageRequest, TextContent};

use crate::support::app::{
    now, spawn_app, AppOptions, TestApp, ADMIN_TOKEN, GRPC_TOKEN, MP_APP_ID, WORK_CORP_ID,
};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const WAIT: Duration = Duration::from_secs(20);
const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
const QRCODE_CREATE: &str = "/cgi-bin/qrcode/create";

/// `POST /admin/v1/accounts/{account}/qrcodes` with the admin token; status and JSON body.
async fn create_qr(app: &TestApp, account: &str, body: &Value) -> (u16, Value) {
    app.admin("POST", &format!("/accounts/{account}/qrcodes"), Some(body))
        .await
}

/// `n` instances on one redis database, all using the fake WeChat (and their directories).
async fn redis_apps(n: usize, wechat: &FakeWeChat) -> (Vec<TestApp>, Vec<tempfile::TempDir>) {
    let url = fresh_db_url().await;
    let mut apps = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        apps.push(spawn_app(AppOptions::redis(&url).wechat(&wechat.base()), dir.path()).await);
        dirs.push(dir);
    }
    (apps, dirs)
}

async fn app_with_wechat(
    wechat: &FakeWeChat,
    crm: Option<&FakeCrm>,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    if let Some(crm) = crm {
        opts = opts.crm(&crm.endpoint());
    }
    (spawn_app(opts, dir.path()).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_serving_60_concurrent_qr_requests_fetch_one_token() {
    let wechat = FakeWeChat::start().await;
    // A slow token answer keeps every instance waiting on the refresh at the same time.
    wechat.delay(STABLE_TOKEN, Duration::from_millis(300));
    let (apps, _dirs) = redis_apps(3, &wechat).await;
    let started = Instant::now();
    let requests = (0..60).map(|i| {
        let app = &apps[i % 3];
        async move {
            create_qr(
                app,
                "acme-mp",
                &json!({"scene": format!("crowd-{i}"), "label": "crowd"}),
            )
            .await
        }
    });
    let answers = futures::future::join_all(requests).await;
    let elapsed = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(
        wechat.count(STABLE_TOKEN),
        1,
        "one token fetch for 3 instances and 60 requests"
    );
    let calls = wechat.requests_to(QRCODE_CREATE);
    assert_eq!(calls.len(), 60, "no call was refused and retried");
    let token = wechat.current_token(MP_APP_ID).unwrap();
    assert!(calls.iter().all(|c| c.token() == token));
    eprintln!("60 QR codes through 3 instances in {elapsed:?}");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn an_injected_40001_costs_one_refresh_and_the_request_still_succeeds() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat, None).await;
    let (status, _) = create_qr(&app, "acme-mp", &json!({"scene": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(wechat.count(STABLE_TOKEN), 1);

    wechat.inject(QRCODE_CREATE, Injected::Errcode(40001), 1);
    let (status, body) = create_qr(&app, "acme-mp", &json!({"scene": 2})).await;
    assert_eq!(status, 200, "{body}");
    let fetches = wechat.requests_to(STABLE_TOKEN);
    assert_eq!(fetches.len(), 2, "exactly one refresh");
    assert_eq!(fetches[0].body["force_refresh"], false);
    assert_eq!(
        fetches[1].body["force_refresh"], true,
        "the rejected token was the cached one"
    );
    assert_eq!(fetches[1].body["appid"], MP_APP_ID);
    let calls = wechat.requests_to(QRCODE_CREATE);
    assert_eq!(calls.len(), 3, "the refused call was made once more");
    assert_eq!(calls[2].token(), wechat.current_token(MP_APP_ID).unwrap());
    assert_ne!(calls[1].token(), calls[2].token());

    // The next request uses the new token as it is: no fetch.
    let (status, _) = create_qr(&app, "acme-mp", &json!({"scene": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(wechat.count(STABLE_TOKEN), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rejected_everywhere_at_once_is_refreshed_once_and_not_again_once_replaced() {
    let wechat = FakeWeChat::start().await;
    let (apps, _dirs) = redis_apps(3, &wechat).await;
    assert_eq!(
        create_qr(&apps[0], "acme-mp", &json!({"scene": 1})).await.0,
        200
    );
    assert_eq!(wechat.count(STABLE_TOKEN), 1);

    // Another system forces a refresh: the cached token is dead for every instance. A slow
    // answer makes the 30 requests hold the dead token at the same time.
    wechat.invalidate_tokens();
    wechat.delay(QRCODE_CREATE, Duration::from_millis(200));
    let requests = (0..30).map(|i| {
        let app = &apps[i % 3];
        async move { create_qr(app, "acme-mp", &json!({"scene": 100 + i})).await }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    let fetches = wechat.requests_to(STABLE_TOKEN);
    assert_eq!(
        fetches.len(),
        2,
        "30 rejections across 3 instances cost one refresh: {:?}",
        fetches
            .iter()
            .map(|f| &f.body["force_refresh"])
            .collect::<Vec<_>>()
    );
    let forced = fetches
        .iter()
        .filter(|f| f.body["force_refresh"] == true)
        .count();
    assert!(forced <= 1, "{forced} forced refreshes");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn invalid_qr_inputs_are_refused_with_a_400_naming_the_rule_and_wechat_is_not_called() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat, None).await;
    let long = "x".repeat(65);
    let cases = [
        (
            "acme-mp",
            json!({"scene": 0, "permanent": true}),
            "QR_LIMIT_SCENE code must be 1 to 100000",
        ),
        (
            "acme-mp",
            json!({"scene": 100001, "permanent": true}),
            "1 to 100000, got 100001",
        ),
        (
            "acme-mp",
            json!({"scene": 0}),
            "QR_SCENE code must be 1 to 2147483647",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "expire_seconds": 59}),
            "60 to 2592000 seconds",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "expire_seconds": 2592001}),
            "60 to 2592000 seconds",
        ),
        (
            "acme-mp",
            json!({"scene": long, "permanent": true}),
            "1 to 64 characters, got 65",
        ),
        ("acme-mp", json!({"scene": ""}), "1 to 64 characters, got 0"),
        ("acme-mp", json!({"scene": 1.5}), "not an integer scene_id"),
        (
            "acme-mp",
            json!({"scene": true}),
            "must be a string (scene_str) or an integer",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "permanent": true, "expire_seconds": 600}),
            "does not expire",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "users": ["zhangsan"]}),
            "users: only a WeCom",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "label": "l".repeat(129)}),
            "label: at most 128",
        ),
        (
            "acme-mp",
            json!({"scene": "a", "colour": "red"}),
            "unknown field `colour`",
        ),
        (
            "acme-mp",
            json!({"permanent": true}),
            "missing field `scene`",
        ),
        (
            "acme-work",
            json!({"scene": "s".repeat(31), "users": ["zhangsan"]}),
            "1 to 30 characters, got 31",
        ),
        (
            "acme-work",
            json!({"scene": "booth"}),
            "needs 1 to 100 members",
        ),
        (
            "acme-work",
            json!({"scene": "booth", "users": ["u"], "expire_seconds": 600}),
            "does not expire",
        ),
    ];
    for (account, body, rule) in &cases {
        let (status, answer) = create_qr(&app, account, body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(rule),
            "{body}: {message:?} does not name {rule:?}"
        );
    }
    let resp = app
        .http
        .post(app.url("/admin/v1/accounts/acme-mp/qrcodes"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = create_qr(&app, "no-such-account", &json!({"scene": 1})).await;
    assert_eq!(status, 404);
    let resp = app
        .http
        .post(app.url("/admin/v1/accounts/acme-mp/qrcodes"))
        .json(&json!({"scene": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no admin token");
    assert!(
        wechat.requests().is_empty(),
        "WeChat was called: {:?}",
        wechat.requests()
    );
    app.stop().await;
}

fn mp_event_xml(from: &str, event: &str, key: &str) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>event</MsgType><Event>{event}</Event><EventKey>{key}</EventKey><Ticket>t</Ticket></xml>",
        now()
    )
}

#[tokio::test]
async fn a_qr_code_created_with_a_label_then_scanned_yields_events_carrying_the_label() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with_wechat(&wechat, Some(&crm)).await;
    let (status, code) = create_qr(
        &app,
        "acme-plain",
        &json!({"scene": "spring-expo", "expire_seconds": 604800, "label": "Spring Expo 2026",
                "metadata": {"campaign": "expo"}}),
    )
    .await;
    assert_eq!(status, 200, "{code}");
    assert_eq!(code["scene"], "spring-expo");
    let ticket = code["ticket"].as_str().unwrap();
    assert!(ticket.contains('+') && ticket.contains('/'), "{ticket}");
    assert_eq!(
        code["image_url"],
        format!(
            "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket={}",
            ticket
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        )
    );
    assert!(code["url"]
        .as_str()
        .unwrap()
        .starts_with("http://weixin.qq.com/q/"));
    let expire_at = code["expire_at"].as_str().unwrap();
    assert!(
        expire_at.ends_with('Z') && expire_at.contains('T'),
        "{expire_at}"
    );
    let sent = &wechat.requests_to(QRCODE_CREATE)[0].body;
    assert_eq!(sent["action_name"], "QR_STR_SCENE");
    assert_eq!(sent["expire_seconds"], 604800);
    assert_eq!(sent["action_info"]["scene"]["scene_str"], "spring-expo");

    let (status, code) = create_qr(
        &app,
        "acme-plain",
        &json!({"scene": 42, "permanent": true, "label": "Flyer"}),
    )
    .await;
    assert_eq!(status, 200, "{code}");
    assert_eq!(code["scene"], 42);
    assert_eq!(code["expire_at"], Value::Null);
    assert_eq!(
        wechat.requests_to(QRCODE_CREATE)[1].body["action_name"],
        "QR_LIMIT_SCENE"
    );

    for xml in [
        mp_event_xml("oNew", "subscribe", "qrscene_spring-expo"),
        mp_event_xml("oOld", "SCAN", "spring-expo"),
        mp_event_xml("oFlyer", "subscribe", "qrscene_42"),
        mp_event_xml("oOther", "SCAN", "never-created"),
        mp_event_xml("oPlain", "subscribe", ""),
    ] {
        assert_eq!(app.post_plain("acme-plain", &xml).await.status(), 200);
    }
    let events = crm.wait_for(|evs| evs.len() >= 5, WAIT).await;
    let label_of = |open_id: &str| {
        events
            .iter()
            .find(|e| e.open_id == open_id)
            .map(|e| e.label.clone())
            .unwrap()
    };
    assert_eq!(label_of("oNew"), "Spring Expo 2026");
    assert_eq!(label_of("oOld"), "Spring Expo 2026");
    assert_eq!(label_of("oFlyer"), "Flyer");
    assert_eq!(label_of("oOther"), "", "a scene the gateway did not create");
    assert_eq!(label_of("oPlain"), "");
    let new = events.iter().find(|e| e.open_id == "oNew").unwrap();
    assert!(matches!(&new.kind, Some(Kind::Subscribe(s)) if s.scene == "spring-expo"));
    app.stop().await;
}

#[tokio::test]
async fn a_wecom_contact_me_code_attributes_the_customers_it_brings_through_its_state() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with_wechat(&wechat, Some(&crm)).await;
    let (status, code) = create_qr(
        &app,
        "acme-work",
        &json!({"scene": "expo-booth-7", "label": "Booth 7", "users": ["zhangsan"]}),
    )
    .await;
    assert_eq!(status, 200, "{code}");
    assert!(
        code["ticket"].as_str().unwrap().starts_with("cfg"),
        "{code}"
    );
    assert!(code["image_url"]
        .as_str()
        .unwrap()
        .starts_with("https://wework.qpic.cn/"));
    let gettoken = &wechat.requests_to("/cgi-bin/gettoken")[0];
    assert_eq!(gettoken.query["corpid"], WORK_CORP_ID);
    let way = &wechat.requests_to("/cgi-bin/externalcontact/add_contact_way")[0];
    assert_eq!(way.body["state"], "expo-booth-7");
    assert_eq!(way.body["user"], json!(["zhangsan"]));
    assert_eq!(way.body["type"], 1);
    assert_eq!(way.body["scene"], 2);
    assert_eq!(way.token(), wechat.current_token(WORK_CORP_ID).unwrap());

    let contact = |external: &str, state: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
             <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
             <State><![CDATA[{state}]]></State><WelcomeCode><![CDATA[WELCOME]]></WelcomeCode></xml>",
            now()
        )
    };
    for xml in [
        contact("wmBooth", "expo-booth-7"),
        contact("wmElse", "other"),
    ] {
        assert_eq!(app.post_safe("acme-work", &xml).await.status(), 200);
    }
    let events = crm.wait_for(|evs| evs.len() >= 2, WAIT).await;
    let label_of = |external: &str| {
        events
            .iter()
            .find(|e| e.external_user_id == external)
            .map(|e| e.label.clone())
            .unwrap()
    };
    assert_eq!(label_of("wmBooth"), "Booth 7");
    assert_eq!(label_of("wmElse"), "");
    app.stop().await;
}

#[tokio::test]
async fn wechat_busy_is_retried_and_quota_and_whitelist_refusals_are_reported_without_retry() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat, None).await;
    wechat.inject(QRCODE_CREATE, Injected::Errcode(-1), 1);
    wechat.inject(QRCODE_CREATE, Injected::Status(502), 1);
    let (status, body) = create_qr(&app, "acme-mp", &json!({"scene": 5})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(wechat.count(QRCODE_CREATE), 3, "busy, 502, then success");

    for (errcode, code) in [
        (45009, "wechat_quota_exceeded"),
        (40164, "wechat_ip_not_whitelisted"),
        (40003, "wechat_error"),
    ] {
        let before = wechat.count(QRCODE_CREATE);
        wechat.inject(QRCODE_CREATE, Injected::Errcode(errcode), 1);
        let (status, body) = create_qr(&app, "acme-mp", &json!({"scene": 6})).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&errcode.to_string()), "{message}");
        assert_eq!(
            wechat.count(QRCODE_CREATE),
            before + 1,
            "{errcode} is not retried"
        );
    }

    wechat.inject(QRCODE_CREATE, Injected::Errcode(-1), 3);
    let (status, body) = create_qr(&app, "acme-mp", &json!({"scene": 7})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "wechat_busy");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let counted = |errcode: &str| {
        metrics.lines().any(|l| {
            l.starts_with("wgw_wechat_api_calls_total")
                && l.contains("account=\"acme-mp\"")
                && l.contains("api=\"qrcode/create\"")
                && l.contains(&format!("errcode=\"{errcode}\""))
        })
    };
    for errcode in ["0", "-1", "http_502", "45009", "40164"] {
        assert!(
            counted(errcode),
            "no count for errcode {errcode} in:\n{metrics}"
        );
    }
    // The token and the app secret never reach the metrics or an answer.
    let token = wechat.current_token(MP_APP_ID).unwrap();
    assert!(!metrics.contains(&token) && !metrics.contains("mp-secret"));
    app.stop().await;
}

#[tokio::test]
async fn grpc_create_qr_code_and_send_message_use_the_same_rules_as_the_admin_api() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with_wechat(&wechat, Some(&crm)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel.clone());
    let code = gateway
        .create_qr_code(CreateQrCodeRequest {
            account_id: "acme-plain".into(),
            scene: Some(create_qr_code_request::Scene::SceneId(7)),
            expire_seconds: 600,
            label: "Poster".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code.scene, "7");
    assert!(code
        .image_url
        .starts_with("https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH"));
    let expire_at = code.expire_at.unwrap().seconds as u64;
    assert!(
        (now() + 590..=now() + 610).contains(&expire_at),
        "{expire_at}"
    );
    assert_eq!(
        wechat.requests_to(QRCODE_CREATE)[0].body["action_name"],
        "QR_SCENE"
    );

    let refused = gateway
        .create_qr_code(CreateQrCodeRequest {
            account_id: "acme-plain".into(),
            scene: Some(create_qr_code_request::Scene::SceneId(100_001)),
            permanent: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("1 to 100000"),
        "{}",
        refused.message()
    );
    assert_eq!(
        refused.metadata().get("wgw-error-code").unwrap(),
        "invalid_request"
    );
    let unknown = gateway
        .create_qr_code(CreateQrCodeRequest {
            account_id: "nobody".into(),
            scene: Some(create_qr_code_request::Scene::SceneStr("x".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(
        wechat.count(QRCODE_CREATE),
        1,
        "refused requests never reach WeChat"
    );

    // A scan of the code made over gRPC carries its label too.
    let xml = mp_event_xml("oGrpc", "SCAN", "7");
    assert_eq!(app.post_plain("acme-plain", &xml).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oGrpc"), WAIT)
        .await;
    assert_eq!(
        events.iter().find(|e| e.open_id == "oGrpc").unwrap().label,
        "Poster"
    );

    gateway
        .send_message(SendMessageRequest {
            account_id: "acme-plain".into(),
            to_user: "oGrpc".into(),
            message: Some(send_message_request::Message::Text(TextContent {
                content: "你好".into(),
            })),
            // Inside the 48-hour window: the SCAN above was recorded as an interaction.
            ..Default::default()
        })
        .await
        .unwrap();
    let sent = &wechat.requests_to("/cgi-bin/message/custom/send")[0];
    assert_eq!(
        sent.body,
        json!({"touser": "oGrpc", "msgtype": "text", "text": {"content": "你好"}})
    );
    let empty = gateway
        .send_message(SendMessageRequest {
            account_id: "acme-plain".into(),
            to_user: "oGrpc".into(),
            message: Some(send_message_request::Message::Text(TextContent::default())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    let work = gateway
        .send_message(SendMessageRequest {
            account_id: "acme-work".into(),
            to_user: "zhangsan".into(),
            message: Some(send_message_request::Message::Text(TextContent {
                content: "hello".into(),
            })),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(work.msg_id.starts_with("msg"), "{work:?}");
    let sent = &wechat.requests_to("/cgi-bin/message/send")[0];
    assert_eq!(sent.body["agentid"], 1000002);
    assert_eq!(sent.body["touser"], "zhangsan");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "wechat_gateway.v1.Gateway".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_its_expiry_is_refreshed_once_while_requests_go_on_with_the_old_one() {
    let wechat = FakeWeChat::start().await;
    let (apps, _dirs) = redis_apps(2, &wechat).await;
    // The gateway refreshes 300 s ahead: a token of 301 s enters that window after 1 s.
    wechat.set_expires_in(301);
    assert_eq!(
        create_qr(&apps[0], "acme-mp", &json!({"scene": 1})).await.0,
        200
    );
    let old = wechat.current_token(MP_APP_ID).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    wechat.set_expires_in(7200);
    wechat.delay(STABLE_TOKEN, Duration::from_millis(300));
    let before = wechat.count(QRCODE_CREATE);
    let requests = (0..20).map(|i| {
        let app = &apps[i % 2];
        async move { create_qr(app, "acme-mp", &json!({"scene": 10 + i})).await }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(wechat.count(STABLE_TOKEN), 2, "one refresh ahead of expiry");
    let calls = wechat.requests_to(QRCODE_CREATE);
    let with_old = calls[before..].iter().filter(|c| c.token() == old).count();
    assert!(
        with_old > 0,
        "requests waited for the refresh instead of using the valid token"
    );
    let (status, _) = create_qr(&apps[1], "acme-mp", &json!({"scene": 99})).await;
    assert_eq!(status, 200);
    assert_eq!(
        wechat.requests_to(QRCODE_CREATE).last().unwrap().token(),
        wechat.current_token(MP_APP_ID).unwrap()
    );
    assert_eq!(wechat.count(STABLE_TOKEN), 2);
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_wechat_call_past_its_deadline_is_retried_then_reported_as_unreachable() {
    let wechat = FakeWeChat::start().await;
    wechat.delay(STABLE_TOKEN, Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.wechat_timeout_ms = 150;
    let app = spawn_app(opts, dir.path()).await;
    let started = Instant::now();
    let (status, body) = create_qr(&app, "acme-mp", &json!({"scene": 1})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "wechat_unreachable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after 3 attempts"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wechat.count(STABLE_TOKEN), 3, "three attempts");
    assert_eq!(wechat.count(QRCODE_CREATE), 0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wgw_wechat_api_calls_total")
                && l.contains("api=\"stable_token\"")
                && l.contains("errcode=\"timeout\"")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_grpc_tokens_configured_the_gateway_service_demands_one_but_health_does_not() {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.grpc_auth = true;
    let app = spawn_app(opts, dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel.clone());
    let request = |token: Option<&str>| {
        let mut r = tonic::Request::new(CreateQrCodeRequest {
            account_id: "acme-plain".into(),
            scene: Some(create_qr_code_request::Scene::SceneStr("grpc-auth".into())),
            label: "Auth".into(),
            ..Default::default()
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    for token in [None, Some("wrong-token-0123456789")] {
        let refused = gateway.create_qr_code(request(token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    assert_eq!(wechat.requests().len(), 0);
    gateway
        .create_qr_code(request(Some(GRPC_TOKEN)))
        .await
        .unwrap();
    assert_eq!(wechat.count(QRCODE_CREATE), 1);
    // Health needs no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fetch_is_reported_to_every_waiting_request_without_asking_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat, None).await;
    wechat.inject(STABLE_TOKEN, Injected::Errcode(45009), 100);
    wechat.delay(STABLE_TOKEN, Duration::from_millis(200));
    let requests = (0..20).map(|i| {
        let app = &app;
        async move { create_qr(app, "acme-mp", &json!({"scene": 1 + i})).await }
    });
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "wechat_quota_exceeded", "{body}");
    }
    assert_eq!(wechat.count(STABLE_TOKEN), 1, "the quota is not looped on");
    assert_eq!(wechat.count(QRCODE_CREATE), 0);
    app.stop().await;
}
