//! The admin API: authentication on every route, JSON errors, dead letters and their replay.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{now, spawn_app, AppOptions};
use crate::support::crm::FakeCrm;

const TOKEN: &str = "test-admin-token-0123456789";

fn text_xml(from: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><Content>hi</Content><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_token_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    for (auth, code) in [
        (None, "missing_token"),
        (Some("Bearer wrong-token"), "invalid_token"),
        (Some("Basic dGVzdDp0ZXN0"), "missing_token"),
        (Some(&*format!("Bearer {TOKEN}x")), "invalid_token"),
    ] {
        for path in ["/admin/v1/dead-letters", "/admin/v1/no-such-route"] {
            let mut req = app.http.get(app.url(path));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {auth:?}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        }
    }
    let resp = app
        .http
        .get(app.url("/admin/v1/no-such-route"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .http
        .get(app.url("/admin/v1/dead-letters?limit=0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    app.stop().await;
}

#[tokio::test]
async fn an_event_the_crm_rejects_is_dead_lettered_and_can_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    crm.reject_user("oRefused", true);
    let app = spawn_app(
        AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint()),
        dir.path(),
    )
    .await;
    let base = now() << 20;
    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oRefused", base + 1))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oAccepted", base + 2))
            .await
            .status(),
        200
    );
    crm.wait_for(
        |evs| evs.iter().any(|e| e.open_id == "oAccepted"),
        Duration::from_secs(20),
    )
    .await;

    // The refused event is listed with its reason, and the forwarder moved past it.
    let list = || async {
        let resp = app
            .http
            .get(app.url("/admin/v1/dead-letters"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    };
    let body = list().await;
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["event"]["open_id"], "oRefused");
    assert_eq!(letters[0]["account_id"], "acme-plain");
    assert!(letters[0]["reason"].as_str().unwrap().contains("refuses"));
    let id = letters[0]["event_id"].as_str().unwrap().to_owned();

    // Replaying an unknown id is a 404; replaying the real one delivers it with the same id.
    let resp = app
        .http
        .post(app.url("/admin/v1/dead-letters/nope/replay"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    crm.reject_user("oRefused", false);
    let resp = app
        .http
        .post(app.url(&format!("/admin/v1/dead-letters/{id}/replay")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = crm
        .wait_for(
            |evs| evs.iter().any(|e| e.open_id == "oRefused"),
            Duration::from_secs(20),
        )
        .await;
    let replayed = events.iter().find(|e| e.open_id == "oRefused").unwrap();
    assert_eq!(replayed.id, id);
    assert_eq!(list().await["dead_letters"].as_array().unwrap().len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_refused_whole_as_invalid_dead_letters_only_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    crm.reject_user("oPoison", true);
    crm.refuse_whole_requests(true);
    // The CRM is down while the callbacks arrive, so the poisoned event shares a batch with
    // at least one other once it is back.
    crm.set_down(true);
    let app = spawn_app(
        AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint()),
        dir.path(),
    )
    .await;
    let base = now() << 20;
    for (i, user) in ["oBefore", "oPoison", "oAfter"].iter().enumerate() {
        let resp = app
            .post_plain("acme-plain", &text_xml(user, base + i as u64))
            .await;
        assert_eq!(resp.status(), 200);
    }
    crm.set_down(false);
    let events = crm
        .wait_for(|evs| evs.len() >= 2, Duration::from_secs(20))
        .await;
    let users: Vec<_> = events.iter().map(|e| e.open_id.as_str()).collect();
    assert_eq!(
        users,
        ["oBefore", "oAfter"],
        "the others still arrive, in order"
    );
    let resp = app
        .http
        .get(app.url("/admin/v1/dead-letters"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["event"]["open_id"], "oPoison");
    app.stop().await;
}

#[tokio::test]
async fn an_oversize_admin_body_gets_a_json_413() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let body = format!("{{\"scene\": \"{}\"}}", "a".repeat(70_000));
    let resp = app
        .http
        .post(app.url("/admin/v1/accounts/acme-mp/qrcodes"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_admin_route_behind_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let resp = app
        .http
        .get(app.url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_token", "{body}");

    let resp = app
        .http
        .get(app.url("/admin/v1/openapi.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let acc = "/admin/v1/accounts/{account}";
    let expected: &[(String, &[&str])] = &[
        (format!("{acc}/qrcodes"), &["post"]),
        (format!("{acc}/menu"), &["get", "put", "delete"]),
        (format!("{acc}/menu/validate"), &["post"]),
        (format!("{acc}/menu/versions"), &["get"]),
        (
            format!("{acc}/menu/versions/{{version}}/restore"),
            &["post"],
        ),
        (format!("{acc}/menu/conditional"), &["post"]),
        (format!("{acc}/menu/conditional/{{menuid}}"), &["delete"]),
        (format!("{acc}/reply-rules"), &["get", "post"]),
        (format!("{acc}/reply-rules/{{id}}"), &["put", "delete"]),
        (format!("{acc}/welcome"), &["get", "put", "delete"]),
        (format!("{acc}/broadcasts/{{job_id}}/cancel"), &["post"]),
        ("/admin/v1/dead-letters".to_owned(), &["get"]),
        (
            "/admin/v1/dead-letters/{event_id}/replay".to_owned(),
            &["post"],
        ),
    ];
    for (path, methods) in expected {
        let item = &doc["paths"][path.as_str()];
        assert!(item.is_object(), "{path} is missing from the document");
        for method in *methods {
            let op = &item[*method];
            assert!(op.is_object(), "{method} {path} is missing");
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents no 401"
            );
            assert!(
                op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
                "{method} {path} demands no bearer token: {op}"
            );
        }
    }
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    app.stop().await;
}
