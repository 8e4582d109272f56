//! Official Account tags, complete (issue 14, item 4): list, rename, delete and one follower's
//! tags, through the admin API and gRPC, against the fake WeChat API's tag store. WeChat's
//! reserved tags (0, 1, 2) are refused before any call; WeChat's refusals (45157 name taken,
//! 45159 no such tag, 45057 too many followers) become the caller's 409 / 404.

use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{DeleteTagRequest, GetUserTagsRequest, ListTagsRequest, UpdateTagRequest};

use crate::support::app::{spawn_app, AppOptions, TestApp, MP_APP_ID};
use crate::support::fake_wechat::{FakeWeChat, Injected};

const ACCOUNT: &str = "acme-plain";

async fn app(wechat: &FakeWeChat) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    (spawn_app(opts, dir.path()).await, dir)
}

async fn create(app: &TestApp, name: &str) -> u64 {
    let (status, body) = app
        .admin(
            "POST",
            &format!("/accounts/{ACCOUNT}/tags"),
            Some(&json!({"name": name})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["tag_id"].as_u64().unwrap()
}

async fn list(app: &TestApp) -> Vec<Value> {
    let (status, body) = app
        .admin("GET", &format!("/accounts/{ACCOUNT}/tags"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["tags"].as_array().unwrap().clone()
}

#[tokio::test]
async fn tags_are_listed_renamed_and_deleted_with_their_follower_counts() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    let vip = create(&app, "vip").await;
    let expo = create(&app, "expo").await;
    let (status, body) = app
        .admin(
            "POST",
            &format!("/accounts/{ACCOUNT}/tags/{vip}/members"),
            Some(&json!({"open_ids": ["oAlice", "oBob"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let tags = list(&app).await;
    assert_eq!(
        tags,
        vec![
            json!({"tag_id": 2, "name": "星标组", "count": 0, "reserved": true}),
            json!({"tag_id": vip, "name": "vip", "count": 2, "reserved": false}),
            json!({"tag_id": expo, "name": "expo", "count": 0, "reserved": false}),
        ]
    );

    let (status, body) = app
        .admin(
            "GET",
            &format!("/accounts/{ACCOUNT}/users/oAlice/tags"),
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"open_id": "oAlice", "tag_ids": [vip]}))
    );

    let (status, body) = app
        .admin(
            "PUT",
            &format!("/accounts/{ACCOUNT}/tags/{vip}"),
            Some(&json!({"name": "gold"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"tag_id": vip, "name": "gold"}))
    );
    let sent = wechat.requests_to("/cgi-bin/tags/update");
    assert_eq!(sent[0].body, json!({"tag": {"id": vip, "name": "gold"}}));

    // The name of another tag: WeChat's 45157, a conflict.
    let (status, body) = app
        .admin(
            "PUT",
            &format!("/accounts/{ACCOUNT}/tags/{expo}"),
            Some(&json!({"name": "gold"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("45157"),
        "{body}"
    );

    let (status, body) = app
        .admin("DELETE", &format!("/accounts/{ACCOUNT}/tags/{expo}"), None)
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"tag_id": expo, "deleted": true}))
    );
    assert_eq!(
        wechat.requests_to("/cgi-bin/tags/delete")[0].body,
        json!({"tag": {"id": expo}})
    );
    let left = list(&app).await;
    assert_eq!(tags_names(&left), ["星标组", "gold"]);

    // Gone: WeChat's 45159 is a 404.
    let (status, body) = app
        .admin("DELETE", &format!("/accounts/{ACCOUNT}/tags/{expo}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("45159"),
        "{body}"
    );
    app.stop().await;
}

fn tags_names(tags: &[Value]) -> Vec<&str> {
    tags.iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect::<Vec<_>>()
}

#[tokio::test]
async fn reserved_tags_are_refused_before_any_wechat_call() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    for id in 0..=2 {
        let (status, body) = app
            .admin(
                "PUT",
                &format!("/accounts/{ACCOUNT}/tags/{id}"),
                Some(&json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{body}"
        );
        let (status, _) = app
            .admin("DELETE", &format!("/accounts/{ACCOUNT}/tags/{id}"), None)
            .await;
        assert_eq!(status, 400);
    }
    assert_eq!(wechat.count("/cgi-bin/tags/update"), 0);
    assert_eq!(wechat.count("/cgi-bin/tags/delete"), 0);
    // A name WeChat would refuse is refused here too, before the call.
    let (status, _) = app
        .admin(
            "PUT",
            &format!("/accounts/{ACCOUNT}/tags/100"),
            Some(&json!({"name": "x".repeat(31)})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count("/cgi-bin/tags/update"), 0);
    app.stop().await;
}

#[tokio::test]
async fn wechat_refusals_and_an_expired_token_are_mapped_cleanly() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    let tag = create(&app, "crowded").await;
    // 45057: more than 100,000 followers carry it; WeChat deletes it only once they are untagged.
    wechat.inject("/cgi-bin/tags/delete", Injected::Errcode(45057), 1);
    let (status, body) = app
        .admin("DELETE", &format!("/accounts/{ACCOUNT}/tags/{tag}"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100,000"),
        "{body}"
    );

    // The token expired (42001) between two calls: one more token, then the answer.
    let tokens_before = wechat.count("/cgi-bin/stable_token");
    wechat.inject("/cgi-bin/tags/get", Injected::Errcode(42001), 1);
    assert_eq!(list(&app).await.len(), 2);
    assert_eq!(wechat.count("/cgi-bin/stable_token"), tokens_before + 1);

    // Not an openid: refused before WeChat; the WeCom application has no user tags.
    let (status, _) = app
        .admin(
            "GET",
            &format!("/accounts/{ACCOUNT}/users/not%20an%20openid/tags"),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count("/cgi-bin/tags/getidlist"), 0);
    // An openid WeChat does not know (40003) is a 404.
    let (status, body) = app
        .admin(
            "GET",
            &format!("/accounts/{ACCOUNT}/users/x-unknown/tags"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.admin("GET", "/accounts/acme-work/tags", None).await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn grpc_lists_renames_deletes_and_reads_a_users_tags() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat).await;
    let tag = create(&app, "grpc").await;
    app.admin(
        "POST",
        &format!("/accounts/{ACCOUNT}/tags/{tag}/members"),
        Some(&json!({"open_ids": ["oCarol"]})),
    )
    .await;
    let mut client = GatewayClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let account_id = ACCOUNT.to_owned();
    let tags = client
        .list_tags(ListTagsRequest {
            account_id: account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert_eq!(tags.len(), 2);
    assert_eq!(
        (tags[1].tag_id, tags[1].name.as_str(), tags[1].count),
        (tag, "grpc", 1)
    );
    assert!(tags[0].reserved && !tags[1].reserved);

    let ids = client
        .get_user_tags(GetUserTagsRequest {
            account_id: account_id.clone(),
            open_id: "oCarol".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tag_ids;
    assert_eq!(ids, [tag]);

    client
        .update_tag(UpdateTagRequest {
            account_id: account_id.clone(),
            tag_id: tag,
            name: "renamed".into(),
        })
        .await
        .unwrap();
    let refused = client
        .update_tag(UpdateTagRequest {
            account_id: account_id.clone(),
            tag_id: 2,
            name: "star".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    client
        .delete_tag(DeleteTagRequest {
            account_id: account_id.clone(),
            tag_id: tag,
        })
        .await
        .unwrap();
    let gone = client
        .delete_tag(DeleteTagRequest {
            account_id,
            tag_id: tag,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(
        wechat.count("/cgi-bin/tags/update"),
        1,
        "{MP_APP_ID}: one rename reached WeChat"
    );
    app.stop().await;
}
