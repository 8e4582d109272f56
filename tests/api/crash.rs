//! The real binary, killed with SIGKILL under load and restarted: every callback it answered
//! with 200 reaches the CRM (by id), on both backends. Assertions are about ids, not timing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wechat_gateway::pb::event::Kind;
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

use crate::support::app::{config_toml, now, AppOptions, MP_APP_ID, MP_KEY, MP_TOKEN};
use crate::support::crm::FakeCrm;
use crate::support::process::GatewayProcess;

/// Sends `total` distinct safe-mode callbacks from 16 tasks; returns the MsgIds answered 200.
/// The gateway is killed after `kill_after` acknowledgements, so the rest fail or race the kill.
async fn load_and_kill(
    gateway: GatewayProcess,
    total: u64,
    kill_after: usize,
    base_id: u64,
) -> HashSet<u64> {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    wechat_gateway::wechat::api::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{}/wechat/mp/acme-mp", gateway.addr);
    let key = MsgCrypto::new(MP_KEY).unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gateway = Arc::new(Mutex::new(Some(gateway)));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, key, next, acked, gateway) = (
            client.clone(),
            url.clone(),
            key.clone(),
            next.clone(),
            acked.clone(),
            gateway.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let msg_id = base_id + i;
                let xml = format!(
                    "<xml><ToUserName>gh_t</ToUserName><FromUserName>oCrash{}</FromUserName><CreateTime>{}</CreateTime>\
                     <MsgType>text</MsgType><Content>n{i}</Content><MsgId>{msg_id}</MsgId></xml>",
                    i % 7,
                    now()
                );
                let enc = key.encrypt(xml.as_bytes(), MP_APP_ID);
                let ts = now().to_string();
                let sig = crypto::msg_signature(MP_TOKEN, &ts, "nn", &enc);
                let resp = client
                    .post(&url)
                    .query(&[("msg_signature", sig.as_str()), ("timestamp", &ts), ("nonce", "nn"), ("encrypt_type", "aes")])
                    .body(format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"))
                    .send()
                    .await;
                if let Ok(r) = resp {
                    if r.status() == 200 {
                        let n = {
                            let mut a = acked.lock().unwrap();
                            a.insert(msg_id);
                            a.len()
                        };
                        if n == kill_after {
                            if let Some(g) = gateway.lock().unwrap().take() {
                                g.kill();
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    if let Some(g) = gateway.lock().unwrap().take() {
        g.kill();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

async fn sigkill_loses_no_acknowledged_event(
    opts: AppOptions,
    dir: &Path,
    crm: &FakeCrm,
    base_id: u64,
) {
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    // The CRM is down during the load, so acknowledged events sit in the outbox when the
    // process dies.
    crm.set_down(true);
    let gateway = GatewayProcess::start(&config);
    let acked = load_and_kill(gateway, 3000, 1000, base_id).await;
    assert!(acked.len() >= 1000, "the load reached the kill point");

    crm.set_down(false);
    let restarted = GatewayProcess::start(&config);
    let events = crm
        .wait_for(
            |evs| {
                let got: HashSet<u64> = evs
                    .iter()
                    .filter_map(|e| match &e.kind {
                        Some(Kind::Text(t)) => Some(t.msg_id as u64),
                        _ => None,
                    })
                    .collect();
                acked.iter().all(|id| got.contains(id))
            },
            Duration::from_secs(120),
        )
        .await;
    let delivered: HashSet<u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Text(t)) => Some(t.msg_id as u64),
            _ => None,
        })
        .collect();
    let missing: Vec<_> = acked.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // At least once, never beyond the same id: every duplicate delivery carries one id per MsgId.
    let mut ids_per_msg = std::collections::HashMap::<u64, HashSet<String>>::new();
    for e in &events {
        if let Some(Kind::Text(t)) = &e.kind {
            ids_per_msg
                .entry(t.msg_id as u64)
                .or_default()
                .insert(e.id.clone());
        }
    }
    assert!(ids_per_msg.values().all(|ids| ids.len() == 1));
    restarted.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_loses_no_acknowledged_event_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let opts = AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint());
    sigkill_loses_no_acknowledged_event(opts, dir.path(), &crm, 7_000_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_loses_no_acknowledged_event_redis() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let url = crate::support::redis::fresh_db_url().await;
    let opts = AppOptions::redis(&url).crm(&crm.endpoint());
    sigkill_loses_no_acknowledged_event(opts, dir.path(), &crm, 8_000_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_loses_no_acknowledged_event_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    // A 3-master cluster of its own (the test config's account ids are fixed).
    let cluster = tokio::task::spawn_blocking(crate::support::redis::RedisCluster::start)
        .await
        .unwrap();
    let opts = AppOptions::redis(&cluster.url()).crm(&crm.endpoint());
    sigkill_loses_no_acknowledged_event(opts, dir.path(), &crm, 9_000_000_000).await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

/// A safe-mode callback to the process at `addr`: its status.
async fn post_safe(client: &reqwest::Client, addr: std::net::SocketAddr, xml: &str) -> u16 {
    let key = MsgCrypto::new(MP_KEY).unwrap();
    let enc = key.encrypt(xml.as_bytes(), MP_APP_ID);
    let ts = now().to_string();
    let sig = crypto::msg_signature(MP_TOKEN, &ts, "nn", &enc);
    client
        .post(format!("http://{addr}/wechat/mp/acme-mp"))
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "nn"),
            ("encrypt_type", "aes"),
        ])
        .body(format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A callback's de-duplication mark is as durable as its event: WeChat's retry of a callback
/// acknowledged before a SIGKILL is recognised after the restart, not recorded a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_sigkill_of_a_callback_marked_before_it_is_still_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let opts = AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    wechat_gateway::wechat::api::install_tls_provider();
    let client = reqwest::Client::new();
    let text = |msg_id: u64| {
        format!(
            "<xml><ToUserName>gh_t</ToUserName><FromUserName>oRetry</FromUserName><CreateTime>{}</CreateTime>\
             <MsgType>text</MsgType><Content>m{msg_id}</Content><MsgId>{msg_id}</MsgId></xml>",
            now()
        )
    };
    let (first, second) = (6_100_000_001u64, 6_100_000_002u64);
    let first_xml = text(first);

    let gateway = GatewayProcess::start(&config);
    assert_eq!(post_safe(&client, gateway.addr, &first_xml).await, 200);
    crm.wait_for(|evs| evs.len() == 1, Duration::from_secs(30))
        .await;
    gateway.kill();

    let restarted = GatewayProcess::start(&config);
    assert_eq!(
        post_safe(&client, restarted.addr, &first_xml).await,
        200,
        "the retry is answered"
    );
    assert_eq!(post_safe(&client, restarted.addr, &text(second)).await, 200);
    let events = crm
        .wait_for(
            |evs| {
                evs.iter()
                    .any(|e| matches!(&e.kind, Some(Kind::Text(t)) if t.msg_id as u64 == second))
            },
            Duration::from_secs(30),
        )
        .await;
    // The first event may be delivered twice (its acknowledgement can die with the process:
    // at least once), but only as the one stored before the kill: a retry recorded anew would
    // carry the restart's receive time.
    let stored: HashSet<_> = events
        .iter()
        .filter(|e| matches!(&e.kind, Some(Kind::Text(t)) if t.msg_id as u64 == first))
        .map(|e| (e.id.clone(), e.received_at))
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "the retry after the restart was recognised, not recorded again: {events:?}"
    );
    restarted.kill();
}
