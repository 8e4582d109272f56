//! Identity enrichment and the privacy purge: the forwarder looks users up in the fake's
//! `user/info/batchget` (100 per call, as WeChat documents it), caches them, attaches
//! `union_id` and `profile`, never holds an event back for a lookup, and on an unsubscribe
//! deletes what it holds about the user and says so in `Unsubscribe.data_purged`.

use std::time::Duration;

use serde_json::json;
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::Event;

use crate::links::{app_with, create_link, open_in_wechat};
use crate::support::app::{now, spawn_app, text_xml, AppOptions, TestApp, WORK_CORP_ID};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const WAIT: Duration = Duration::from_secs(30);
const BATCHGET: &str = "/cgi-bin/user/info/batchget";

fn event_xml(from: &str, event: &str) -> String {
    event_xml_at(from, event, now())
}

fn event_xml_at(from: &str, event: &str, at: u64) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>event</MsgType><Event>{event}</Event><EventKey></EventKey></xml>",
        at
    )
}

async fn post(app: &TestApp, xml: &str) {
    assert_eq!(app.post_plain("acme-plain", xml).await.status(), 200);
}

/// An app on `dir/data` whose CRM is unreachable, so that every callback it takes stays in the
/// outbox for the [`enriching_app`] started on the same data next.
async fn filling_app(dir: &std::path::Path) -> TestApp {
    let opts = AppOptions::embedded(&dir.join("data")).crm("http://127.0.0.1:1");
    spawn_app(opts, dir).await
}

/// An app on `dir/data` that delivers to `crm` and looks users up in `wechat`.
async fn enriching_app(dir: &std::path::Path, crm: &FakeCrm, wechat: &FakeWeChat) -> TestApp {
    let opts = AppOptions::embedded(&dir.join("data"))
        .crm(&crm.endpoint())
        .wechat(&wechat.base());
    spawn_app(opts, dir).await
}

fn texts_of<'e>(events: &'e [Event], open_id: &str) -> Vec<&'e Event> {
    events
        .iter()
        .filter(|e| e.open_id == open_id && matches!(e.kind, Some(Kind::Text(_))))
        .collect()
}

#[tokio::test]
async fn enrichment_adds_union_id_and_profile_from_batchget_batched_by_100_and_cached() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    // First the callbacks arrive while the CRM is unreachable, so that the outbox holds all
    // 250 when the forwarder (with WeChat) starts: its batches are then full (100, 100, 50).
    let filling = filling_app(dir.path()).await;
    for i in 0..250u64 {
        post(
            &filling,
            &text_xml(&format!("oUser{i:03}"), "hello", 7_000_000 + i),
        )
        .await;
    }
    filling.stop().await;

    let app = enriching_app(dir.path(), &crm, &wechat).await;
    let events = crm.wait_for(|evs| evs.len() >= 250, WAIT).await;
    let calls = wechat.requests_to(BATCHGET);
    assert_eq!(calls.len(), 3, "250 users are ceil(250/100) = 3 calls");
    let mut asked: Vec<String> = Vec::new();
    for call in &calls {
        let list = call.body["user_list"].as_array().unwrap();
        assert!(list.len() <= 100, "{}", list.len());
        for u in list {
            assert_eq!(u["lang"], "zh_CN");
            asked.push(u["openid"].as_str().unwrap().to_owned());
        }
    }
    asked.sort();
    asked.dedup();
    assert_eq!(asked.len(), 250);
    for e in &events {
        assert_eq!(e.union_id, format!("union-{}", e.open_id), "{e:?}");
        let p = e.profile.as_ref().expect("a profile");
        assert_eq!(p.subscribe_scene, "ADD_SCENE_QR_CODE");
        assert_eq!(p.qr_scene_str, "spring-expo");
        assert_eq!(p.tag_ids, vec![2]);
        assert_eq!(p.subscribed_at.as_ref().unwrap().seconds, 1_764_547_200);
        assert!(p.fetched_at.as_ref().unwrap().seconds >= now() as i64 - 60);
    }

    // Users seen lately are not looked up again: the cache answers.
    for i in 0..5u64 {
        post(
            &app,
            &text_xml(&format!("oUser{i:03}"), "hello", 8_000_000 + i),
        )
        .await;
    }
    let events = crm.wait_for(|evs| evs.len() >= 255, WAIT).await;
    for e in &events[250..] {
        assert_eq!(e.union_id, format!("union-{}", e.open_id));
    }
    assert_eq!(wechat.count(BATCHGET), 3, "cached users cost no call");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_lookup_does_not_hold_the_event_back_and_a_later_event_is_enriched() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    // 45009: the daily quota of the API is used up; WeChat says so at once, not retried.
    wechat.inject(BATCHGET, Injected::Errcode(45009), 1);
    post(&app, &text_xml("oUnlucky", "hello", 1)).await;
    let events = crm
        .wait_for(|evs| !texts_of(evs, "oUnlucky").is_empty(), WAIT)
        .await;
    let first = texts_of(&events, "oUnlucky")[0];
    assert_eq!(first.union_id, "", "delivered without enrichment");
    assert!(first.profile.is_none());
    assert_eq!(wechat.count(BATCHGET), 1);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wgw_enrichment_failures_total") && l.contains("acme-plain")),
        "{metrics}"
    );

    // The account's lookups pause a moment after a failure; later events enrich the user.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut msg_id = 2;
    loop {
        post(&app, &text_xml("oUnlucky", "hello", msg_id)).await;
        let events = crm
            .wait_for(|evs| texts_of(evs, "oUnlucky").len() as u64 >= msg_id, WAIT)
            .await;
        if texts_of(&events, "oUnlucky")
            .iter()
            .any(|e| e.union_id == "union-oUnlucky")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never enriched after the failure"
        );
        msg_id += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unsubscribe_purges_the_cache_and_click_memory_says_so_and_the_next_event_looks_up_again(
) {
    let dir = tempfile::tempdir().unwrap();
    purge_on_unsubscribe(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
}

#[tokio::test]
async fn the_purge_on_unsubscribe_works_the_same_on_the_redis_store() {
    let dir = tempfile::tempdir().unwrap();
    purge_on_unsubscribe(AppOptions::redis(&fresh_db_url().await), dir.path()).await;
}

async fn purge_on_unsubscribe(opts: AppOptions, config_dir: &std::path::Path) {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let app = spawn_app(opts.wechat(&wechat.base()).crm(&crm.endpoint()), config_dir).await;
    let (status, link) = create_link(
        &app,
        "acme-plain",
        &json!({"target": "https://acme.com/leaving", "label": "L"}),
    )
    .await;
    assert_eq!(status, 200, "{link}");
    let short = link["url"].as_str().unwrap();
    let link_clicks = |evs: &[Event]| {
        evs.iter()
            .filter(|e| e.open_id == "oLeaver" && matches!(e.kind, Some(Kind::LinkClick(_))))
            .count()
    };

    // The follower opens the link: a click (and a lookup: one batchget call, then cached).
    wechat.set_oauth_user("oLeaver");
    open_in_wechat(&app, short).await;
    crm.wait_for(|evs| link_clicks(evs) == 1, WAIT).await;
    post(&app, &text_xml("oLeaver", "hello", 1)).await;
    let events = crm
        .wait_for(|evs| !texts_of(evs, "oLeaver").is_empty(), WAIT)
        .await;
    assert_eq!(texts_of(&events, "oLeaver")[0].union_id, "union-oLeaver");
    assert_eq!(wechat.count(BATCHGET), 1);
    // Opening it again at once is the same click: the gateway remembers their last clicks.
    open_in_wechat(&app, short).await;
    post(&app, &text_xml("oLeaver", "hello", 2)).await;
    let events = crm
        .wait_for(|evs| texts_of(evs, "oLeaver").len() == 2, WAIT)
        .await;
    assert_eq!(link_clicks(&events), 1);

    // They unsubscribe: the gateway deletes what it holds and the event says so.
    wechat.set_unsubscribed("oLeaver");
    post(&app, &event_xml("oLeaver", "unsubscribe")).await;
    let events = crm
        .wait_for(
            |evs| {
                evs.iter()
                    .any(|e| matches!(e.kind, Some(Kind::Unsubscribe(_))))
            },
            WAIT,
        )
        .await;
    let unsubscribe = events
        .iter()
        .find(|e| matches!(e.kind, Some(Kind::Unsubscribe(_))))
        .unwrap();
    assert!(
        matches!(&unsubscribe.kind, Some(Kind::Unsubscribe(u)) if u.data_purged),
        "{unsubscribe:?}"
    );
    assert_eq!(
        unsubscribe.union_id, "union-oLeaver",
        "the CRM learns whom to purge"
    );
    assert!(unsubscribe.profile.is_none());
    assert_eq!(wechat.count(BATCHGET), 1, "an unsubscribe is not looked up");

    // Nothing stale survives: the next event is looked up again (WeChat now answers
    // subscribe 0, with no unionid), and a new open of the link is a new click.
    post(&app, &text_xml("oLeaver", "hello", 3)).await;
    let events = crm
        .wait_for(|evs| texts_of(evs, "oLeaver").len() == 3, WAIT)
        .await;
    assert_eq!(wechat.count(BATCHGET), 2, "the cache entry was gone");
    let after = texts_of(&events, "oLeaver")[2];
    assert_eq!(after.union_id, "", "no stale unionid: {after:?}");
    open_in_wechat(&app, short).await;
    crm.wait_for(|evs| link_clicks(evs) == 2, WAIT).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wecom_external_contact_gets_its_unionid_and_name_and_is_forgotten_when_it_leaves() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app_with(&wechat, &crm).await;
    let contact = |change: &str, at: u64| {
        format!(
            "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>\
             <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmCustomer1]]></ExternalUserID>\
             </xml>",
            at
        )
    };
    let xml = contact("add_external_contact", now());
    assert_eq!(app.post_safe("acme-work", &xml).await.status(), 200);
    let events = crm.wait_for(|evs| !evs.is_empty(), WAIT).await;
    assert_eq!(events[0].union_id, "union-wmCustomer1");
    assert_eq!(
        events[0].profile.as_ref().unwrap().name,
        "Customer wmCustomer1"
    );
    let call = &wechat.requests_to("/cgi-bin/externalcontact/get")[0];
    assert_eq!(call.query["external_userid"], "wmCustomer1");

    // The customer deletes the member: the cached contact is dropped, so when they are added
    // again, externalcontact/get is asked again.
    // (Later CreateTimes: the same change in the same second is the same callback.)
    for (change, at) in [
        ("del_follow_user", now() + 1),
        ("add_external_contact", now() + 2),
    ] {
        assert_eq!(
            app.post_safe("acme-work", &contact(change, at))
                .await
                .status(),
            200
        );
        crm.wait_for(
            |evs| {
                evs.iter().any(|e| {
                    matches!(&e.kind, Some(Kind::ExternalContactChange(c)) if c.change_type == change)
                        && e.occurred_at.as_ref().is_some_and(|t| t.seconds == at as i64)
                })
            },
            WAIT,
        )
        .await;
    }
    let events = crm.wait_for(|evs| evs.len() >= 3, WAIT).await;
    assert_eq!(
        wechat.count("/cgi-bin/externalcontact/get"),
        2,
        "looked up again after the purge"
    );
    assert_eq!(events[2].union_id, "union-wmCustomer1");
    app.stop().await;
}

#[tokio::test]
async fn an_unsubscribe_and_a_new_follow_in_one_batch_purge_then_enrich_afresh_even_when_retried() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The follower is known and cached.
    let app = enriching_app(dir.path(), &crm, &wechat).await;
    post(&app, &text_xml("oBack", "hello", 1)).await;
    crm.wait_for(|evs| evs.len() == 1, WAIT).await;
    assert_eq!(wechat.count(BATCHGET), 1);
    app.stop().await;

    // They leave and follow again while no forwarder runs, so both land in one batch.
    let filling = filling_app(dir.path()).await;
    // CreateTime has whole seconds: the new follow must come a second after the cached lookup
    // for that entry to be out of date.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = now();
    for event in ["unsubscribe", "subscribe"] {
        post(&filling, &event_xml_at("oBack", event, at)).await;
    }
    filling.stop().await;

    // The CRM refuses the batch a few times: each attempt is enriched again.
    crm.set_down(true);
    let app = enriching_app(dir.path(), &crm, &wechat).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while crm.calls() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crm.set_down(false);
    let events = crm.wait_for(|evs| evs.len() == 3, WAIT).await;
    match &events[1].kind {
        Some(Kind::Unsubscribe(u)) => assert!(u.data_purged),
        other => panic!("{other:?}"),
    }
    assert!(matches!(events[2].kind, Some(Kind::Subscribe(_))));
    assert_eq!(events[2].union_id, "union-oBack");
    assert!(events[2].profile.is_some(), "{:?}", events[2]);
    assert_eq!(
        wechat.count(BATCHGET),
        2,
        "one lookup for the new follow, none for the retries"
    );

    // What the new follow cached stays: the next event costs no call.
    post(&app, &text_xml("oBack", "hello", 2)).await;
    let events = crm.wait_for(|evs| evs.len() == 4, WAIT).await;
    assert_eq!(events[3].union_id, "union-oBack");
    assert_eq!(wechat.count(BATCHGET), 2);
    app.stop().await;
}

#[tokio::test]
async fn an_openid_wechat_refuses_is_isolated_by_halving_and_the_others_are_still_enriched() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let filling = filling_app(dir.path()).await;
    for (i, user) in ["bogus-user", "oP1", "oP2", "oP3", "oP4"]
        .iter()
        .enumerate()
    {
        post(&filling, &text_xml(user, "hello", 9_000 + i as u64)).await;
    }
    filling.stop().await;

    let app = enriching_app(dir.path(), &crm, &wechat).await;
    let events = crm.wait_for(|evs| evs.len() == 5, WAIT).await;
    for e in &events {
        let want = if e.open_id == "bogus-user" {
            String::new()
        } else {
            format!("union-{}", e.open_id)
        };
        assert_eq!(e.union_id, want, "{e:?}");
    }
    // 40003 refuses the whole call: [5 users] → [bogus, oP1] + [oP2..oP4] → [bogus] + [oP1].
    let sizes: Vec<usize> = wechat
        .requests_to(BATCHGET)
        .iter()
        .map(|r| r.body["user_list"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![5, 2, 1, 1, 3]);
    // The account was not paused: a new follower right after is enriched.
    post(&app, &text_xml("oP5", "hello", 9_100)).await;
    let events = crm.wait_for(|evs| evs.len() == 6, WAIT).await;
    assert_eq!(events[5].union_id, "union-oP5");
    app.stop().await;
}

#[tokio::test]
async fn lapsed_user_cache_and_click_entries_are_swept_out_of_redis_by_the_running_gateway() {
    use wechat_gateway::store::redis::RedisStore;
    use wechat_gateway::store::{DocWrite, Documents};

    let dir = tempfile::tempdir().unwrap();
    let url = fresh_db_url().await;
    let mut opts = AppOptions::redis(&url);
    opts.store_toml = "sweep_interval_seconds = 1".into();
    let app = spawn_app(opts, dir.path()).await;
    // The records the forwarder and the link redirects write with a TTL, written through the
    // same store API by a second client of the same Redis: two lapse soon, one does not.
    let store = RedisStore::connect(&url, vec!["acme-plain".into()], Duration::from_secs(60))
        .await
        .unwrap();
    let soon = Some(Duration::from_millis(500));
    for (kind, id, ttl) in [
        ("user", "oGone", soon),
        ("link_clicks", "oGone", soon),
        ("user", "oKept", None),
    ] {
        assert!(store
            .put_doc("acme-plain", kind, id, b"{}", DocWrite::Always, ttl)
            .await
            .unwrap());
    }
    let redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let fields = |key: &'static str| {
        let mut conn = redis.clone();
        async move {
            let ids: Vec<String> = redis::cmd("HKEYS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            ids
        }
    };
    assert_eq!(fields("wgw:{acme-plain}:docs:user").await.len(), 2);

    // Within a few sweeps after the TTL the lapsed entries are removed, not only hidden.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(fields("wgw:{acme-plain}:docs:user").await == ["oKept"]
        && fields("wgw:{acme-plain}:docs:link_clicks").await.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lapsed entries were never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        store
            .doc("acme-plain", "user", "oKept")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{}"[..])
    );
    app.stop().await;
}
