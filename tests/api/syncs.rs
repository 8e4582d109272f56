//! Audience syncs against the fake WeChat API (`support::fake_wechat::audience`: `user/get`
//! pages of 10,000 by `next_openid`, WeCom's `batch/get_by_user` by cursor): every follower
//! (every customer–member pair) reaches the fake CRM as one snapshot, by id, through quota
//! answers, token expiry and SIGKILLs; one sync at a time per account; validation before any
//! WeChat call. The SIGKILL tests run the real binary, like `crash.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{self, Event};

use crate::support::app::{config_toml, spawn_app, AppOptions, TestApp, ADMIN_TOKEN, MP_APP_ID};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::audience::{customer, follower};
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::process::GatewayProcess;
use crate::support::redis::fresh_db_url;

const USER_GET: &str = "/cgi-bin/user/get";
const BATCHGET: &str = "/cgi-bin/user/info/batchget";
const FOLLOW_USERS: &str = "/cgi-bin/externalcontact/get_follow_user_list";
const BY_USER: &str = "/cgi-bin/externalcontact/batch/get_by_user";
const WAIT: Duration = Duration::from_secs(180);

/// `[syncs]` at `calls_per_minute`, with short backoffs and a 2 s lease.
fn syncs_toml(calls_per_minute: u32) -> String {
    format!(
        "[syncs]\ncalls_per_minute = {calls_per_minute}\nbackoff_min_ms = 100\n\
         backoff_max_seconds = 1\nlease_seconds = 2\n"
    )
}

async fn app(
    wechat: &FakeWeChat,
    crm: Option<&FakeCrm>,
    calls_per_minute: u32,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = syncs_toml(calls_per_minute);
    if let Some(crm) = crm {
        opts = opts.crm(&crm.endpoint());
    }
    (spawn_app(opts, dir.path()).await, dir)
}

async fn admin_at(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, format!("http://{addr}/admin/v1/accounts/{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn start(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    account: &str,
    kind: &str,
) -> String {
    let (status, body) = admin_at(
        client,
        addr,
        reqwest::Method::POST,
        &format!("{account}/syncs"),
        Some(&json!({"kind": kind})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "running");
    body["sync_id"].as_str().unwrap().to_owned()
}

/// Polls the sync until `done` holds (panics with its last state after [`WAIT`]).
async fn wait_sync(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    account: &str,
    sync_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_sync_for(client, addr, account, sync_id, done, WAIT).await
}

async fn wait_sync_for(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    account: &str,
    sync_id: &str,
    done: impl Fn(&Value) -> bool,
    patience: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = admin_at(
            client,
            addr,
            reqwest::Method::GET,
            &format!("{account}/syncs/{sync_id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < patience,
            "the sync did not get there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(s: &Value) -> bool {
    s["status"] == "finished" || s["status"] == "failed"
}

/// Waits until the CRM holds `n` distinct snapshot ids of the sync (re-deliveries after a kill
/// may repeat an id: at least once), then returns the snapshots.
async fn snapshots(crm: &FakeCrm, sync_id: &str, n: usize) -> Vec<Event> {
    snapshots_for(crm, sync_id, n, WAIT).await
}

async fn snapshots_for(crm: &FakeCrm, sync_id: &str, n: usize, patience: Duration) -> Vec<Event> {
    let started = Instant::now();
    loop {
        let events: Vec<Event> = crm
            .accepted()
            .into_iter()
            .filter(|e| e.sync_id == sync_id)
            .collect();
        let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert!(ids.len() <= n, "more snapshots than people: {}", ids.len());
        if ids.len() == n {
            return events;
        }
        assert!(
            started.elapsed() < patience,
            "{} of {n} snapshots reached the CRM",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each follower `0..n` has exactly one snapshot id, and each id one follower.
fn each_follower_once(events: &[Event], n: usize) {
    let mut ids_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in events {
        let Some(Kind::FollowerSnapshot(s)) = &e.kind else {
            panic!("not a follower snapshot: {e:?}");
        };
        assert_eq!(s.open_id, e.open_id);
        ids_of.entry(&e.open_id).or_default().insert(&e.id);
    }
    assert_eq!(ids_of.len(), n, "followers with a snapshot");
    for i in 0..n {
        let ids = ids_of
            .get(follower(i).as_str())
            .unwrap_or_else(|| panic!("{} has no snapshot", follower(i)));
        assert_eq!(ids.len(), 1, "{} has {} ids", follower(i), ids.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sync_reads_every_page_and_forwards_each_follower_once() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    wechat.set_followers(20_001);
    let (app, _dir) = app(&wechat, Some(&crm), 60_000).await;
    let sync_id = start(&app.http, app.addr, "acme-mp", "followers").await;
    let s = wait_sync(&app.http, app.addr, "acme-mp", &sync_id, finished).await;
    assert_eq!(s["status"], "finished", "{s}");
    assert_eq!(s["users"], 20_001);
    assert_eq!(s["pages"], 3);
    assert_eq!(s["failures"], 0);
    assert_eq!(s["kind"], "followers");
    assert!(s["finished_at"].as_u64().unwrap() >= s["created_at"].as_u64().unwrap());

    // Pages of 10,000 by next_openid, the last page's last openid, then the empty answer.
    let pages: Vec<String> = wechat
        .requests_to(USER_GET)
        .iter()
        .map(|r| r.query.get("next_openid").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        pages,
        ["", &follower(9_999), &follower(19_999), &follower(20_000)]
    );
    let batches = wechat.requests_to(BATCHGET);
    assert_eq!(batches.len(), 201, "ceil(20,001 / 100) profile calls");
    assert!(batches
        .iter()
        .all(|b| b.body["user_list"].as_array().unwrap().len() <= 100));

    let events = snapshots(&crm, &sync_id, 20_001).await;
    each_follower_once(&events, 20_001);
    let e = events.iter().find(|e| e.open_id == follower(42)).unwrap();
    assert_eq!(e.account_id, "acme-mp");
    assert_eq!(e.union_id, format!("union-{}", follower(42)));
    assert_eq!(
        e.occurred_at.unwrap().seconds,
        s["created_at"].as_i64().unwrap()
    );
    let Some(Kind::FollowerSnapshot(snap)) = &e.kind else {
        unreachable!()
    };
    assert_eq!(snap.tag_ids, [2]);
    assert_eq!(snap.qr_scene_str, "spring-expo");
    assert_eq!(snap.subscribe_scene, "ADD_SCENE_QR_CODE");
    assert_eq!(snap.language, "zh_CN");
    assert_eq!(snap.subscribed_at.unwrap().seconds, 1_764_547_200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_answers_and_token_expiry_in_the_middle_pause_and_resume_without_losing_anyone() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    wechat.set_followers(3_000);
    // 10 calls a second: the test acts while the sync is at its first pages.
    let (app, _dir) = app(&wechat, Some(&crm), 600).await;
    let sync_id = start(&app.http, app.addr, "acme-mp", "followers").await;
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !f() {
            assert!(started.elapsed() < WAIT, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    until("three profile batches", &|| wechat.count(BATCHGET) >= 3);
    // The daily quota, then WeChat busy, then the minute quota: each pauses the sync.
    wechat.inject(BATCHGET, Injected::Errcode(45009), 1);
    wechat.inject(BATCHGET, Injected::Errcode(-1), 3);
    wechat.inject(BATCHGET, Injected::Errcode(45011), 1);
    let paused = wait_sync(&app.http, app.addr, "acme-mp", &sync_id, |s| {
        s["status"] == "paused"
    })
    .await;
    assert!(paused["paused_until"].as_u64().is_some(), "{paused}");
    assert!(paused["last_error"].as_str().unwrap().contains("45009"));
    until("two more batches", &|| wechat.count(BATCHGET) >= 12);
    // The token stops working (another system forced a refresh): replaced, and the call made
    // again with the new one.
    let tokens_before = wechat.count("/cgi-bin/stable_token");
    let old_token = wechat.current_token(MP_APP_ID).unwrap();
    let requests_before = wechat.requests().len();
    wechat.invalidate_tokens();
    let s = wait_sync(&app.http, app.addr, "acme-mp", &sync_id, finished).await;
    assert_eq!(s["status"], "finished", "{s}");
    assert_eq!(s["users"], 3_000);
    assert_eq!(s["failures"], 0);
    assert!(s["pauses"].as_u64().unwrap() >= 2, "{s}");
    assert!(wechat.count("/cgi-bin/stable_token") > tokens_before);
    let rejected = wechat.requests()[requests_before..]
        .iter()
        .filter(|r| r.path == BATCHGET && r.token() == old_token)
        .count();
    assert!(rejected >= 1, "a call was made with the expired token");
    let events = snapshots(&crm, &sync_id, 3_000).await;
    each_follower_once(&events, 3_000);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_while_one_runs_is_a_409_conflict_and_a_cancelled_sync_frees_the_account() {
    let wechat = FakeWeChat::start().await;
    wechat.set_followers(500);
    // One call a second: the first sync is still running when the second start comes.
    let (app, _dir) = app(&wechat, None, 60).await;
    let sync_id = start(&app.http, app.addr, "acme-mp", "followers").await;
    let (status, body) = admin_at(
        &app.http,
        app.addr,
        reqwest::Method::POST,
        "acme-mp/syncs",
        Some(&json!({"kind": "followers"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&sync_id));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let refused = gateway
        .start_sync(pb::StartSyncRequest {
            account_id: "acme-mp".into(),
            kind: "followers".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    let got = gateway
        .get_sync(pb::GetSyncRequest {
            account_id: "acme-mp".into(),
            sync_id: sync_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.sync_id, sync_id);
    assert_eq!(got.kind, "followers");
    assert!(got.status == "running" || got.status == "paused");
    assert_eq!(got.actor, "ops");
    // Another account is not held up by it: WeCom starts over gRPC.
    wechat.set_customers(&[("zhangsan", 0..3)]);
    let other = gateway
        .start_sync(pb::StartSyncRequest {
            account_id: "acme-work".into(),
            kind: "external_contacts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.status, "running");
    let unknown = gateway
        .get_sync(pb::GetSyncRequest {
            account_id: "acme-mp".into(),
            sync_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Cancelled, the sync stops (at most the call in flight still lands) and the account is
    // free for the next start.
    let (status, cancelled) = admin_at(
        &app.http,
        app.addr,
        reqwest::Method::POST,
        &format!("acme-mp/syncs/{sync_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].as_u64().is_some());
    let calls = wechat.count(BATCHGET) + wechat.count(USER_GET);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(wechat.count(BATCHGET) + wechat.count(USER_GET) <= calls + 1);
    let again = gateway
        .cancel_sync(pb::GetSyncRequest {
            account_id: "acme-mp".into(),
            sync_id: sync_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "cancelled");
    let next = start(&app.http, app.addr, "acme-mp", "followers").await;
    assert_ne!(next, sync_id);
    let done = wait_sync(&app.http, app.addr, "acme-work", &other.sync_id, finished).await;
    assert_eq!(done["status"], "finished");
    let late = gateway
        .cancel_sync(pb::GetSyncRequest {
            account_id: "acme-work".into(),
            sync_id: other.sync_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_validated_before_any_wechat_call() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, 600).await;
    for (account, body, status) in [
        ("acme-work", json!({"kind": "followers"}), 400),
        ("acme-mp", json!({"kind": "external_contacts"}), 400),
        ("acme-mp", json!({"kind": "everyone"}), 400),
        ("acme-mp", json!({"kind": "followers", "extra": 1}), 400),
        ("acme-mp", json!({}), 400),
        ("nobody", json!({"kind": "followers"}), 404),
    ] {
        let (got, answer) = admin_at(
            &app.http,
            app.addr,
            reqwest::Method::POST,
            &format!("{account}/syncs"),
            Some(&body),
        )
        .await;
        assert_eq!(got, status, "{account} {body}: {answer}");
    }
    let (got, _) = admin_at(
        &app.http,
        app.addr,
        reqwest::Method::GET,
        "acme-mp/syncs/0123456789abcdef01234567",
        None,
    )
    .await;
    assert_eq!(got, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wechat.requests().is_empty(), "{:?}", wechat.requests());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_sync_reads_each_members_customers_by_cursor_one_event_per_pair() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    // Customers 200..250 are customers of both members.
    wechat.set_customers(&[("zhangsan", 0..250), ("lisi", 200..320)]);
    let (app, _dir) = app(&wechat, Some(&crm), 60_000).await;
    let sync_id = start(&app.http, app.addr, "acme-work", "external_contacts").await;
    let s = wait_sync(&app.http, app.addr, "acme-work", &sync_id, finished).await;
    assert_eq!(s["status"], "finished", "{s}");
    assert_eq!(s["users"], 370, "one per (customer, member) pair");
    assert_eq!(s["pages"], 5);
    assert_eq!(wechat.count(FOLLOW_USERS), 1);
    let calls: Vec<(String, String, u64)> = wechat
        .requests_to(BY_USER)
        .iter()
        .map(|r| {
            (
                r.body["userid_list"][0].as_str().unwrap().to_owned(),
                r.body["cursor"].as_str().unwrap().to_owned(),
                r.body["limit"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("zhangsan", ""),
        ("zhangsan", "cur-100"),
        ("zhangsan", "cur-200"),
        ("lisi", ""),
        ("lisi", "cur-100"),
    ]
    .iter()
    .map(|(m, c)| ((*m).to_owned(), (*c).to_owned(), 100))
    .collect();
    assert_eq!(calls, expected);

    let events = snapshots(&crm, &sync_id, 370).await;
    let mut members_of: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &events {
        let Some(Kind::ExternalContactSnapshot(c)) = &e.kind else {
            panic!("not an external contact snapshot: {e:?}");
        };
        assert_eq!(c.external_user_id, e.external_user_id);
        assert_eq!(c.follow_users.len(), 1);
        assert_eq!(c.follow_users[0].user_id, e.user_id);
        members_of
            .entry(e.external_user_id.clone())
            .or_default()
            .insert(e.user_id.clone());
    }
    assert_eq!(members_of.len(), 320, "distinct customers");
    assert_eq!(
        members_of[&customer(210)],
        HashSet::from(["zhangsan".to_owned(), "lisi".to_owned()])
    );
    assert_eq!(members_of[&customer(10)].len(), 1);
    let e = events
        .iter()
        .find(|e| e.external_user_id == customer(7))
        .unwrap();
    let Some(Kind::ExternalContactSnapshot(c)) = &e.kind else {
        unreachable!()
    };
    assert_eq!(c.name, "Customer 7");
    assert_eq!(c.union_id, format!("union-{}", customer(7)));
    assert_eq!(e.union_id, c.union_id);
    let f = &c.follow_users[0];
    assert_eq!(f.state, "spring-expo");
    assert_eq!(f.add_way, 1);
    assert_eq!(f.tags[0].tag_id, "et1");
    assert_eq!(f.created_at.unwrap().seconds, 1_764_547_207);
    app.stop().await;
}

/// The real binary, killed mid-sync and started again (embedded: the same store; Redis: a
/// second instance with its own name): the sync resumes from its cursor and every follower
/// reaches the CRM under one id. With `quota_at`, a quota answer pauses it after that many
/// profile calls. Each wait gives up after `patience`. Returns (wall time, user/get calls,
/// batchget calls, events delivered).
#[expect(clippy::too_many_arguments, reason = "one helper for three tests")]
async fn sigkill_mid_sync(
    wechat: &FakeWeChat,
    crm: &FakeCrm,
    mut opts: AppOptions,
    dir: &std::path::Path,
    followers: usize,
    kill_after_batches: usize,
    quota_at: Option<usize>,
    patience: Duration,
) -> (Duration, usize, usize, usize) {
    wechat_gateway::wechat::api::install_tls_provider();
    wechat.set_followers(followers);
    opts.extra_toml = syncs_toml(60_000);
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let client = reqwest::Client::new();
    let began = Instant::now();
    let gateway = GatewayProcess::start(&config);
    let sync_id = start(&client, gateway.addr, "acme-mp", "followers").await;
    let started = Instant::now();
    let mut quota = quota_at;
    while wechat.count(BATCHGET) < kill_after_batches {
        if quota.is_some_and(|at| wechat.count(BATCHGET) >= at) {
            wechat.inject(BATCHGET, Injected::Errcode(45009), 2);
            quota = None;
        }
        assert!(started.elapsed() < patience, "the sync never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.kill();
    let done_before = wechat.count(BATCHGET);
    assert!(done_before < followers.div_ceil(100), "killed mid-sync");

    let restarted = GatewayProcess::start(&config);
    let s = wait_sync_for(
        &client,
        restarted.addr,
        "acme-mp",
        &sync_id,
        finished,
        patience,
    )
    .await;
    assert_eq!(s["status"], "finished", "{s}");
    assert_eq!(s["users"], followers as u64);
    if quota_at.is_some() {
        assert!(s["pauses"].as_u64().unwrap() >= 1, "{s}");
    }
    let events = snapshots_for(crm, &sync_id, followers, patience).await;
    let wall = began.elapsed();
    restarted.kill();
    each_follower_once(&events, followers);
    (
        wall,
        wechat.count(USER_GET),
        wechat.count(BATCHGET),
        events.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_with_sigkill_resumes_and_forwards_each_follower_once_embedded() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    sigkill_mid_sync(&wechat, &crm, opts, dir.path(), 12_000, 50, None, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_with_sigkill_resumes_on_another_instance_and_forwards_each_follower_once_redis(
) {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_db_url().await;
    let opts = AppOptions::redis(&url)
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    sigkill_mid_sync(&wechat, &crm, opts, dir.path(), 12_000, 50, None, WAIT).await;
}

/// The 250,000-follower run of [`a_sync_of_250k_followers_with_a_quota_pause_and_a_sigkill_forwards_each_once`]
/// on one backend: prints its wall time and WeChat calls.
async fn sync_of_250k(opts: impl FnOnce(&FakeWeChat, &FakeCrm, &std::path::Path) -> AppOptions) {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = opts(&wechat, &crm, dir.path());
    let (wall, user_get, batchget, delivered) = sigkill_mid_sync(
        &wechat,
        &crm,
        opts,
        dir.path(),
        250_000,
        1_300,
        Some(600),
        Duration::from_secs(3600),
    )
    .await;
    let distinct: HashSet<String> = crm
        .accepted()
        .into_iter()
        .filter(|e| matches!(e.kind, Some(Kind::FollowerSnapshot(_))))
        .map(|e| e.id)
        .collect();
    assert_eq!(distinct.len(), 250_000);
    println!(
        "250k sync: wall {:.1} s; WeChat calls: user/get {user_get}, user/info/batchget \
         {batchget}, stable_token {}; snapshot events delivered {delivered} ({} distinct ids)",
        wall.as_secs_f64(),
        wechat.count("/cgi-bin/stable_token"),
        distinct.len()
    );
}

/// Issue 14's "Done when": 250,000 followers, a quota pause in the middle and a SIGKILL, end
/// with exactly 250,000 snapshot ids, each follower once. Slow (minutes): run with
/// `cargo test --locked --test api syncs::a_sync_of_250k -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "250,000 followers: minutes; run on purpose"]
async fn a_sync_of_250k_followers_with_a_quota_pause_and_a_sigkill_forwards_each_once() {
    sync_of_250k(|wechat, crm, dir| {
        AppOptions::embedded(&dir.join("data"))
            .wechat(&wechat.base())
            .crm(&crm.endpoint())
    })
    .await;
}

/// The same on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "250,000 followers: minutes; run on purpose"]
async fn a_sync_of_250k_followers_with_a_quota_pause_and_a_sigkill_forwards_each_once_redis() {
    let url = fresh_db_url().await;
    sync_of_250k(|wechat, crm, _| {
        AppOptions::redis(&url)
            .wechat(&wechat.base())
            .crm(&crm.endpoint())
    })
    .await;
}

/// An account whose sync cannot be read (its document corrupt) fails its turn on every pass of
/// the runner: it backs off on its own, with one warning, instead of a warning every second;
/// another account's sync still runs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_sync_cannot_be_read_backs_off_with_one_warning() {
    use wechat_gateway::store::embedded::EmbeddedStore;
    use wechat_gateway::store::{DocWrite, Documents};
    wechat_gateway::wechat::api::install_tls_provider();
    let wechat = FakeWeChat::start().await;
    wechat.set_followers(30);
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = EmbeddedStore::open(&data, Duration::from_secs(3600)).unwrap();
        let current = br#"{"sync_id":"s-broken","at":1}"#;
        for (kind, id, bytes) in [
            ("sync-current", "current", &current[..]),
            ("sync", "s-broken", b"{not json"),
        ] {
            assert!(store
                .put_doc("acme-work", kind, id, bytes, DocWrite::Always, None)
                .await
                .unwrap());
        }
    }
    let mut opts = AppOptions::embedded(&data)
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    opts.extra_toml = syncs_toml(60_000);
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let sync_id = start(&client, gateway.addr, "acme-mp", "followers").await;
    wait_sync_for(&client, gateway.addr, "acme-mp", &sync_id, finished, WAIT).await;
    // The runner passes every second: four passes at least since the start.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let failed = gateway.wait_for_log("audience sync turn failed", 1);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].contains("acme-work"), "{}", failed[0]);
    assert!(failed[0].contains("retry_in_ms"), "{}", failed[0]);
}
