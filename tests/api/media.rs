//! Media and drafts (issue 15, item 3) against the fake WeChat API: WeChat's limits checked
//! before any call, uploads de-duplicated by content hash, the multipart and JSON bodies WeChat
//! documents (素材管理, 草稿箱, WeCom 上传临时素材/上传附件资源), `UploadMedia` over a real tonic
//! client stream, and a broadcast whose temporary media id WeChat forgot between two batches
//! (40007): the same bytes are uploaded again and the batch is sent with the new id.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::upload_media_request::Part as StreamPart;
use wechat_gateway::pb::{UploadMediaMetadata, UploadMediaRequest};

use crate::support::app::{spawn_app, AppOptions, TestApp, ADMIN_TOKEN};
use crate::support::fake_wechat::{FakeWeChat, Injected};

const UPLOAD: &str = "/cgi-bin/media/upload";
const ADD_MATERIAL: &str = "/cgi-bin/material/add_material";
const UPLOADIMG: &str = "/cgi-bin/media/uploadimg";
const MASS_SEND: &str = "/cgi-bin/message/mass/send";
const WAIT: Duration = Duration::from_secs(30);

async fn app(wechat: &FakeWeChat, extra: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = extra.to_owned();
    (spawn_app(opts, dir.path()).await, dir)
}

/// A multipart POST to an admin path; status and JSON body.
async fn post_form(app: &TestApp, path: &str, form: Form) -> (u16, Value) {
    let resp = app
        .http
        .post(format!("http://{}/admin/v1{path}", app.admin_addr))
        .bearer_auth(ADMIN_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn file(name: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

fn media_form(kind: &str, name: &str, bytes: Vec<u8>) -> Form {
    Form::new()
        .text("type", kind.to_owned())
        .part("media", file(name, bytes))
}

#[tokio::test]
async fn files_over_wechats_limits_are_refused_naming_the_limit_before_any_call() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, "").await;
    let cases = [
        (
            "/accounts/acme-plain/media",
            media_form("thumb", "t.jpg", vec![1; 64 * 1024 + 1]),
            "64KB",
        ),
        (
            "/accounts/acme-plain/media",
            media_form("voice", "v.wav", vec![1; 10]),
            "amr, mp3",
        ),
        (
            "/accounts/acme-plain/media",
            media_form("video", "v.mp4", vec![1; 10 * 1024 * 1024 + 1]),
            "10MB",
        ),
        (
            "/accounts/acme-plain/media",
            media_form("file", "a.pdf", vec![1; 10]),
            "cannot take a file",
        ),
        (
            "/accounts/acme-plain/media/article-images",
            Form::new().part("media", file("a.png", vec![1; 1024 * 1024 + 1])),
            "1MB",
        ),
        (
            "/accounts/acme-plain/media/article-images",
            Form::new().part("media", file("a.gif", vec![1; 10])),
            "jpg, jpeg, png",
        ),
        (
            "/accounts/acme-work/media",
            media_form("voice", "v.mp3", vec![1; 10]),
            "amr",
        ),
    ];
    for (path, form, named) in cases {
        let (status, body) = post_form(&app, path, form).await;
        assert_eq!(status, 400, "{named}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{named}: {message}");
    }
    // A form without the file, and one that is not multipart at all.
    let (status, _) = post_form(
        &app,
        "/accounts/acme-plain/media",
        Form::new().text("type", "image"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .admin(
            "POST",
            "/accounts/acme-plain/media",
            Some(&json!({"type": "image"})),
        )
        .await;
    assert_eq!(status, 400);
    for path in [UPLOAD, ADD_MATERIAL, UPLOADIMG] {
        assert_eq!(wechat.count(path), 0, "{path}");
    }
}

#[tokio::test]
async fn the_same_bytes_again_are_answered_from_the_record_without_calling_wechat() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, "").await;
    let jpeg = b"\xff\xd8\xff\xe0 a small picture".to_vec();

    let (status, first) = post_form(
        &app,
        "/accounts/acme-plain/media",
        media_form("image", "a.jpg", jpeg.clone()),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["media_id"], "media1");
    assert_eq!(first["reused"], false);
    assert_eq!(first["destination"], "temp");
    // FIPS 180-2 style check of the hash: the same digest as computed here.
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &jpeg).as_ref());
    assert_eq!(first["sha256"], sha);
    assert!(first["expires_at"].as_u64().unwrap() > crate::support::app::now() + 2 * 86400);
    let sent = &wechat.requests_to(UPLOAD)[0];
    assert_eq!(sent.query["type"], "image");
    assert_eq!(sent.body["media"]["filename"], "a.jpg");
    assert_eq!(sent.body["media"]["size"], jpeg.len());

    // The same bytes under another name: the record answers, WeChat is not called.
    let (status, again) = post_form(
        &app,
        "/accounts/acme-plain/media",
        media_form("image", "b.jpg", jpeg.clone()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["media_id"], "media1");
    assert_eq!(again["reused"], true);
    assert_eq!(wechat.count(UPLOAD), 1);

    // Permanent material is its own record; a permanent video carries its description.
    let form = media_form("image", "a.jpg", jpeg.clone()).text("permanent", "true");
    let (status, perm) = post_form(&app, "/accounts/acme-plain/media", form).await;
    assert_eq!(status, 200, "{perm}");
    assert_eq!(perm["media_id"], "perm2");
    assert!(perm["url"]
        .as_str()
        .unwrap()
        .starts_with("http://mmbiz.qpic.cn/"));
    assert!(perm["expires_at"].is_null());
    let form = media_form("image", "a.jpg", jpeg).text("permanent", "true");
    let (_, perm_again) = post_form(&app, "/accounts/acme-plain/media", form).await;
    assert_eq!(perm_again["reused"], true);
    let video = media_form("video", "clip.mp4", b"not really mp4".to_vec())
        .text("permanent", "true")
        .text("title", "Spring")
        .text("introduction", "The expo");
    let (status, body) = post_form(&app, "/accounts/acme-plain/media", video).await;
    assert_eq!(status, 200, "{body}");
    let sent = wechat.requests_to(ADD_MATERIAL);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].query["type"], "video");
    let description: Value =
        serde_json::from_str(sent[1].body["description"].as_str().unwrap()).unwrap();
    assert_eq!(
        description,
        json!({"title": "Spring", "introduction": "The expo"})
    );

    // Article images answer a URL; WeCom attachments go to upload_attachment.
    let (status, img) = post_form(
        &app,
        "/accounts/acme-plain/media/article-images",
        Form::new().part("media", file("in-article.png", b"png bytes".to_vec())),
    )
    .await;
    assert_eq!(status, 200, "{img}");
    assert!(img["url"]
        .as_str()
        .unwrap()
        .starts_with("http://mmbiz.qpic.cn/"));
    let form =
        media_form("file", "brochure.pdf", b"%PDF-1.4".to_vec()).text("attachment_type", "1");
    let (status, att) = post_form(&app, "/accounts/acme-work/media", form).await;
    assert_eq!(status, 200, "{att}");
    let sent = &wechat.requests_to("/cgi-bin/media/upload_attachment")[0];
    assert_eq!(sent.query["media_type"], "file");
    assert_eq!(sent.query["attachment_type"], "1");

    // The registry is the test process's: other tests of acme-plain may add to it.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let reused = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("wgw_media_uploads_total{account=\"acme-plain\",outcome=\"reused\"} ")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(reused.parse::<f64>().unwrap() >= 2.0, "{reused}");
}

#[tokio::test]
async fn drafts_are_checked_then_sent_as_draft_add_documents() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, "").await;
    let article = json!({"title": "Spring expo", "author": "Acme", "digest": "See you there",
        "content": "<p>Hall 3</p>", "content_source_url": "https://example.com/expo",
        "thumb_media_id": "perm1", "need_open_comment": 0, "only_fans_can_comment": 0});
    let (status, body) = app
        .admin(
            "POST",
            "/accounts/acme-plain/drafts",
            Some(&json!({"articles": [{"title": "x", "content": "y"}]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("thumb_media_id"));
    assert_eq!(wechat.count("/cgi-bin/draft/add"), 0);

    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/drafts",
            Some(&json!({"articles": [article]})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let media_id = created["media_id"].as_str().unwrap().to_owned();
    assert_eq!(
        wechat.requests_to("/cgi-bin/draft/add")[0].body,
        json!({"articles": [article]})
    );
    let (status, got) = app
        .admin(
            "GET",
            &format!("/accounts/acme-plain/drafts/{media_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["news_item"], json!([article]));
    let (status, deleted) = app
        .admin(
            "DELETE",
            &format!("/accounts/acme-plain/drafts/{media_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"media_id": media_id, "deleted": true}));
    assert_eq!(
        wechat.requests_to("/cgi-bin/draft/delete")[0].body,
        json!({"media_id": media_id})
    );
    let (status, gone) = app
        .admin(
            "GET",
            &format!("/accounts/acme-plain/drafts/{media_id}"),
            None,
        )
        .await;
    assert_eq!(status, 502, "{gone}");
    assert!(gone["error"]["message"].as_str().unwrap().contains("40007"));
}

#[tokio::test]
async fn a_temporary_media_id_wechat_forgot_between_batches_is_uploaded_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(
        &wechat,
        "[broadcasts]\ncalls_per_minute = 6000\nbackoff_min_ms = 50\nbackoff_max_seconds = 1\n\
         lease_seconds = 5\n",
    )
    .await;
    let (_, image) = post_form(
        &app,
        "/accounts/acme-plain/media",
        media_form("image", "p.jpg", b"poster".to_vec()),
    )
    .await;
    assert_eq!(image["media_id"], "media1");
    // The first batch's call waits; meanwhile WeChat "forgets" the id for the next call.
    wechat.hold(MASS_SEND, 0);
    let (status, job) = app
        .admin(
            "POST",
            "/accounts/acme-plain/broadcasts",
            // Two batches: WeChat takes 10,000 openids a call.
            Some(&json!({"audience": {"open_ids": (0..10_002).map(|i| format!("oFollower{i:08}")).collect::<Vec<_>>()},
                "message": {"image": {"media_id": "media1"}}})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while wechat.count(MASS_SEND) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first batch was never sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wechat.inject(MASS_SEND, Injected::Errcode(40007), 1);
    wechat.release(MASS_SEND);
    let job_id = job["job_id"].as_str().unwrap();
    let done = loop {
        let (_, got) = app
            .admin(
                "GET",
                &format!("/accounts/acme-plain/broadcasts/{job_id}"),
                None,
            )
            .await;
        let settled = |b: &Value| b["status"] == "sent" || b["status"] == "failed";
        if got["batches"].as_array().unwrap().iter().all(settled) {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for batch in done["batches"].as_array().unwrap() {
        assert_eq!(batch["status"], "sent", "{done}");
    }
    let sends: Vec<String> = wechat
        .requests_to(MASS_SEND)
        .iter()
        .map(|r| r.body["image"]["media_id"].as_str().unwrap().to_owned())
        .collect();
    // Batch 1 with the id; batch 2 refused (40007), the bytes uploaded again, batch 2 resent.
    assert_eq!(sends, ["media1", "media1", "media2"], "{done}");
    let uploads = wechat.requests_to(UPLOAD);
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[1].body["media"]["content"], "poster");
}

#[tokio::test]
async fn upload_media_streams_chunks_over_grpc_and_refuses_past_the_kinds_limit() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, "").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let stream = |kind: &str, name: &str, chunks: Vec<Vec<u8>>| {
        let mut messages = vec![UploadMediaRequest {
            part: Some(StreamPart::Metadata(UploadMediaMetadata {
                account_id: "acme-plain".into(),
                r#type: kind.into(),
                filename: name.into(),
                ..Default::default()
            })),
        }];
        messages.extend(chunks.into_iter().map(|c| UploadMediaRequest {
            part: Some(StreamPart::Chunk(c)),
        }));
        futures::stream::iter(messages)
    };
    let chunks = vec![b"ID3 ".to_vec(), vec![7; 1000], b" end".to_vec()];
    let whole: Vec<u8> = chunks.concat();
    let first = gateway
        .upload_media(stream("voice", "hello.mp3", chunks.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.media_id, "media1");
    assert!(!first.reused);
    assert_eq!(first.size, whole.len() as u64);
    assert_eq!(
        wechat.requests_to(UPLOAD)[0].body["media"]["size"],
        whole.len()
    );
    let again = gateway
        .upload_media(stream("voice", "hello.mp3", chunks))
        .await
        .unwrap()
        .into_inner();
    assert!(again.reused);
    assert_eq!(again.media_id, "media1");

    let refused = gateway
        .upload_media(stream(
            "thumb",
            "t.jpg",
            vec![vec![0; 40 * 1024], vec![0; 40 * 1024]],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("64KB"), "{}", refused.message());
    let no_metadata = gateway
        .upload_media(futures::stream::iter(vec![UploadMediaRequest {
            part: Some(StreamPart::Chunk(vec![1])),
        }]))
        .await
        .unwrap_err();
    assert_eq!(no_metadata.code(), tonic::Code::InvalidArgument);
    assert_eq!(wechat.count(UPLOAD), 1);
}

#[tokio::test]
async fn on_redis_two_instances_share_the_record_of_an_upload() {
    let wechat = FakeWeChat::start().await;
    let url = crate::support::redis::fresh_db_url().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app(AppOptions::redis(&url).wechat(&wechat.base()), dir_a.path()).await;
    let b = spawn_app(AppOptions::redis(&url).wechat(&wechat.base()), dir_b.path()).await;
    let bytes = b"\xff\xd8 shared poster".to_vec();
    let (status, first) = post_form(
        &a,
        "/accounts/acme-plain/media",
        media_form("image", "s.jpg", bytes.clone()),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["reused"], false);
    let (status, second) = post_form(
        &b,
        "/accounts/acme-plain/media",
        media_form("image", "s.jpg", bytes),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["reused"], true);
    assert_eq!(second["media_id"], first["media_id"]);
    assert_eq!(wechat.count(UPLOAD), 1);
}
