//! `wechat-gateway sandbox` (the real binary, on the example configuration): the admin routes and
//! the gRPC `Gateway` rpcs that call WeChat work offline against its fake, and a mass send
//! finishes through the MASSSENDJOBFINISH the fake sends back, signed and sealed.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use wechat_gateway::pb;
use wechat_gateway::pb::gateway_client::GatewayClient;

use crate::support::sandbox::{SandboxProcess, EXAMPLE_ADMIN_TOKEN};

struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    fn new(sandbox: &SandboxProcess) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("{}/admin/v1/accounts", sandbox.base()),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}/{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        }
        .bearer_auth(EXAMPLE_ADMIN_TOKEN);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Asserts a 2xx and returns the body.
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    /// Polls a broadcast job until `done` holds of it.
    async fn job_until(&self, account: &str, job: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self
                .ok("GET", &format!("{account}/broadcasts/{job}"), None)
                .await;
            if done(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} never got there: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_route_that_calls_wechat_works_against_the_sandbox() {
    let sandbox = SandboxProcess::start(&[]).await;
    let admin = Admin::new(&sandbox);

    // QR codes: a parametric code on the Official Account, a contact-me code on WeCom.
    let qr = admin
        .ok(
            "POST",
            "demo-mp/qrcodes",
            Some(json!({"scene": "spring-expo", "expire_seconds": 600, "label": "Expo"})),
        )
        .await;
    assert!(
        qr["ticket"].as_str().unwrap().starts_with("gQSandbox"),
        "{qr}"
    );
    assert!(qr["image_url"]
        .as_str()
        .unwrap()
        .contains("showqrcode?ticket=gQSandbox"));
    assert!(qr["expire_at"].is_string(), "{qr}");
    let permanent = admin
        .ok(
            "POST",
            "demo-mp/qrcodes",
            Some(json!({"scene": 42, "permanent": true})),
        )
        .await;
    assert!(permanent["expire_at"].is_null(), "{permanent}");
    let way = admin
        .ok(
            "POST",
            "demo-work/qrcodes",
            Some(json!({"scene": "booth-7", "users": ["zhangsan"]})),
        )
        .await;
    assert!(
        way["ticket"]
            .as_str()
            .unwrap()
            .starts_with("sandbox-config-"),
        "{way}"
    );

    // Menus: publish, read back (no drift), a conditional menu, trymatch, delete.
    let menu: Value =
        serde_json::from_str(&std::fs::read_to_string("examples/menu.json").unwrap()).unwrap();
    for account in ["demo-mp", "demo-work"] {
        let (status, empty) = admin.call("GET", &format!("{account}/menu"), None).await;
        assert_eq!(status, StatusCode::OK, "{empty}");
        assert_eq!(empty["button"], json!([]), "{empty}");
        let v = admin
            .ok("PUT", &format!("{account}/menu"), Some(menu.clone()))
            .await;
        assert_eq!(v["version"], 1, "{v}");
        let live = admin.ok("GET", &format!("{account}/menu"), None).await;
        assert_eq!(live["drift"], false, "{live}");
        assert_eq!(live["button"], menu["button"], "{live}");
    }
    let mut conditional = menu.clone();
    conditional["matchrule"] = json!({"tag_id": "100"});
    let added = admin
        .ok("POST", "demo-mp/menu/conditional", Some(conditional))
        .await;
    let menuid = added["menuid"].as_str().unwrap().to_owned();
    let live = admin.ok("GET", "demo-mp/menu", None).await;
    assert_eq!(
        live["conditionalmenu"][0]["menuid"].to_string(),
        menuid,
        "{live}"
    );
    admin
        .ok(
            "POST",
            "demo-mp/menu/trymatch",
            Some(json!({"user_id": "oSimulatedFollower000000000"})),
        )
        .await;
    admin
        .ok(
            "DELETE",
            &format!("demo-mp/menu/conditional/{menuid}"),
            None,
        )
        .await;
    admin.ok("DELETE", "demo-mp/menu", None).await;
    let gone = admin.ok("GET", "demo-mp/menu", None).await;
    assert_eq!(gone["button"], json!([]), "{gone}");
    assert_eq!(gone["drift"], false, "{gone}");

    // Tags, then a broadcast to the tag, finished by the fake's MASSSENDJOBFINISH.
    let tag = admin
        .ok("POST", "demo-mp/tags", Some(json!({"name": "vip"})))
        .await;
    let tag_id = tag["tag_id"].as_u64().unwrap();
    assert_eq!(tag_id, 100);
    let (status, taken) = admin
        .call("POST", "demo-mp/tags", Some(json!({"name": "vip"})))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "45157 is a taken name: {taken}"
    );
    let members = admin
        .ok(
            "POST",
            &format!("demo-mp/tags/{tag_id}/members"),
            Some(json!({"open_ids": ["oA1", "oA2", "oA3"]})),
        )
        .await;
    assert_eq!(members["users"], 3, "{members}");
    let job = admin
        .ok(
            "POST",
            "demo-mp/broadcasts",
            Some(json!({"audience": {"tag_id": tag_id}, "message": {"text": {"content": "hi"}}})),
        )
        .await;
    let job_id = job["job_id"].as_str().unwrap();
    let done = admin
        .job_until("demo-mp", job_id, |j| j["status"] == "finished")
        .await;
    let batch = &done["batches"][0];
    assert_eq!(batch["total"], 3, "{done}");
    assert_eq!(batch["sent"], 3, "{done}");
    assert_eq!(batch["wechat_status"], "send success", "{done}");
    assert_eq!(batch["result_source"], "callback", "{done}");
    // The MASSSENDJOBFINISH also went out as an event, attributed to the job.
    sandbox
        .wait_for_line(&[job_id, "send success", "demo-mp"])
        .await;

    // An article to a list, previewed first, then deleted once sent.
    admin
        .ok(
            "POST",
            "demo-mp/broadcasts/preview",
            Some(json!({"open_id": "oA1", "message": {"mpnews": {"media_id": "M1"}}})),
        )
        .await;
    let article = admin
        .ok(
            "POST",
            "demo-mp/broadcasts",
            Some(json!({"audience": {"open_ids": ["oA1", "oA2"]},
                "message": {"mpnews": {"media_id": "M1"}}, "client_msg_id": "sandbox-test-1"})),
        )
        .await;
    let article_id = article["job_id"].as_str().unwrap();
    admin
        .job_until("demo-mp", article_id, |j| j["status"] == "finished")
        .await;
    let deleted = admin
        .ok("DELETE", &format!("demo-mp/broadcasts/{article_id}"), None)
        .await;
    assert_eq!(deleted["batches"][0]["deleted"], true, "{deleted}");

    // WeCom: a group message, confirmed by its sender.
    let group = admin
        .ok(
            "POST",
            "demo-work/broadcasts",
            Some(
                json!({"audience": {"external_user_ids": ["wmX1"], "sender": "zhangsan"},
                "message": {"text": {"content": "新品上市"}}}),
            ),
        )
        .await;
    let group_id = group["job_id"].as_str().unwrap();
    let confirmed = admin
        .job_until("demo-work", group_id, |j| {
            j["batches"][0]["wechat_status"] == "confirmed"
        })
        .await;
    assert!(
        confirmed["batches"][0]["msg_id"]
            .as_str()
            .unwrap()
            .starts_with("msgSandbox-demo-work-"),
        "{confirmed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_rpcs_work_against_the_sandbox() {
    let sandbox = SandboxProcess::start(&[]).await;
    let mut client = GatewayClient::connect(format!("http://{}", sandbox.grpc))
        .await
        .unwrap();
    let qr = client
        .create_qr_code(pb::CreateQrCodeRequest {
            account_id: "demo-mp".into(),
            scene: Some(pb::create_qr_code_request::Scene::SceneStr("grpc".into())),
            label: "gRPC".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(qr.ticket.starts_with("gQSandbox"), "{qr:?}");

    let menu = std::fs::read_to_string("examples/menu.json").unwrap();
    let set = client
        .set_menu(pb::SetMenuRequest {
            account_id: "demo-work".into(),
            menu_json: menu.clone(),
            conditional: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.version, 1);
    let got = client
        .get_menu(pb::GetMenuRequest {
            account_id: "demo-work".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.drift);
    let live: Value = serde_json::from_str(&got.menu_json).unwrap();
    let sent: Value = serde_json::from_str(&menu).unwrap();
    assert_eq!(live["button"], sent["button"]);
    client
        .delete_menu(pb::DeleteMenuRequest {
            account_id: "demo-work".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    for account in ["demo-mp", "demo-work"] {
        client
            .send_message(pb::SendMessageRequest {
                account_id: account.into(),
                to_user: "oSimulatedFollower000000000".into(),
                message: Some(pb::send_message_request::Message::Text(pb::TextContent {
                    content: "hello".into(),
                })),
                // No callback from this follower came first: the 48-hour window is not what
                // this test is about (tests/api/messages.rs is).
                ignore_window: true,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{account}: {e:?}"));
    }

    let job = client
        .send_broadcast(pb::SendBroadcastRequest {
            account_id: "demo-mp".into(),
            audience: Some(pb::send_broadcast_request::Audience::All(true)),
            message_json: r#"{"text": {"content": "to everyone"}}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = loop {
        let got = client
            .get_broadcast(pb::GetBroadcastRequest {
                account_id: "demo-mp".into(),
                job_id: job.job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.status == "finished" {
            break got;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Everyone: the sandbox's three followers.
    assert_eq!(finished.batches[0].sent, 3, "{finished:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tracked_link_opened_in_wechat_identifies_the_follower_through_the_fake_oauth() {
    let sandbox = SandboxProcess::start(&[]).await;
    let admin = Admin::new(&sandbox);
    let link = admin
        .ok(
            "POST",
            "demo-mp/links",
            Some(json!({"target": "https://shop.example.com/a", "label": "sandbox link"})),
        )
        .await;
    let mut url = link["url"].as_str().unwrap().to_owned();
    // /l/ → the fake's authorize page → /l/.../oauth?code= → the target.
    for _ in 0..3 {
        let r = admin
            .http
            .get(&url)
            .header("User-Agent", "Mozilla/5.0 MicroMessenger/8.0.47")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{url}");
        url = r.headers()["location"].to_str().unwrap().to_owned();
        if url.starts_with("https://shop.example.com") {
            break;
        }
    }
    assert_eq!(url, "https://shop.example.com/a");
    sandbox
        .wait_for_line(&[
            "oSimulatedFollower000000000",
            "sandbox link",
            "https://shop.example.com/a",
        ])
        .await;
}
