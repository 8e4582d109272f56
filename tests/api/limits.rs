//! Concurrency limits: one flooded account cannot starve the others. Callbacks over a limit get
//! `503` at once (WeChat retries them), and none of them becomes an event.
//!
//! The slow path is made of real parts: the gateway's Redis sits behind a proxy that holds what
//! the gateway sends, so callbacks that were let in stay in flight (inside the store's record)
//! until the test releases them. Which callbacks are in flight is read from the proxy (their
//! `EVALSHA`s), never guessed from timing. The hold lasts a handful of loopback requests, well
//! inside the Redis store's 2-second response timeout (past it, the held callbacks would get a
//! store 503 instead, and the test would say so: it expects exactly four 200s).

use std::collections::HashSet;
use std::time::Duration;

use wechat_gateway::config;
use wechat_gateway::pb::event::Kind;

use crate::support::app::{config_toml, now, spawn_configured, AppOptions, TestApp};
use crate::support::crm::FakeCrm;
use crate::support::proxy::HoldingProxy;
use crate::support::redis::fresh_db_url;

fn text_xml(from: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><Content>hi {msg_id}</Content><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// Polls `cond` every 10 ms; panics with `what` after 10 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The one Lua call of `record`: one per callback inside the store.
const RECORD_CALL: &[u8] = b"EVALSHA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_account_gets_503s_at_once_while_another_is_served_and_no_503_becomes_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let url = fresh_db_url().await;
    let (redis_addr, db) = url.trim_start_matches("redis://").split_once('/').unwrap();
    let proxy = HoldingProxy::start(redis_addr.parse().unwrap()).await;
    let opts = AppOptions::redis(&format!("redis://{}/{db}", proxy.addr())).crm(&crm.endpoint());
    // Tiny limits: two callbacks per account, four in all.
    let toml = config_toml(&opts).replace(
        "[callbacks]\n",
        "[callbacks]\nmax_in_flight = 4\nmax_in_flight_per_account = 2\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let app = std::sync::Arc::new(spawn_configured(config::load(&path).unwrap()).await);

    let flooded = "acme-plain";
    let other = "acme-compat"; // compatible mode: encrypted, like the third
    let third = "acme-mp";
    let base = now() << 20;

    proxy.hold(true);
    // The flood: 8 at once. Two are let in and stay in flight; the other six are answered now.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut in_flight = Vec::new();
    for i in 0..8u64 {
        let (app, done_tx) = (app.clone(), done_tx.clone());
        in_flight.push(tokio::spawn(async move {
            let r = app.post_plain(flooded, &text_xml("oFlood", base + i)).await;
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let _ = done_tx.send((base + i, status, body.clone()));
            (base + i, status, body)
        }));
    }
    let mut refused = Vec::new();
    while refused.len() < 6 {
        let (msg_id, status, body) = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .expect("six of the flood are answered while two are held")
            .unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("too many callbacks in flight for this account"),
            "{body}"
        );
        refused.push(msg_id);
    }
    until(
        "the flooded account's two callbacks are in the store",
        || proxy.held_count(RECORD_CALL) == 2,
    )
    .await;

    // The other account is let in while the flooded one is at its limit.
    let mut others = Vec::new();
    for i in 0..2u64 {
        let app = app.clone();
        let msg_id = base + 100 + i;
        others.push(tokio::spawn(async move {
            let r = app.post_safe(other, &text_xml("oOther", msg_id)).await;
            (msg_id, r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    until(
        "the other account's two callbacks are in the store too",
        || proxy.held_count(RECORD_CALL) == 4,
    )
    .await;
    // Four in flight: the instance limit refuses a third account, and the flooded one still.
    let r = app.post_safe(third, &text_xml("oThird", base + 200)).await;
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("too many callbacks in flight for this instance"));
    let r = app.post_plain(flooded, &text_xml("oFlood", base + 8)).await;
    assert_eq!(r.status(), 503);
    refused.push(base + 8);

    proxy.hold(false);
    let mut acked = HashSet::new();
    for task in in_flight.into_iter().chain(others) {
        let (msg_id, status, body) = task.await.unwrap();
        if status == 200 {
            acked.insert(msg_id);
        } else {
            assert!(refused.contains(&msg_id), "{msg_id}: {status} {body}");
        }
    }
    assert_eq!(
        acked.len(),
        4,
        "the held callbacks of both accounts are answered 200"
    );
    assert_eq!(
        acked.iter().filter(|id| **id >= base + 100).count(),
        2,
        "the other account was never refused"
    );

    // Limits free again: one more callback per account. Delivery is in order per account, so
    // once these arrive anything recorded before them has arrived too.
    let sentinels = [
        (flooded, base + 300),
        (other, base + 301),
        (third, base + 302),
    ];
    for (account, msg_id) in sentinels {
        let xml = text_xml("oSentinel", msg_id);
        let r = if account == flooded {
            app.post_plain(account, &xml).await
        } else {
            app.post_safe(account, &xml).await
        };
        assert_eq!(r.status(), 200, "{account}");
        acked.insert(msg_id);
    }
    let msg_ids = |events: &[wechat_gateway::pb::Event]| -> HashSet<u64> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Text(t)) => Some(t.msg_id as u64),
                _ => None,
            })
            .collect()
    };
    let events = crm
        .wait_for(
            |evs| sentinels.iter().all(|(_, id)| msg_ids(evs).contains(id)),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        msg_ids(&events),
        acked,
        "exactly the callbacks answered 200 became events; none of the {} refused",
        refused.len()
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let overloaded: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("wgw_callbacks_total")
                && l.contains("outcome=\"overloaded\"")
                && l.contains(&format!("account=\"{flooded}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(overloaded, 7.0, "{metrics}");

    std::sync::Arc::try_unwrap(app)
        .ok()
        .expect("no task holds the app any more")
        .stop()
        .await;
}

/// The limit is checked before anything else: a flood of callbacks for unknown accounts takes
/// instance slots only while they are answered (404), and leaves every slot free afterwards.
#[tokio::test]
async fn limits_free_their_slots_whatever_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"));
    let toml = config_toml(&opts).replace(
        "[callbacks]\n",
        "[callbacks]\nmax_in_flight = 2\nmax_in_flight_per_account = 1\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let app: TestApp = spawn_configured(config::load(&path).unwrap()).await;
    let base = now() << 20;
    // Refusals of every kind, one after another: each gives its slot back.
    for i in 0..5 {
        assert_eq!(
            app.post_plain("no-such-account", &text_xml("o", base + i))
                .await
                .status(),
            404
        );
        assert_eq!(app.post_plain("acme-mp", "<xml/>").await.status(), 400);
        assert_eq!(app.post_plain("acme-plain", "not xml").await.status(), 400);
    }
    for i in 0..5 {
        assert_eq!(
            app.post_plain("acme-plain", &text_xml("oSerial", base + 10 + i))
                .await
                .status(),
            200,
            "one at a time stays within a limit of one per account"
        );
    }
    app.stop().await;
}
