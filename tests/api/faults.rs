//! Faults the gateway must ride out without losing what it acknowledged: a CRM that is
//! unreachable, then slow, then back; three instances on one Redis, one of them killed with
//! undelivered work. Assertions are about ids and counts (every callback answered 200 reaches
//! the CRM, in order per user, duplicates only under the same id), never about timing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use wechat_gateway::config;
use wechat_gateway::pb::{event::Kind, Event};
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

use crate::support::app::{
    config_toml, now, spawn_configured, AppOptions, MP_APP_ID, MP_KEY, MP_TOKEN,
};
use crate::support::crm::FakeCrm;
use crate::support::process::GatewayProcess;
use crate::support::redis::{fresh_db_url, RedisCluster};

fn text_xml(from: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><Content>n{msg_id}</Content><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// POSTs a safe-mode callback for `acme-mp` to the gateway at `addr`, signed and encrypted as
/// WeChat does; returns the status (0 when the request failed).
async fn post_safe(client: &reqwest::Client, addr: SocketAddr, xml: &str) -> u16 {
    let enc = MsgCrypto::new(MP_KEY)
        .unwrap()
        .encrypt(xml.as_bytes(), MP_APP_ID);
    let ts = now().to_string();
    let sig = crypto::msg_signature(MP_TOKEN, &ts, "nf", &enc);
    client
        .post(format!("http://{addr}/wechat/mp/acme-mp"))
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "nf"),
            ("encrypt_type", "aes"),
        ])
        .body(format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn msg_id(e: &Event) -> Option<u64> {
    match &e.kind {
        Some(Kind::Text(t)) => Some(t.msg_id as u64),
        _ => None,
    }
}

/// Every MsgId of `acked` was delivered; each MsgId has one event id, however often it came.
fn assert_all_delivered_under_one_id(events: &[Event], acked: &HashSet<u64>) {
    let mut ids: HashMap<u64, HashSet<&str>> = HashMap::new();
    for e in events {
        if let Some(m) = msg_id(e) {
            ids.entry(m).or_default().insert(&e.id);
        }
    }
    let missing: Vec<_> = acked.iter().filter(|m| !ids.contains_key(m)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged callbacks never reached the CRM: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let split: Vec<_> = ids.iter().filter(|(_, set)| set.len() > 1).collect();
    assert!(
        split.is_empty(),
        "one callback, several event ids: {split:?}"
    );
}

/// Polls `cond` every 20 ms; panics with `what` after `timeout`.
async fn until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The CRM unreachable, then slow, then back
// ---------------------------------------------------------------------------------------------

const USERS: u64 = 5;

async fn crm_unreachable_then_slow_then_back_loses_nothing_and_keeps_order(
    opts: impl FnOnce(&str) -> AppOptions,
    dir: &Path,
) {
    // The CRM's address is known, but nothing listens there yet: connection refused.
    let crm_addr = free_port();
    let mut opts = opts(&format!("http://{crm_addr}"));
    // Small batches: the forwarder claims the next batch while it delivers one, so failures and
    // retries happen with a batch claimed ahead.
    opts.crm_batch_size = Some(4);
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_toml(&opts)).unwrap();
    let app = spawn_configured(config::load(&path).unwrap()).await;
    let client = reqwest::Client::new();
    let base = now() << 20;
    // (user, MsgId) of every callback answered 200, in the order it was sent.
    let mut sent: Vec<(u64, u64)> = Vec::new();
    let mut next = 0u64;
    let mut send = async |n: u64, sent: &mut Vec<(u64, u64)>| {
        for _ in 0..n {
            let (user, msg) = (next % USERS, base + next);
            next += 1;
            let status =
                post_safe(&client, app.addr, &text_xml(&format!("oFault{user}"), msg)).await;
            assert_eq!(status, 200, "the callback path never waits on the CRM");
            sent.push((user, msg));
        }
    };

    send(20, &mut sent).await;
    // Give the forwarder time to fail against the refused connection a few times.
    tokio::time::sleep(Duration::from_millis(800)).await;
    send(10, &mut sent).await;

    // Now it listens, but answers after the gateway's deadline (crm.timeout_ms = 2000): every
    // call the gateway makes times out and is retried.
    let crm = FakeCrm::start_on(crm_addr).await;
    crm.set_delay(Duration::from_millis(2500));
    send(10, &mut sent).await;
    until(
        "a delivery is tried against the slow CRM",
        Duration::from_secs(30),
        || crm.calls() >= 1,
    )
    .await;
    send(10, &mut sent).await;

    // Slow but inside the deadline.
    crm.set_delay(Duration::from_millis(300));
    let calls = crm.calls();
    send(20, &mut sent).await;
    until(
        "deliveries reach the CRM while it is slow",
        Duration::from_secs(30),
        || crm.calls() >= calls + 2,
    )
    .await;

    // Back to normal.
    crm.set_delay(Duration::ZERO);
    send(20, &mut sent).await;

    let acked: HashSet<u64> = sent.iter().map(|(_, m)| *m).collect();
    let events = crm
        .wait_for(
            |evs| {
                let got: HashSet<u64> = evs.iter().filter_map(msg_id).collect();
                acked.is_subset(&got)
            },
            Duration::from_secs(60),
        )
        .await;
    assert_all_delivered_under_one_id(&events, &acked);

    // Order per user: the first delivery of each event, per user, is in the order sent.
    let mut first_seen = HashSet::new();
    let mut delivered: HashMap<u64, Vec<u64>> = HashMap::new();
    for e in &events {
        let Some(m) = msg_id(e) else { continue };
        if first_seen.insert(e.id.clone()) {
            let user: u64 = e.open_id.trim_start_matches("oFault").parse().unwrap();
            delivered.entry(user).or_default().push(m);
        }
    }
    for user in 0..USERS {
        let expected: Vec<u64> = sent
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, m)| *m)
            .collect();
        assert_eq!(delivered[&user], expected, "order of user {user}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_unreachable_then_slow_then_back_gets_every_event_in_order_per_user_redis() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_db_url().await;
    crm_unreachable_then_slow_then_back_loses_nothing_and_keeps_order(
        |crm| AppOptions::redis(&url).crm(crm),
        dir.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_unreachable_then_slow_then_back_gets_every_event_in_order_per_user_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let url = cluster.url();
    crm_unreachable_then_slow_then_back_loses_nothing_and_keeps_order(
        |crm| AppOptions::redis(&url).crm(crm),
        dir.path(),
    )
    .await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_unreachable_then_slow_then_back_gets_every_event_in_order_per_user_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crm_unreachable_then_slow_then_back_loses_nothing_and_keeps_order(
        |crm| AppOptions::embedded(&data).crm(crm),
        dir.path(),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Three instances on one Redis, one killed with undelivered work
// ---------------------------------------------------------------------------------------------

/// `XPENDING <outbox> forwarders`: how many entries are pending, and on which consumers.
async fn pending_by_consumer(url: &str) -> (u64, Vec<(String, u64)>) {
    let mut xpending = redis::cmd("XPENDING");
    xpending.arg("wgw:{acme-mp}:outbox").arg("forwarders");
    let reply: redis::Value = if url.contains(',') {
        let nodes: Vec<&str> = url.split(',').collect();
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        xpending.query_async(&mut conn).await.unwrap()
    } else {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        xpending.query_async(&mut conn).await.unwrap()
    };
    let redis::Value::Array(parts) = reply else {
        panic!("XPENDING: {reply:?}")
    };
    let count: u64 = redis::from_redis_value(parts[0].clone()).unwrap();
    let consumers: Vec<(String, u64)> = match &parts[3] {
        redis::Value::Array(list) => list
            .iter()
            .map(|c| {
                let (name, n): (String, String) = redis::from_redis_value(c.clone()).unwrap();
                (name, n.parse().unwrap())
            })
            .collect(),
        _ => Vec::new(),
    };
    (count, consumers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_deliver_what_a_killed_one_left_and_a_retry_elsewhere_keeps_its_id(
) {
    three_instances_one_killed(&fresh_db_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_deliver_what_a_killed_one_left_and_a_retry_elsewhere_keeps_its_id(
) {
    // A cluster of its own: the test's account ids are the fixed ones of the test config.
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    three_instances_one_killed(&cluster.url()).await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

async fn three_instances_one_killed(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    crm.set_down(true);
    // A short lease, so that the survivors take over the killed instance's accounts quickly.
    let toml = config_toml(&AppOptions::redis(url).crm(&crm.endpoint()))
        .replace("[store]\n", "[store]\nredis_lease_seconds = 2\n");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    wechat_gateway::wechat::api::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = now() << 20;

    // The first instance takes the account's delivery lease: its first delivery attempt proves
    // it (the others are started only then, and stand by).
    let first = GatewayProcess::start(&path);
    assert_eq!(
        post_safe(&client, first.addr, &text_xml("oMulti0", base)).await,
        200
    );
    let mut acked = HashSet::from([base]);
    until(
        "the first instance tries to deliver",
        Duration::from_secs(30),
        || crm.calls() >= 1,
    )
    .await;
    let others = [GatewayProcess::start(&path), GatewayProcess::start(&path)];
    let addrs = [first.addr, others[0].addr, others[1].addr];

    // 300 callbacks spread over the three instances, 8 at a time; every tenth is sent again
    // to the next instance, as WeChat's retry would land on another one behind a balancer.
    let mut retried = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=300u64 {
        let (client, addrs) = (client.clone(), addrs);
        let again = i % 10 == 0;
        if again {
            retried.insert(base + i);
        }
        tasks.spawn(async move {
            let xml = text_xml(&format!("oMulti{}", i % 7), base + i);
            let at = addrs[i as usize % 3];
            let mut ok = post_safe(&client, at, &xml).await == 200;
            if again {
                let elsewhere = addrs[(i as usize + 1) % 3];
                ok &= post_safe(&client, elsewhere, &xml).await == 200;
            }
            (base + i, ok)
        });
        while tasks.len() >= 8 {
            let (m, ok) = tasks.join_next().await.unwrap().unwrap();
            assert!(
                ok,
                "{m}: every instance takes callbacks while the CRM is down"
            );
            acked.insert(m);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (m, ok) = done.unwrap();
        assert!(ok, "{m}");
        acked.insert(m);
    }

    // Undelivered work sits claimed by one consumer only: the lease holder.
    let (pending, consumers) = pending_by_consumer(url).await;
    assert!(
        pending > 0,
        "the lease holder has claimed a batch it cannot deliver"
    );
    assert_eq!(
        consumers.len(),
        1,
        "one instance at a time delivers an account: {consumers:?}"
    );
    let holder_port = first.addr.port();
    assert!(
        consumers[0].0.ends_with(&format!("-{holder_port}")),
        "the first instance holds the batch: {consumers:?}"
    );

    first.kill();
    crm.set_down(false);
    let events = crm
        .wait_for(
            |evs| {
                let got: HashSet<u64> = evs.iter().filter_map(msg_id).collect();
                acked.is_subset(&got)
            },
            Duration::from_secs(60),
        )
        .await;
    assert_all_delivered_under_one_id(&events, &acked);
    assert_eq!(acked.len(), 301);
    // The retries sent to another instance were de-duplicated there: one event each in the
    // outbox (delivered possibly more than once, but under one id, checked above).
    let distinct: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        301,
        "one event per callback, retries included"
    );
    assert_eq!(retried.len(), 30);
    drop(others);
}

// ---------------------------------------------------------------------------------------------
// The whole Redis Cluster stopped and restarted under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_cluster_down_callbacks_get_503_and_the_gateway_recovers_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let opts = AppOptions::redis(&cluster.url()).crm(&crm.endpoint());
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config_toml(&opts)).unwrap();
    let app = spawn_configured(config::load(&path).unwrap()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = now() << 20;
    let mut acked = HashSet::new();
    for i in 0..20 {
        let xml = text_xml(&format!("oOutage{}", i % 3), base + i);
        assert_eq!(post_safe(&client, app.addr, &xml).await, 200);
        acked.insert(base + i);
    }

    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_all();
        cluster
    })
    .await
    .unwrap();
    // While it is down: 503, never a 200 without a stored event.
    for i in 20..30 {
        let xml = text_xml(&format!("oOutage{}", i % 3), base + i);
        assert_eq!(post_safe(&client, app.addr, &xml).await, 503, "{i}");
    }
    assert_eq!(
        client
            .get(format!("http://{}/readyz", app.addr))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart_all();
        cluster
    })
    .await
    .unwrap();
    // WeChat retries the refused callbacks; the gateway reconnects by itself and takes them.
    // Generous: three nodes restart and the cluster client relearns the slots; on a loaded
    // 2-core CI machine this took over 30 s once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for i in 20..40 {
        let xml = text_xml(&format!("oOutage{}", i % 3), base + i);
        loop {
            match post_safe(&client, app.addr, &xml).await {
                200 => break,
                503 => {}
                other => panic!("{i}: {other}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway did not recover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked.insert(base + i);
    }
    assert_eq!(
        client
            .get(format!("http://{}/readyz", app.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let events = crm
        .wait_for(
            |evs| {
                let got: HashSet<u64> = evs.iter().filter_map(msg_id).collect();
                acked.is_subset(&got)
            },
            Duration::from_secs(60),
        )
        .await;
    assert_all_delivered_under_one_id(&events, &acked);
    app.stop().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
