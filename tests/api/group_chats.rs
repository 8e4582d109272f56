//! WeCom customer groups (issue 14, item 3) against the fake WeChat API: the list paged by
//! cursor and filtered by owner, one group with its members, group join codes in the scene
//! registry, and one event per member who joined or left a group, with the join code's label.

use std::time::Duration;

use serde_json::json;
use wechat_gateway::pb;
use wechat_gateway::pb::event::Kind;
use wechat_gateway::sandbox::wecom_profile::ChatMember;

use crate::links::app_with;
use crate::support::app::{now, WORK_CORP_ID};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};

const WAIT: Duration = Duration::from_secs(30);
const LIST: &str = "/cgi-bin/externalcontact/groupchat/list";
const GET: &str = "/cgi-bin/externalcontact/groupchat/get";
const ADD_WAY: &str = "/cgi-bin/externalcontact/groupchat/add_join_way";

fn member(id: &str, member_type: i32, join_time: u64, state: &str) -> ChatMember {
    ChatMember {
        id: id.into(),
        member_type,
        name: format!("Name of {id}"),
        join_time,
        join_scene: 3,
        invitor: "zhangsan".into(),
        state: state.into(),
    }
}

/// A `change_external_chat` update callback (92130 客户群变更事件) naming its members.
fn chat_change(detail: &str, chat_id: &str, members: &[&str], at: u64) -> String {
    let items: String = members
        .iter()
        .map(|m| format!("<Item><![CDATA[{m}]]></Item>"))
        .collect();
    format!(
        "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[{chat_id}]]></ChatId>\
         <ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[{detail}]]></UpdateDetail>\
         <JoinScene>2</JoinScene><QuitScene>1</QuitScene><MemChangeCnt>{}</MemChangeCnt>\
         <MemChangeList>{items}</MemChangeList></xml>",
        members.len()
    )
}

#[tokio::test]
async fn group_chats_are_listed_page_by_page_with_the_cursor_and_by_owner() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| {
        for i in 0..5 {
            let owner = if i < 3 { "zhangsan" } else { "lisi" };
            p.add_chat(&format!("wrChat{i}"), "g", owner, 1);
        }
    });
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/accounts/acme-work/group-chats?limit=2".to_owned(),
            Some(c) => format!("/accounts/acme-work/group-chats?limit=2&cursor={c}"),
        };
        let (status, page) = app.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for c in page["group_chats"].as_array().unwrap() {
            assert_eq!(c["status"], 0);
            seen.push(c["chat_id"].as_str().unwrap().to_owned());
        }
        match page.get("next_cursor") {
            Some(next) => cursor = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["wrChat0", "wrChat1", "wrChat2", "wrChat3", "wrChat4"]
    );
    assert_eq!(
        wechat.requests_to(LIST)[1].body,
        json!({"status_filter": 0, "cursor": "sandbox-cursor-2", "limit": 2})
    );

    let (_, owned) = app
        .admin("GET", "/accounts/acme-work/group-chats?owner=lisi", None)
        .await;
    let ids: Vec<&str> = owned["group_chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chat_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["wrChat3", "wrChat4"]);
    assert_eq!(
        wechat.requests_to(LIST).last().unwrap().body["owner_filter"],
        json!({"userid_list": ["lisi"]})
    );

    // Out of WeCom's ranges, or an Official Account: 400, and no call.
    let calls = wechat.count(LIST);
    for (path, says) in [
        ("/accounts/acme-work/group-chats?limit=0", "limit"),
        ("/accounts/acme-work/group-chats?limit=1001", "limit"),
        ("/accounts/acme-work/group-chats?limit=ten", "limit"),
        ("/accounts/acme-work/group-chats?status=4", "status"),
        ("/accounts/acme-mp/group-chats", "WeCom"),
    ] {
        let (status, body) = app.admin("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    assert_eq!(wechat.count(LIST), calls);
    app.stop().await;
}

#[tokio::test]
async fn a_join_code_registers_its_scene_and_the_group_shows_members_with_its_label() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| p.add_chat("wrVip", "VIP", "zhangsan", 1_700_000_000));

    let (status, way) = app
        .admin(
            "POST",
            "/accounts/acme-work/group-chat-join-ways",
            Some(&json!({"scene": "expo-group", "label": "Expo VIP group",
                "chat_ids": ["wrVip"], "remark": "booth 7"})),
        )
        .await;
    assert_eq!(status, 200, "{way}");
    let config_id = way["config_id"].as_str().unwrap().to_owned();
    assert_eq!(way["scene"], "expo-group");
    assert!(way["qr_code"].as_str().unwrap().contains(&config_id));
    assert_eq!(
        wechat.requests_to(ADD_WAY)[0].body,
        json!({"scene": 2, "remark": "booth 7", "auto_create_room": 0,
            "chat_id_list": ["wrVip"], "state": "expo-group"})
    );

    // Someone joins through it.
    let state = wechat.profile(|p| p.join_way_state(&config_id)).unwrap();
    wechat.profile(|p| p.join("wrVip", member("wmGuest", 2, 1_700_000_100, &state)));
    let (status, chat) = app
        .admin("GET", "/accounts/acme-work/group-chats/wrVip", None)
        .await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(
        (chat["name"].as_str(), chat["owner"].as_str()),
        (Some("VIP"), Some("zhangsan"))
    );
    let guest = &chat["members"][1];
    assert_eq!(
        guest,
        &json!({"id": "wmGuest", "type": 2, "name": "Name of wmGuest", "group_nickname": "",
            "union_id": "uSandbox-wmGuest", "join_time": 1_700_000_100, "join_scene": 3,
            "invitor": "zhangsan", "state": "expo-group", "label": "Expo VIP group"})
    );
    assert_eq!(
        wechat.requests_to(GET)[0].body,
        json!({"chat_id": "wrVip", "need_name": 1})
    );

    // An unknown group: WeCom's 40050 is a 404.
    let (status, body) = app
        .admin("GET", "/accounts/acme-work/group-chats/wrNoSuch", None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("40050"));

    // Checked before WeCom: 1 to 5 groups, a state of 1 to 30 characters, a base name only
    // with auto_create_room; a code on an Official Account.
    let calls = wechat.count(ADD_WAY);
    for body in [
        json!({"scene": "s", "chat_ids": []}),
        json!({"scene": "s", "chat_ids": ["a", "b", "c", "d", "e", "f"]}),
        json!({"scene": "x".repeat(31), "chat_ids": ["wrVip"]}),
        json!({"scene": "s", "chat_ids": ["wrVip"], "room_base_name": "g"}),
        json!({"scene": "s", "chat_ids": ["wrVip"], "auto_create_room": true}),
        json!({"scene": true, "chat_ids": ["wrVip"]}),
    ] {
        let (status, answer) = app
            .admin(
                "POST",
                "/accounts/acme-work/group-chat-join-ways",
                Some(&body),
            )
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, _) = app
        .admin(
            "POST",
            "/accounts/acme-mp/group-chat-join-ways",
            Some(&json!({"scene": "s", "chat_ids": ["wrVip"]})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count(ADD_WAY), calls);
    app.stop().await;
}

#[tokio::test]
async fn members_joining_and_leaving_a_group_become_one_event_each_with_the_join_codes_label() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| p.add_chat("wrVip", "VIP", "zhangsan", 1_700_000_000));
    let (status, way) = app
        .admin(
            "POST",
            "/accounts/acme-work/group-chat-join-ways",
            Some(&json!({"scene": "expo-group", "label": "Expo VIP group", "chat_ids": ["wrVip"]})),
        )
        .await;
    assert_eq!(status, 200);
    let state = wechat
        .profile(|p| p.join_way_state(way["config_id"].as_str().unwrap()))
        .unwrap();
    wechat.profile(|p| {
        p.join("wrVip", member("wmGuest", 2, 1_700_000_100, &state));
        p.join("wrVip", member("lisi", 1, 1_700_000_101, ""));
    });

    let at = now();
    let add = chat_change("add_member", "wrVip", &["wmGuest", "lisi"], at);
    assert_eq!(app.post_safe("acme-work", &add).await.status(), 200);
    let joined = |evs: &[pb::Event]| -> Vec<pb::Event> {
        evs.iter()
            .filter(|e| matches!(e.kind, Some(Kind::GroupMemberJoined(_))))
            .cloned()
            .collect()
    };
    let events = crm.wait_for(|evs| joined(evs).len() >= 2, WAIT).await;
    let joins = joined(&events);
    assert_eq!(joins.len(), 2);
    let guest = joins
        .iter()
        .find(|e| e.external_user_id == "wmGuest")
        .unwrap();
    assert_eq!(guest.label, "Expo VIP group");
    assert_eq!(
        guest.kind,
        Some(Kind::GroupMemberJoined(pb::GroupMemberJoined {
            chat_id: "wrVip".into(),
            member_id: "wmGuest".into(),
            member_type: 2,
            joined_at: Some(pb::Timestamp {
                seconds: 1_700_000_100,
                nanos: 0
            }),
            join_scene: 3,
            invitor: "zhangsan".into(),
            state: "expo-group".into(),
            name: "Name of wmGuest".into(),
            group_nickname: String::new(),
            union_id: "uSandbox-wmGuest".into(),
            chat_name: "VIP".into(),
            owner: "zhangsan".into(),
        }))
    );
    let colleague = joins.iter().find(|e| e.user_id == "lisi").unwrap();
    assert_eq!(colleague.label, "", "no join code, no label");
    assert_ne!(guest.id, colleague.id);
    // The callback's own event is delivered too, with its member list.
    assert!(events.iter().any(|e| matches!(&e.kind,
        Some(Kind::ExternalChatChange(c)) if c.mem_change_list == ["wmGuest", "lisi"])));
    assert_eq!(wechat.count(GET), 1);

    // WeChat retries the same callback: nothing new, and the group is not read again.
    assert_eq!(app.post_safe("acme-work", &add).await.status(), 200);

    // Two leave: one event each, with the callback's time and QuitScene.
    wechat.profile(|p| {
        p.leave("wrVip", "wmGuest");
        p.leave("wrVip", "lisi");
    });
    let del = chat_change("del_member", "wrVip", &["wmGuest", "lisi"], at + 1);
    assert_eq!(app.post_safe("acme-work", &del).await.status(), 200);
    let left = |evs: &[pb::Event]| -> Vec<pb::Event> {
        evs.iter()
            .filter(|e| matches!(e.kind, Some(Kind::GroupMemberLeft(_))))
            .cloned()
            .collect()
    };
    let events = crm.wait_for(|evs| left(evs).len() >= 2, WAIT).await;
    let leaves = left(&events);
    let guest_left = leaves
        .iter()
        .find(|e| e.external_user_id == "wmGuest")
        .unwrap();
    assert_eq!(
        guest_left.kind,
        Some(Kind::GroupMemberLeft(pb::GroupMemberLeft {
            chat_id: "wrVip".into(),
            member_id: "wmGuest".into(),
            left_at: Some(pb::Timestamp {
                seconds: (at + 1) as i64,
                nanos: 0
            }),
            quit_scene: 1,
        }))
    );
    assert!(leaves.iter().any(|e| e.user_id == "lisi"));
    assert_eq!(
        joined(&events).len(),
        2,
        "the retried callback added no join events"
    );
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event once");
    assert_eq!(wechat.count(GET), 1, "a leave does not read the group");
    app.stop().await;
}

#[tokio::test]
async fn a_group_that_cannot_be_read_still_gives_one_join_event_per_member_from_the_callback() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    wechat.profile(|p| p.add_chat("wrVip", "VIP", "zhangsan", 1));
    wechat.inject(GET, Injected::Errcode(48002), 1);
    let at = now();
    let add = chat_change("add_member", "wrVip", &["wmLate"], at);
    assert_eq!(app.post_safe("acme-work", &add).await.status(), 200);
    let events = crm
        .wait_for(
            |evs| {
                evs.iter()
                    .any(|e| matches!(e.kind, Some(Kind::GroupMemberJoined(_))))
            },
            WAIT,
        )
        .await;
    let join = events
        .iter()
        .find(|e| matches!(e.kind, Some(Kind::GroupMemberJoined(_))))
        .unwrap();
    assert_eq!(join.external_user_id, "wmLate");
    assert_eq!(
        join.kind,
        Some(Kind::GroupMemberJoined(pb::GroupMemberJoined {
            chat_id: "wrVip".into(),
            member_id: "wmLate".into(),
            joined_at: Some(pb::Timestamp {
                seconds: at as i64,
                nanos: 0
            }),
            join_scene: 2,
            ..Default::default()
        }))
    );
    app.stop().await;
}
