//! The admin API: authentication on every route, JSON errors, dead letters and their replay.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{
    app_with_crm, now, spawn_app, text_xml, AppOptions, ADMIN_TOKEN as TOKEN,
};

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
    assert_eq!(app.admin("GET", "/no-such-route", None).await.0, 404);
    let (status, body) = app.admin("GET", "/dead-letters?limit=0", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    app.stop().await;
}

#[tokio::test]
async fn an_event_the_crm_rejects_is_dead_lettered_and_can_be_replayed() {
    let (app, crm, _dir) = app_with_crm().await;
    crm.reject_user("oRefused", true);
    let base = now() << 20;
    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oRefused", "hi", base + 1))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oAccepted", "hi", base + 2))
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
        let (status, body) = app.admin("GET", "/dead-letters", None).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let body = list().await;
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["event"]["openId"], "oRefused");
    assert_eq!(letters[0]["account_id"], "acme-plain");
    assert!(letters[0]["reason"].as_str().unwrap().contains("refuses"));
    let id = letters[0]["event_id"].as_str().unwrap().to_owned();

    // Replaying an unknown id is a 404; replaying the real one delivers it with the same id.
    assert_eq!(
        app.admin("POST", "/dead-letters/nope/replay", None).await.0,
        404
    );
    crm.reject_user("oRefused", false);
    let (status, body) = app
        .admin("POST", &format!("/dead-letters/{id}/replay"), None)
        .await;
    assert_eq!(status, 200, "{body}");
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
    let (app, crm, _dir) = app_with_crm().await;
    crm.reject_user("oPoison", true);
    crm.refuse_whole_requests(true);
    // The CRM is down while the callbacks arrive, so the poisoned event shares a batch with
    // at least one other once it is back.
    crm.set_down(true);
    let base = now() << 20;
    for (i, user) in ["oBefore", "oPoison", "oAfter"].iter().enumerate() {
        let resp = app
            .post_plain("acme-plain", &text_xml(user, "hi", base + i as u64))
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
    // The forwarder may deliver the others before it records the culprit's dead letter.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = app.admin("GET", "/dead-letters", None).await;
        if !body["dead_letters"].as_array().unwrap().is_empty()
            || std::time::Instant::now() > deadline
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(letters[0]["event"]["openId"], "oPoison");
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

    let (status, doc) = app.admin("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
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
    // Every route but the document itself touches the store (503 when it is down); the routes
    // that call WeChat also answer 502, and 504 when WeChat does not answer.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path != "/admin/v1/openapi.json" {
                assert!(
                    op["responses"]["503"].is_object(),
                    "{method} {path} documents no 503"
                );
            }
            if op["responses"]["502"].is_object() {
                assert!(
                    op["responses"]["504"].is_object(),
                    "{method} {path} documents no 504"
                );
            }
        }
    }
    assert!(doc["paths"][format!("{acc}/menu")]["put"]["responses"]["504"].is_object());
    let members = &doc["paths"][format!("{acc}/tags/{{tag_id}}/members")]["post"]["responses"];
    assert!(
        members["502"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("may be repeated")),
        "the route's own 502 wording stays: {members}"
    );
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    app.stop().await;
}

/// What client generators need (issue 13): one distinct operationId per operation, and every
/// request body and 2xx answer a named schema (a `$ref` to a component), never an anonymous
/// `{"type": "object"}`; a component with no properties says in its description what it holds.
#[tokio::test]
async fn the_openapi_document_names_every_operation_once_and_every_body_by_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let (status, doc) = app.admin("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    app.stop().await;

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let named = |schema: &Value, what: &str| {
        let name = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("{what} is not a named schema: {schema}"));
        let component = schemas
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no component {name}"));
        let structured = ["properties", "oneOf", "allOf", "anyOf", "items"]
            .iter()
            .any(|k| component.get(*k).is_some());
        assert!(
            structured
                || component["description"]
                    .as_str()
                    .is_some_and(|d| d.len() > 20),
            "{what}: {name} is a bare object: {component}"
        );
    };
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no id"));
            assert!(
                id.len() > 3
                    && id.starts_with(|c: char| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{what}: operationId {id:?} is not lowerCamelCase"
            );
            assert!(ids.insert(id.to_owned()), "{what}: operationId {id} twice");
            if let Some(body) = op.get("requestBody") {
                // JSON, or the multipart form of an upload: named either way.
                let content = body["content"].as_object().unwrap();
                assert!(
                    !content.is_empty(),
                    "{what}: a request body with no content"
                );
                for (media_type, c) in content {
                    named(&c["schema"], &format!("{what} request ({media_type})"));
                }
            }
            for (status, answer) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    named(
                        &answer["content"]["application/json"]["schema"],
                        &format!("{what} {status}"),
                    );
                }
            }
        }
    }
    assert!(ids.len() >= 30, "{} operations", ids.len());
    for id in [
        "createQrCode",
        "getMenu",
        "setMenu",
        "listDeadLetters",
        "sendBroadcast",
    ] {
        assert!(ids.contains(id), "{id} is missing: {ids:?}");
    }
    // The dead letters' event is described field by field, in the proto3 JSON mapping.
    let event = &schemas["Event"]["properties"];
    assert_eq!(event["platform"]["enum"][1], "PLATFORM_MP", "{event}");
    assert_eq!(event["text"]["properties"]["msgId"]["type"], "string");
    assert_eq!(event["occurredAt"]["format"], "date-time");
}

#[tokio::test]
async fn every_route_in_the_openapi_document_refuses_a_request_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let (status, doc) = app.admin("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (path, item) in paths {
        // Path parameters filled with values that exist or parse, so that only the token is
        // missing from the request.
        let url = path
            .replace("{account}", "acme-mp")
            .replace("{version}", "1")
            .replace("{tag_id}", "1")
            .replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .http
                .request(method.clone(), app.url(&url))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "missing_token", "{method} {path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_account_id_that_cannot_parse_is_answered_like_an_unknown_account_over_http_and_grpc() {
    use wechat_gateway::pb::gateway_client::GatewayClient;
    use wechat_gateway::pb::ListLinksRequest;

    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    // "no-such" is a well-formed id no account has; "no.such" and "a b" cannot be an id at all.
    for (raw, path) in [
        ("no-such", "no-such"),
        ("no.such", "no.such"),
        ("a b", "a%20b"),
    ] {
        for route in ["links", "reply-rules", "menu/versions"] {
            let (status, body) = app
                .admin("GET", &format!("/accounts/{path}/{route}"), None)
                .await;
            assert_eq!(status, 404, "{raw:?} {route}: {body}");
            assert_eq!(body["error"]["code"], "not_found", "{body}");
            assert_eq!(
                body["error"]["message"],
                format!("unknown account {raw:?}"),
                "{body}"
            );
        }
    }
    let mut client = GatewayClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    for raw in ["no-such", "no.such", "a b", ""] {
        let refused = client
            .list_links(ListLinksRequest {
                account_id: raw.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound, "{raw:?}");
        assert_eq!(refused.message(), format!("unknown account {raw:?}"));
    }
    app.stop().await;
}
