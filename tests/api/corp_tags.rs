//! WeCom corp tags (issue 14, item 2) against the fake WeChat API: the tag library
//! (`get_corp_tag_list`, `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`), the tags on a
//! customer (`mark_tag`), WeCom's refusals mapped to what they mean, validation before any call,
//! the typed `change_external_tag` event, and `follow_user` on enriched external-contact events.

use std::time::Duration;

use serde_json::{json, Value};
use wechat_gateway::pb;
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::gateway_client::GatewayClient;

use crate::links::app_with;
use crate::support::app::{now, WORK_CORP_ID};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};

const WAIT: Duration = Duration::from_secs(30);
const LIST: &str = "/cgi-bin/externalcontact/get_corp_tag_list";
const ADD: &str = "/cgi-bin/externalcontact/add_corp_tag";
const EDIT: &str = "/cgi-bin/externalcontact/edit_corp_tag";
const DEL: &str = "/cgi-bin/externalcontact/del_corp_tag";
const MARK: &str = "/cgi-bin/externalcontact/mark_tag";
const TAGS: &str = "/accounts/acme-work/corp-tags";

fn wecom_calls(wechat: &FakeWeChat) -> usize {
    [LIST, ADD, EDIT, DEL, MARK]
        .iter()
        .map(|p| wechat.count(p))
        .sum()
}

fn tag_names(groups: &Value) -> Vec<(String, Vec<String>)> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group_name"].as_str().unwrap().to_owned(),
                g["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn corp_tags_are_created_listed_renamed_and_deleted_as_tags_and_as_groups() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;

    let (status, group) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_name": "Lead level", "group_order": 5,
                "tags": [{"name": "Hot", "order": 2}, {"name": "Won"}]})),
        )
        .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["group_name"], "Lead level");
    let hot = group["tags"][0]["id"].as_str().unwrap().to_owned();
    let won = group["tags"][1]["id"].as_str().unwrap().to_owned();
    let group_id = group["group_id"].as_str().unwrap().to_owned();
    assert_ne!(hot, won);
    let sent = &wechat.requests_to(ADD)[0].body;
    assert_eq!(
        sent,
        &json!({"group_name": "Lead level", "order": 5,
            "tag": [{"name": "Hot", "order": 2}, {"name": "Won"}]})
    );

    // Into the existing group, by id.
    let (status, more) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_id": group_id, "tags": [{"name": "Lost"}]})),
        )
        .await;
    assert_eq!(status, 200, "{more}");
    assert_eq!(
        more["tags"].as_array().unwrap().len(),
        1,
        "only the new tag"
    );

    let (status, listed) = app.admin("GET", TAGS, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        tag_names(&listed),
        [(
            "Lead level".to_owned(),
            vec!["Hot".to_owned(), "Won".to_owned(), "Lost".to_owned()]
        )]
    );
    // Filtered by tag id: that tag in its group.
    let (_, one) = app
        .admin("GET", &format!("{TAGS}?tag_ids={won}"), None)
        .await;
    assert_eq!(
        tag_names(&one),
        [("Lead level".to_owned(), vec!["Won".to_owned()])]
    );
    assert_eq!(
        wechat.requests_to(LIST).last().unwrap().body,
        json!({"tag_id": [won]})
    );

    let (status, edited) = app
        .admin(
            "PUT",
            &format!("{TAGS}/{hot}"),
            Some(&json!({"name": "Very hot", "order": 9})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        wechat.requests_to(EDIT)[0].body,
        json!({"id": hot, "name": "Very hot", "order": 9})
    );

    // A tag is deleted as a tag, a group as a group (with its tags); the library is read first.
    let (status, deleted) = app.admin("DELETE", &format!("{TAGS}/{won}"), None).await;
    assert_eq!((status, deleted["deleted"].as_str()), (200, Some("tag")));
    assert_eq!(wechat.requests_to(DEL)[0].body, json!({"tag_id": [won]}));
    let (_, listed) = app.admin("GET", TAGS, None).await;
    assert_eq!(
        tag_names(&listed),
        [(
            "Lead level".to_owned(),
            vec!["Very hot".to_owned(), "Lost".to_owned()]
        )]
    );
    let (status, deleted) = app
        .admin("DELETE", &format!("{TAGS}/{group_id}"), None)
        .await;
    assert_eq!(
        (status, deleted["deleted"].as_str()),
        (200, Some("tag_group"))
    );
    assert_eq!(
        wechat.requests_to(DEL)[1].body,
        json!({"group_id": [group_id]})
    );
    let (_, listed) = app.admin("GET", TAGS, None).await;
    assert!(tag_names(&listed).is_empty());

    // An id that is in neither: 404, and nothing is sent to del_corp_tag.
    let (status, missing) = app.admin("DELETE", &format!("{TAGS}/{won}"), None).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(wechat.count(DEL), 2);
    app.stop().await;
}

#[tokio::test]
async fn wecoms_refusals_are_mapped_to_what_they_mean() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let (_, group) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_name": "Source", "tags": [{"name": "Expo"}]})),
        )
        .await;
    let group_id = group["group_id"].as_str().unwrap().to_owned();

    // 40071: the name is taken in the group → 409.
    let (status, body) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_id": group_id, "tags": [{"name": "Expo"}]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("40071"));
    // 40068: no such tag or group → 404.
    let (status, body) = app
        .admin(
            "PUT",
            &format!("{TAGS}/etNoSuchTag"),
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("40068"));
    let (status, _) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_id": "etNoSuchGroup", "tags": [{"name": "x"}]})),
        )
        .await;
    assert_eq!(status, 404);
    // 41017 (missing tag id, which validation already prevents) → 400; any other code → 502
    // with WeCom's errcode.
    wechat.inject(EDIT, Injected::Errcode(41017), 1);
    let (status, _) = app
        .admin(
            "PUT",
            &format!("{TAGS}/{group_id}"),
            Some(&json!({"order": 1})),
        )
        .await;
    assert_eq!(status, 400);
    wechat.inject(LIST, Injected::Errcode(48002), 1);
    let (status, body) = app.admin("GET", TAGS, None).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("48002"));
    app.stop().await;
}

#[tokio::test]
async fn tags_are_marked_on_a_members_customer_and_a_stranger_or_an_unknown_tag_is_a_404() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| p.add_relation("zhangsan", "wmCustomer1"));
    let (_, group) = app
        .admin(
            "POST",
            TAGS,
            Some(&json!({"group_name": "Level", "tags": [{"name": "Hot"}, {"name": "Won"}]})),
        )
        .await;
    let hot = group["tags"][0]["id"].as_str().unwrap().to_owned();
    let won = group["tags"][1]["id"].as_str().unwrap().to_owned();
    let path = "/accounts/acme-work/external-contacts/wmCustomer1/tags";

    let (status, body) = app
        .admin(
            "POST",
            path,
            Some(&json!({"userid": "zhangsan", "add": [hot, won]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"external_user_id": "wmCustomer1", "userid": "zhangsan", "added": 2, "removed": 0})
    );
    assert_eq!(
        wechat.requests_to(MARK)[0].body,
        json!({"userid": "zhangsan", "external_userid": "wmCustomer1", "add_tag": [hot, won]})
    );
    let (status, _) = app
        .admin(
            "POST",
            path,
            Some(&json!({"userid": "zhangsan", "remove": [hot]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        wechat.profile(|p| p.tags_on("zhangsan", "wmCustomer1")),
        std::slice::from_ref(&won)
    );

    // 84061: not this member's customer; 40068: no such tag. Both 404, nothing changed.
    let (status, body) = app
        .admin("POST", path, Some(&json!({"userid": "lisi", "add": [hot]})))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("84061"));
    let (status, body) = app
        .admin(
            "POST",
            path,
            Some(&json!({"userid": "zhangsan", "add": ["etGone"]})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("40068"));
    assert_eq!(
        wechat.profile(|p| p.tags_on("zhangsan", "wmCustomer1")),
        [won]
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_requests_and_official_accounts_are_refused_before_any_wecom_call() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let long = "字".repeat(31);
    let tags_101: Vec<Value> = (0..101).map(|i| json!({"name": format!("t{i}")})).collect();
    let mark = "/accounts/acme-work/external-contacts/wmCustomer1/tags";
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            TAGS.into(),
            Some(json!({"tags": [{"name": "x"}]})),
            "group_id or group_name",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_id": "etG", "group_name": "g", "tags": [{"name": "x"}]})),
            "not both",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_name": "g", "tags": []})),
            "tags",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_name": "g", "tags": tags_101})),
            "tags",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_name": long, "tags": [{"name": "x"}]})),
            "30",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_name": "g", "tags": [{"name": ""}]})),
            "tags[0].name",
        ),
        (
            "POST",
            TAGS.into(),
            Some(json!({"group_name": "g", "tags": [{"name": "a"}, {"name": "a"}]})),
            "twice",
        ),
        (
            "PUT",
            format!("{TAGS}/etT"),
            Some(json!({})),
            "nothing to change",
        ),
        (
            "PUT",
            format!("{TAGS}/etT"),
            Some(json!({"name": "   "})),
            "not blank",
        ),
        (
            "POST",
            mark.into(),
            Some(json!({"userid": "zhangsan"})),
            "at least one",
        ),
        (
            "POST",
            mark.into(),
            Some(json!({"userid": "zhangsan", "add": ["et1"], "remove": ["et1"]})),
            "both",
        ),
        (
            "POST",
            mark.into(),
            Some(json!({"userid": "", "add": ["et1"]})),
            "userid",
        ),
        (
            "POST",
            mark.into(),
            Some(json!({"userid": "zhangsan", "add": ["et 1"]})),
            "add[0]",
        ),
        ("GET", format!("{TAGS}?tag_ids=a,a"), None, "twice"),
        // An Official Account has no corp tags.
        ("GET", "/accounts/acme-mp/corp-tags".into(), None, "WeCom"),
        (
            "POST",
            "/accounts/acme-mp/corp-tags".into(),
            Some(json!({"group_name": "g", "tags": [{"name": "x"}]})),
            "WeCom",
        ),
        (
            "DELETE",
            "/accounts/acme-mp/corp-tags/etT".into(),
            None,
            "WeCom",
        ),
        (
            "POST",
            "/accounts/acme-mp/external-contacts/wm1/tags".into(),
            Some(json!({"userid": "u", "add": ["et1"]})),
            "WeCom",
        ),
    ];
    for (method, path, body, says) in cases {
        let (status, answer) = app.admin(method, &path, body.as_ref()).await;
        assert_eq!(status, 400, "{method} {path} {body:?}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{method} {path}: {message}");
    }
    assert_eq!(wecom_calls(&wechat), 0, "nothing reached WeCom");
    app.stop().await;
}

#[tokio::test]
async fn a_change_external_tag_callback_is_a_typed_corp_tag_change_event() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    // 92130 企业客户标签变更事件 (update of a tag group).
    let xml = format!(
        "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etGroupId]]></Id>\
         <TagType><![CDATA[tag_group]]></TagType><ChangeType><![CDATA[update]]></ChangeType></xml>",
        now()
    );
    assert_eq!(app.post_safe("acme-work", &xml).await.status(), 200);
    let events = crm.wait_for(|evs| !evs.is_empty(), WAIT).await;
    assert_eq!(
        events[0].kind,
        Some(Kind::CorpTagChange(pb::CorpTagChange {
            change_type: "update".into(),
            id: "etGroupId".into(),
            tag_type: "tag_group".into(),
            strategy_id: String::new(),
        }))
    );
    app.stop().await;
}

#[tokio::test]
async fn an_enriched_external_contact_event_carries_every_follow_user_with_tags_and_state() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let xml = format!(
        "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[edit_external_contact]]></ChangeType>\
         <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmCustomer7]]></ExternalUserID></xml>",
        now()
    );
    assert_eq!(app.post_safe("acme-work", &xml).await.status(), 200);
    let events = crm.wait_for(|evs| !evs.is_empty(), WAIT).await;
    let follow = &events[0].follow_user;
    assert_eq!(follow.len(), 1, "{:?}", events[0]);
    let f = &follow[0];
    assert_eq!(
        (
            f.user_id.as_str(),
            f.remark.as_str(),
            f.add_way,
            f.state.as_str()
        ),
        ("zhangsan", "met at the expo", 1, "spring-expo")
    );
    assert_eq!(f.created_at.as_ref().unwrap().seconds, 1_764_547_200);
    assert_eq!(f.remark_mobiles, ["13800000000"]);
    assert_eq!(
        f.tags,
        [
            pb::FollowUserTag {
                tag_id: "etHot".into(),
                tag_name: "Hot".into(),
                group_name: "Lead level".into(),
                r#type: 1
            },
            pb::FollowUserTag {
                tag_id: String::new(),
                tag_name: "VIP".into(),
                group_name: String::new(),
                r#type: 2
            },
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn grpc_lists_creates_edits_deletes_and_marks_corp_tags_with_the_admin_apis_rules() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| p.add_relation("zhangsan", "wmCustomer1"));
    let mut gateway = GatewayClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap();
    let group = gateway
        .create_corp_tag(pb::CreateCorpTagRequest {
            account_id: "acme-work".into(),
            group_name: "Level".into(),
            tags: vec![pb::NewCorpTag {
                name: "Hot".into(),
                order: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let hot = group.tags[0].id.clone();
    let listed = gateway
        .list_corp_tags(pb::ListCorpTagsRequest {
            account_id: "acme-work".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.groups, std::slice::from_ref(&group));
    gateway
        .edit_corp_tag(pb::EditCorpTagRequest {
            account_id: "acme-work".into(),
            id: hot.clone(),
            name: "Hotter".into(),
            order: None,
        })
        .await
        .unwrap();
    gateway
        .mark_tags(pb::MarkTagsRequest {
            account_id: "acme-work".into(),
            external_user_id: "wmCustomer1".into(),
            user_id: "zhangsan".into(),
            add: vec![hot.clone()],
            remove: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        wechat.profile(|p| p.tags_on("zhangsan", "wmCustomer1")),
        std::slice::from_ref(&hot)
    );
    // The same validation: nothing to do is INVALID_ARGUMENT, an Official Account too.
    let refused = gateway
        .mark_tags(pb::MarkTagsRequest {
            account_id: "acme-work".into(),
            external_user_id: "wmCustomer1".into(),
            user_id: "zhangsan".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let refused = gateway
        .list_corp_tags(pb::ListCorpTagsRequest {
            account_id: "acme-mp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let deleted = gateway
        .delete_corp_tag(pb::DeleteCorpTagRequest {
            account_id: "acme-work".into(),
            id: group.group_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, "tag_group");
    let missing = gateway
        .delete_corp_tag(pb::DeleteCorpTagRequest {
            account_id: "acme-work".into(),
            id: hot,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.stop().await;
}
