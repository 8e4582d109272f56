//! The store contract, checked the same way on both backends (`store::embedded::*` and
//! `store::redis::*`), then what only one backend has: the embedded file lock; Redis consumers
//! taking over each other's work, one round trip per record, and a Redis restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wechat_gateway::domain::Secret;
use wechat_gateway::pb;
use wechat_gateway::store::embedded::EmbeddedStore;
use wechat_gateway::store::redis::RedisStore;
use wechat_gateway::store::{
    CachedToken, DocWrite, LeaseKey, MenuVersion, Outbox, OutboxEntry, Recorded, SceneRecord,
    Store, StoreError,
};

use crate::support::redis::{fresh_db_url, shared_url, RedisServer};

const TTL: Duration = Duration::from_secs(3600);
const NO_WAIT: Duration = Duration::ZERO;
const CONSUMER: &str = "gateway-1";

/// A backend under test: two accounts of its own, and stores opened over the same data.
trait Backend {
    fn accounts(&self) -> [&str; 2];
    /// A new store over this backend's data; the embedded one needs the previous one dropped.
    async fn open(&self) -> Arc<dyn Store>;
}

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Embedded {
    fn accounts(&self) -> [&str; 2] {
        ["acme", "beta"]
    }

    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(&self.dir.path().join("data"), TTL).unwrap())
    }
}

/// The shared `redis-server`, with account ids no other test uses.
struct Redis {
    url: String,
    accounts: [String; 2],
}

impl Redis {
    fn new() -> Self {
        Self::on(shared_url())
    }

    /// Another Redis: the shared 3-master cluster (`store.redis_url` as a node list).
    fn on(url: String) -> Self {
        let [a, b] = unique_accounts();
        Self {
            url,
            accounts: [a, b],
        }
    }
}

impl Backend for Redis {
    fn accounts(&self) -> [&str; 2] {
        [&self.accounts[0], &self.accounts[1]]
    }

    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            RedisStore::connect(&self.url, self.accounts.to_vec(), TTL)
                .await
                .unwrap(),
        )
    }
}

fn unique_accounts<const N: usize>() -> [String; N] {
    let run: u32 = rand::random();
    std::array::from_fn(|i| format!("t{run:08x}-{i}"))
}

fn event(account: &str, id: &str) -> pb::Event {
    pb::Event {
        id: id.into(),
        account_id: account.into(),
        open_id: format!("o-{id}"),
        ..Default::default()
    }
}

fn ids(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.event.id.as_str()).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims and acknowledges until the outbox is empty; returns the events in claim order.
async fn drain(store: &dyn Store) -> Vec<pb::Event> {
    let mut events = Vec::new();
    loop {
        let batch = store.claim(CONSUMER, 50, NO_WAIT).await.unwrap();
        if batch.is_empty() {
            return events;
        }
        store.ack(&batch).await.unwrap();
        events.extend(batch.into_iter().map(|e| e.event));
    }
}

// The contract, one function per rule; `conformance!` runs each on both backends.

async fn a_new_event_is_recorded_once_and_its_retry_is_a_duplicate(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    assert_eq!(store.record(&event(a, "e1")).await.unwrap(), Recorded::New);
    assert_eq!(
        store.record(&event(a, "e1")).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(store.record(&event(a, "e2")).await.unwrap(), Recorded::New);
    assert_eq!(store.outbox_stats().await.unwrap().depth, 2);
    store.ping().await.unwrap();
}

async fn a_claimed_event_is_delivered_intact_and_gone_once_acknowledged(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    let recorded = event(a, "e1");
    store.record(&recorded).await.unwrap();
    let claimed = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, recorded);
    store.ack(&claimed).await.unwrap();
    assert!(store.claim(CONSUMER, 10, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(
        store.outbox_stats().await.unwrap(),
        Default::default(),
        "empty outbox, no oldest event"
    );
}

async fn events_claimed_but_not_acknowledged_are_claimed_again(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    for id in ["e1", "e2"] {
        store.record(&event(a, id)).await.unwrap();
    }
    let first = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&first), ["e1", "e2"]);
    let again = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
    assert_eq!(
        ids(&again),
        ["e1", "e2"],
        "a delivery that failed is not lost"
    );
    store.ack(&again).await.unwrap();
    assert!(store.claim(CONSUMER, 10, NO_WAIT).await.unwrap().is_empty());
}

async fn a_claim_ahead_returns_only_what_follows_the_batch_in_flight_and_loses_nothing(
    b: impl Backend,
) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    for i in 0..5 {
        store.record(&event(a, &format!("e{i}"))).await.unwrap();
    }
    let first = store.claim_account(CONSUMER, a, 2, NO_WAIT).await.unwrap();
    assert_eq!(ids(&first), ["e0", "e1"]);
    let ahead = store
        .claim_next(CONSUMER, Some(a), first.last().unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(
        ids(&ahead),
        ["e2", "e3"],
        "the batch after the one in flight"
    );
    store.ack(&first).await.unwrap();
    let more = store
        .claim_next(CONSUMER, Some(a), ahead.last().unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(ids(&more), ["e4"]);
    let none = store
        .claim_next(CONSUMER, Some(a), more.last().unwrap(), 2)
        .await
        .unwrap();
    assert!(none.is_empty(), "{:?}", ids(&none));
    // Nothing acknowledged is lost to the claims ahead: a fresh claim returns all of it.
    let fresh = store.claim_account(CONSUMER, a, 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&fresh), ["e2", "e3", "e4"]);
    store.ack(&fresh).await.unwrap();
    assert!(store
        .claim_account(CONSUMER, a, 10, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

async fn claims_return_at_most_max_events_oldest_first_in_order_per_account(b: impl Backend) {
    let store = b.open().await;
    let [a, c] = b.accounts();
    let mut recorded = Vec::new();
    for i in 0..10 {
        let account = if i % 3 == 0 { c } else { a };
        let e = event(account, &format!("e{i}"));
        store.record(&e).await.unwrap();
        recorded.push(e);
    }
    let mut claimed = Vec::new();
    loop {
        let batch = store.claim(CONSUMER, 3, NO_WAIT).await.unwrap();
        assert!(batch.len() <= 3, "{:?}", ids(&batch));
        if batch.is_empty() {
            break;
        }
        store.ack(&batch).await.unwrap();
        claimed.extend(batch.into_iter().map(|e| e.event));
    }
    for account in [a, c] {
        let of = |events: &[pb::Event]| -> Vec<String> {
            events
                .iter()
                .filter(|e| e.account_id == account)
                .map(|e| e.id.clone())
                .collect()
        };
        assert_eq!(of(&claimed), of(&recorded), "account {account}");
    }
    assert_eq!(claimed.len(), recorded.len());
}

async fn a_claim_waits_for_an_event_recorded_meanwhile(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let claimed = store
                .claim(CONSUMER, 10, Duration::from_secs(5))
                .await
                .unwrap();
            (claimed, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.record(&event(a, "late")).await.unwrap();
    let (claimed, waited) = waiting.await.unwrap();
    assert_eq!(ids(&claimed), ["late"]);
    assert!(
        waited < Duration::from_secs(4),
        "woken by the record: {waited:?}"
    );
}

async fn a_claim_with_nothing_to_deliver_returns_empty_after_its_wait(b: impl Backend) {
    let store = b.open().await;
    let started = Instant::now();
    let claimed = store
        .claim(CONSUMER, 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(claimed.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

async fn a_dead_letter_leaves_the_outbox_and_its_replay_puts_it_back(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    let rejected = event(a, "bad");
    store.record(&rejected).await.unwrap();
    store.record(&event(a, "good")).await.unwrap();
    let before = unix_now();
    let claimed = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&claimed), ["bad", "good"]);
    store
        .dead_letter(&claimed[0], "open_id unknown to the CRM")
        .await
        .unwrap();
    store.ack(&claimed[1..]).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    assert!(store.claim(CONSUMER, 10, NO_WAIT).await.unwrap().is_empty());

    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event, rejected);
    assert_eq!(dead[0].reason, "open_id unknown to the CRM");
    assert!((before..=unix_now()).contains(&dead[0].failed_at));

    assert!(!store.replay_dead_letter("no-such-id").await.unwrap());
    assert!(store.replay_dead_letter("bad").await.unwrap());
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert!(
        !store.replay_dead_letter("bad").await.unwrap(),
        "replayed once"
    );
    let replayed = drain(&*store).await;
    assert_eq!(replayed, [rejected], "the original event, id included");
}

async fn dead_letters_are_listed_oldest_first_up_to_the_limit(b: impl Backend) {
    let store = b.open().await;
    let [a, c] = b.accounts();
    for (account, id) in [(a, "d1"), (c, "d2"), (a, "d3")] {
        store.record(&event(account, id)).await.unwrap();
        let claimed = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
        store.dead_letter(&claimed[0], id).await.unwrap();
    }
    let all: Vec<_> = store
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(all.len(), 3);
    let position = |reason: &str| all.iter().position(|r| r == reason).unwrap();
    // Across accounts, events of the same millisecond may come in either order.
    assert!(position("d1") < position("d3"), "{all:?}");
    let first_two = store.dead_letters(2).await.unwrap();
    let first_two: Vec<_> = first_two.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(first_two, all[..2], "the limit keeps the oldest");
}

async fn outbox_stats_count_undelivered_events_and_age_the_oldest(b: impl Backend) {
    let store = b.open().await;
    let [a, c] = b.accounts();
    assert_eq!(store.outbox_stats().await.unwrap(), Default::default());
    for (account, id) in [(a, "e1"), (c, "e2"), (a, "e3")] {
        store.record(&event(account, id)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 3);
    // Per account too (wgw_outbox_depth{account}): a lagging account shows as itself.
    let per_account = |stats: &wechat_gateway::store::OutboxStats| {
        stats
            .accounts
            .iter()
            .map(|(id, backlog)| (id.clone(), backlog.depth))
            .collect::<Vec<_>>()
    };
    let mut expected = vec![(a.to_owned(), 2), (c.to_owned(), 1)];
    expected.sort();
    assert_eq!(per_account(&stats), expected, "{stats:?}");
    assert!(stats.accounts.values().all(|b| b.oldest_age.is_some()));
    let age = stats.oldest_age.expect("an oldest event");
    assert!(
        age >= Duration::from_millis(10) && age < Duration::from_secs(60),
        "{age:?}"
    );
    let claimed = store.claim(CONSUMER, 2, NO_WAIT).await.unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        3,
        "claimed is not delivered"
    );
    store.ack(&claimed).await.unwrap();
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 1);
    assert_eq!(stats.accounts.values().map(|b| b.depth).sum::<u64>(), 1);
}

async fn two_hundred_concurrent_records_are_all_durable_without_duplicates(b: impl Backend) {
    let store = b.open().await;
    let [a, c] = b.accounts();
    // 100 events, each received twice at the same moment (WeChat's retry racing the original).
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let e = event(if i % 2 == 0 { a } else { c }, &format!("e{}", i % 100));
            tokio::spawn(async move { store.record(&e).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        if task.await.unwrap() == Recorded::New {
            new += 1;
        }
    }
    assert_eq!(new, 100, "one New per event id");
    drop(store);
    let store = b.open().await;
    let delivered = drain(&*store).await;
    let unique: HashSet<_> = delivered.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(delivered.len(), 100, "no duplicate in the outbox");
    assert_eq!(unique.len(), 100);
}

async fn de_duplication_and_the_outbox_survive_reopening_the_store(b: impl Backend) {
    let [a, _] = b.accounts();
    let store = b.open().await;
    store.record(&event(a, "e1")).await.unwrap();
    store.record(&event(a, "e2")).await.unwrap();
    let claimed = store.claim(CONSUMER, 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&claimed), ["e1"]);
    drop(store);

    let store = b.open().await;
    assert_eq!(
        store.record(&event(a, "e1")).await.unwrap(),
        Recorded::Duplicate
    );
    let delivered = drain(&*store).await;
    let delivered: Vec<_> = delivered.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        delivered,
        ["e1", "e2"],
        "the unacknowledged claim comes back first"
    );
}

async fn a_cached_token_is_evicted_only_while_it_is_still_the_rejected_one(b: impl Backend) {
    let store = b.open().await;
    let key = format!("mp-{}", b.accounts()[0]);
    assert_eq!(store.cached_token(&key).await.unwrap(), None);
    let t1 = CachedToken {
        token: Secret::new("t1"),
        expires_at_ms: 1_000,
        forced_at_ms: 7,
        forced_day: 3,
        forced_today: 2,
    };
    store.put_token(&key, &t1).await.unwrap();
    assert_eq!(store.cached_token(&key).await.unwrap().as_ref(), Some(&t1));
    assert!(
        !store.evict_token(&key, "t0").await.unwrap(),
        "not the cached one"
    );
    assert!(!store.evict_token(&key, "").await.unwrap());
    assert!(store.evict_token(&key, "t1").await.unwrap());
    assert!(
        !store.evict_token(&key, "t1").await.unwrap(),
        "already evicted"
    );
    let evicted = store.cached_token(&key).await.unwrap().unwrap();
    assert!(evicted.token.is_empty());
    assert_eq!(
        (
            evicted.forced_at_ms,
            evicted.forced_day,
            evicted.forced_today
        ),
        (7, 3, 2),
        "the force-refresh budget outlives the eviction"
    );
    let t2 = CachedToken {
        token: Secret::new("t2"),
        ..t1
    };
    store.put_token(&key, &t2).await.unwrap();
    assert!(
        !store.evict_token(&key, "t1").await.unwrap(),
        "replaced meanwhile"
    );
    assert_eq!(
        store.cached_token(&key).await.unwrap().unwrap().token,
        Secret::new("t2")
    );
}

async fn one_owner_at_a_time_holds_a_token_lease_until_it_releases_or_it_lapses(b: impl Backend) {
    let store = b.open().await;
    let key = LeaseKey::token_refresh(&format!("mp-{}", b.accounts()[1]));
    let long = Duration::from_secs(30);
    assert!(store.try_lease(&key, "a", long).await.unwrap());
    assert!(!store.try_lease(&key, "b", long).await.unwrap());
    store.release_lease(&key, "b").await.unwrap();
    assert!(
        !store.try_lease(&key, "b", long).await.unwrap(),
        "only its holder releases it"
    );
    store.release_lease(&key, "a").await.unwrap();
    assert!(store
        .try_lease(&key, "b", Duration::from_millis(100))
        .await
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.try_lease(&key, "c", long).await.unwrap() {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn registered_scenes_are_found_per_account_and_survive_reopening(b: impl Backend) {
    let [a, other] = b.accounts();
    let record = SceneRecord {
        label: "Spring Expo".into(),
        metadata: [("campaign".to_owned(), "expo".to_owned())].into(),
        actor: "ops".into(),
        created_at: 1_700_000_000,
        ..Default::default()
    };
    {
        let store = b.open().await;
        assert_eq!(store.scene(a, "spring-expo").await.unwrap(), None);
        store.put_scene(a, "spring-expo", &record).await.unwrap();
        assert_eq!(
            store.scene(a, "spring-expo").await.unwrap().as_ref(),
            Some(&record)
        );
        assert_eq!(store.scene(other, "spring-expo").await.unwrap(), None);
    }
    let store = b.open().await;
    assert_eq!(store.scene(a, "spring-expo").await.unwrap(), Some(record));
}

async fn menu_versions_are_kept_in_order_per_account_and_a_number_is_taken_once(b: impl Backend) {
    let [a, other] = b.accounts();
    let version = |n: u64, menu: Option<serde_json::Value>| MenuVersion {
        version: n,
        created_at: 1_700_000_000 + n,
        actor: "ops".into(),
        menu,
        restored_from: None,
    };
    let first = version(
        1,
        Some(serde_json::json!({"button": [{"type": "click", "name": "a", "key": "k"}]})),
    );
    let deleted = version(2, None);
    let mut restored = version(3, first.menu.clone());
    restored.restored_from = Some(1);
    {
        let store = b.open().await;
        assert_eq!(store.menu_versions(a).await.unwrap(), []);
        // Stored out of order, listed in order.
        for v in [&restored, &first, &deleted] {
            assert!(store.put_menu_version(a, v).await.unwrap());
        }
        let mut taken = version(2, None);
        taken.actor = "someone else".into();
        assert!(
            !store.put_menu_version(a, &taken).await.unwrap(),
            "2 is taken"
        );
        assert_eq!(store.menu_versions(other).await.unwrap(), []);
    }
    let store = b.open().await;
    assert_eq!(
        store.menu_versions(a).await.unwrap(),
        [first, deleted, restored],
        "kept across reopening, the first writer of a number wins"
    );
}

async fn one_owner_at_a_time_holds_a_menu_lease_until_it_releases_or_it_lapses(b: impl Backend) {
    let [a, other] = b.accounts();
    let (a, other) = (&LeaseKey::menu(a), &LeaseKey::menu(other));
    let store = b.open().await;
    let ttl = Duration::from_millis(300);
    assert!(store.try_lease(a, "one", ttl).await.unwrap());
    assert!(store.try_lease(a, "one", ttl).await.unwrap(), "renewed");
    assert!(!store.try_lease(a, "two", ttl).await.unwrap());
    assert!(
        store.try_lease(other, "two", ttl).await.unwrap(),
        "per account"
    );
    store.release_lease(a, "two").await.unwrap();
    assert!(
        !store.try_lease(a, "two", ttl).await.unwrap(),
        "not two's to release"
    );
    store.release_lease(a, "one").await.unwrap();
    assert!(store.try_lease(a, "two", ttl).await.unwrap());
    let lapsed = Instant::now() + ttl + Duration::from_millis(100);
    while Instant::now() < lapsed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.try_lease(a, "one", ttl).await.unwrap(), "lapsed");
}

async fn a_lease_is_taken_renewed_by_its_holder_refused_to_others_released_and_lapses(
    b: impl Backend,
) {
    let [a, other] = b.accounts();
    let store = b.open().await;
    // Seconds, not milliseconds: a sleep on a loaded CI machine overshot 100 ms once.
    let ttl = Duration::from_secs(3);
    for key in [
        LeaseKey::token_refresh(&format!("mp-{a}")),
        LeaseKey::menu(a),
        LeaseKey::broadcast_job(a, "j1"),
    ] {
        assert!(
            store.try_lease(&key, "one", ttl).await.unwrap(),
            "{key}: taken"
        );
        assert!(
            !store.try_lease(&key, "two", ttl).await.unwrap(),
            "{key}: refused to another owner"
        );
        // Renewed before it lapses, it outlives its first ttl.
        tokio::time::sleep(ttl / 2).await;
        assert!(
            store.try_lease(&key, "one", ttl).await.unwrap(),
            "{key}: renewed"
        );
        tokio::time::sleep(ttl * 3 / 4).await;
        assert!(
            !store.try_lease(&key, "two", ttl).await.unwrap(),
            "{key}: the renewal pushed the lapse back"
        );
        store.release_lease(&key, "two").await.unwrap();
        assert!(
            !store.try_lease(&key, "two", ttl).await.unwrap(),
            "{key}: only its holder releases it"
        );
        store.release_lease(&key, "one").await.unwrap();
        assert!(
            store.try_lease(&key, "two", ttl).await.unwrap(),
            "{key}: free once released"
        );
        // Left to lapse: then anyone takes it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.try_lease(&key, "three", ttl).await.unwrap() {
            assert!(Instant::now() < deadline, "{key}: the lease never lapsed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Leases are per key: the same name under another namespace, account or job is another lease.
    let held = LeaseKey::broadcast_job(a, "j2");
    assert!(store.try_lease(&held, "one", ttl).await.unwrap());
    for key in [
        LeaseKey::broadcast_job(a, "j3"),
        LeaseKey::broadcast_job(other, "j2"),
        LeaseKey::menu(other),
    ] {
        assert!(store.try_lease(&key, "two", ttl).await.unwrap(), "{key}");
    }
}

async fn documents_are_written_as_their_condition_allows_per_account_and_kind(b: impl Backend) {
    let [a, other] = b.accounts();
    {
        let store = b.open().await;
        assert_eq!(store.doc(a, "job", "j1").await.unwrap(), None);
        assert!(store
            .put_doc(a, "job", "j1", b"one", DocWrite::IfAbsent, None)
            .await
            .unwrap());
        assert!(
            !store
                .put_doc(a, "job", "j1", b"two", DocWrite::IfAbsent, None)
                .await
                .unwrap(),
            "already there"
        );
        assert!(
            !store
                .put_doc(
                    a,
                    "job",
                    "j1",
                    b"three",
                    DocWrite::IfEquals(b"two".to_vec()),
                    None
                )
                .await
                .unwrap(),
            "a stale compare-and-swap is refused"
        );
        assert!(store
            .put_doc(
                a,
                "job",
                "j1",
                b"three",
                DocWrite::IfEquals(b"one".to_vec()),
                None
            )
            .await
            .unwrap());
        assert!(store
            .put_doc(a, "job", "j0", b"zero", DocWrite::Always, None)
            .await
            .unwrap());
        assert!(store
            .put_doc(a, "rule", "r", b"rule", DocWrite::Always, None)
            .await
            .unwrap());
        assert_eq!(
            store.doc(other, "job", "j1").await.unwrap(),
            None,
            "per account"
        );
        assert_eq!(
            store.docs(a, "job").await.unwrap(),
            [
                ("j0".to_owned(), b"zero".to_vec()),
                ("j1".to_owned(), b"three".to_vec())
            ],
            "listed by id, one kind only"
        );
    }
    let store = b.open().await;
    assert_eq!(
        store.doc(a, "job", "j1").await.unwrap().as_deref(),
        Some(&b"three"[..]),
        "kept across reopening"
    );
    assert!(store.delete_doc(a, "job", "j1").await.unwrap());
    assert!(!store.delete_doc(a, "job", "j1").await.unwrap());
    assert_eq!(store.doc(a, "job", "j1").await.unwrap(), None);
    assert_eq!(store.docs(a, "rule").await.unwrap().len(), 1);
}

async fn a_document_with_a_ttl_lapses_and_can_then_be_created_again(b: impl Backend) {
    let [a, _] = b.accounts();
    let store = b.open().await;
    let ttl = Some(Duration::from_millis(200));
    assert!(store
        .put_doc(a, "user", "o1", b"cached", DocWrite::IfAbsent, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.doc(a, "user", "o1").await.unwrap().as_deref(),
        Some(&b"cached"[..])
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.doc(a, "user", "o1").await.unwrap(), None, "lapsed");
    assert_eq!(store.docs(a, "user").await.unwrap(), []);
    assert!(
        store
            .put_doc(a, "user", "o1", b"again", DocWrite::IfAbsent, None)
            .await
            .unwrap(),
        "a lapsed document counts as absent"
    );
}

async fn lapsed_documents_are_swept_in_steps_and_live_ones_stay(b: impl Backend) {
    let [a, other] = b.accounts();
    let store = b.open().await;
    let ttl = Some(Duration::from_millis(200));
    for i in 0..25 {
        let id = format!("o{i:02}");
        assert!(store
            .put_doc(a, "user", &id, b"old", DocWrite::Always, ttl)
            .await
            .unwrap());
    }
    for i in 0..5 {
        let id = format!("live{i}");
        assert!(store
            .put_doc(a, "user", &id, b"kept", DocWrite::Always, None)
            .await
            .unwrap());
    }
    for (account, kind) in [(a, "link_clicks"), (other, "user")] {
        assert!(store
            .put_doc(account, kind, "o00", b"old", DocWrite::Always, ttl)
            .await
            .unwrap());
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Written again after it lapsed: live, so the sweep must leave it.
    assert!(store
        .put_doc(a, "user", "o07", b"again", DocWrite::IfAbsent, None)
        .await
        .unwrap());

    let (mut cursor, mut removed, mut steps) = (None::<String>, 0, 0);
    loop {
        let (next, n) = store
            .sweep_docs(a, "user", cursor.as_deref(), 10)
            .await
            .unwrap();
        removed += n;
        steps += 1;
        assert!(
            steps <= 50,
            "the sweep of 31 documents in steps of 10 never ended"
        );
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        removed, 24,
        "every lapsed document of the kind, not the one written again"
    );
    let left: Vec<String> = store
        .docs(a, "user")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, ["live0", "live1", "live2", "live3", "live4", "o07"]);
    // A second pass finds nothing more; the other kind and the other account were not touched.
    assert_eq!(
        store.sweep_docs(a, "user", None, 1000).await.unwrap(),
        (None, 0)
    );
    assert_eq!(
        store
            .sweep_docs(a, "link_clicks", None, 1000)
            .await
            .unwrap(),
        (None, 1)
    );
    assert_eq!(
        store.sweep_docs(other, "user", None, 1000).await.unwrap(),
        (None, 1)
    );
    assert_eq!(
        store
            .sweep_docs(a, "nothing-here", None, 1000)
            .await
            .unwrap(),
        (None, 0)
    );
}

/// `record_batch` (a page of an audience sync): one write, each id recorded once, against ids
/// recorded before, within the batch and by a repeat of the batch.
async fn a_batch_of_records_appends_each_new_id_once_in_order(b: impl Backend) {
    let store = b.open().await;
    let [a, _] = b.accounts();
    assert_eq!(store.record_batch(&[]).await.unwrap(), 0);
    assert_eq!(store.record(&event(a, "b1")).await.unwrap(), Recorded::New);
    let batch: Vec<pb::Event> = ["b1", "b2", "b3", "b2", "b4"]
        .iter()
        .map(|id| event(a, id))
        .collect();
    assert_eq!(store.record_batch(&batch).await.unwrap(), 3);
    assert_eq!(store.record_batch(&batch[1..3]).await.unwrap(), 0);
    assert_eq!(
        store.record(&event(a, "b4")).await.unwrap(),
        Recorded::Duplicate
    );
    let drained = drain(&*store).await;
    let got: Vec<&str> = drained.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, ["b1", "b2", "b3", "b4"]);
    assert_eq!(drained[2].open_id, "o-b3", "events intact");
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Embedded::new()).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Redis::new()).await;
                }
            )+
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let url = crate::support::redis::shared_cluster_url().await;
                    super::$check(super::Redis::on(url)).await;
                }
            )+
        }
    };
}

conformance!(
    a_new_event_is_recorded_once_and_its_retry_is_a_duplicate,
    a_claimed_event_is_delivered_intact_and_gone_once_acknowledged,
    events_claimed_but_not_acknowledged_are_claimed_again,
    a_claim_ahead_returns_only_what_follows_the_batch_in_flight_and_loses_nothing,
    claims_return_at_most_max_events_oldest_first_in_order_per_account,
    a_claim_waits_for_an_event_recorded_meanwhile,
    a_claim_with_nothing_to_deliver_returns_empty_after_its_wait,
    a_dead_letter_leaves_the_outbox_and_its_replay_puts_it_back,
    dead_letters_are_listed_oldest_first_up_to_the_limit,
    outbox_stats_count_undelivered_events_and_age_the_oldest,
    two_hundred_concurrent_records_are_all_durable_without_duplicates,
    de_duplication_and_the_outbox_survive_reopening_the_store,
    a_cached_token_is_evicted_only_while_it_is_still_the_rejected_one,
    one_owner_at_a_time_holds_a_token_lease_until_it_releases_or_it_lapses,
    registered_scenes_are_found_per_account_and_survive_reopening,
    menu_versions_are_kept_in_order_per_account_and_a_number_is_taken_once,
    one_owner_at_a_time_holds_a_menu_lease_until_it_releases_or_it_lapses,
    a_lease_is_taken_renewed_by_its_holder_refused_to_others_released_and_lapses,
    documents_are_written_as_their_condition_allows_per_account_and_kind,
    a_document_with_a_ttl_lapses_and_can_then_be_created_again,
    lapsed_documents_are_swept_in_steps_and_live_ones_stay,
    a_batch_of_records_appends_each_new_id_once_in_order,
);

// Embedded only.

#[tokio::test]
async fn an_embedded_store_open_elsewhere_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path(), TTL).unwrap();
    let Err(StoreError::Unavailable(message)) = EmbeddedStore::open(dir.path(), TTL) else {
        panic!("a second open of the same file must fail");
    };
    assert!(message.contains("locked by another process"), "{message}");
}

// Redis only.

async fn redis_store(url: &str, accounts: &[String]) -> RedisStore {
    RedisStore::connect(url, accounts.to_vec(), TTL)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_redis_consumer_takes_over_what_a_stopped_one_left_unacknowledged() {
    let accounts = unique_accounts::<2>();
    let lease = Duration::from_millis(300);
    let first = redis_store(&shared_url(), &accounts)
        .await
        .with_lease(lease);
    for (account, id) in [(&accounts[0], "e1"), (&accounts[1], "e2")] {
        first.record(&event(account, id)).await.unwrap();
    }
    let claimed = first.claim("gateway-a", 10, NO_WAIT).await.unwrap();
    assert_eq!(claimed.len(), 2);
    drop(first); // stopped before acknowledging

    let second = redis_store(&shared_url(), &accounts)
        .await
        .with_lease(lease);
    assert!(
        second
            .claim("gateway-b", 10, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "within the lease the entries stay with their consumer"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let taken = second
            .claim("gateway-b", 10, Duration::from_millis(100))
            .await
            .unwrap();
        if !taken.is_empty() || Instant::now() > deadline {
            break taken;
        }
    };
    let mut taken_ids = ids(&taken);
    taken_ids.sort();
    assert_eq!(taken_ids, ["e1", "e2"]);
    second.ack(&taken).await.unwrap();
    assert_eq!(second.outbox_stats().await.unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_consumer_at_a_time_delivers_an_account_so_order_holds_and_a_lapsed_claim_is_reported(
) {
    let accounts = unique_accounts::<1>();
    let lease = Duration::from_millis(300);
    let a = redis_store(&shared_url(), &accounts)
        .await
        .with_lease(lease);
    let b = redis_store(&shared_url(), &accounts)
        .await
        .with_lease(lease);
    for id in ["o1", "o2", "o3"] {
        a.record(&event(&accounts[0], id)).await.unwrap();
    }
    let first = a.claim("gateway-a", 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&first), ["o1"]);
    // While a holds the account, b gets nothing, not even the newer o2 and o3.
    assert!(b.claim("gateway-b", 10, NO_WAIT).await.unwrap().is_empty());
    assert!(a.keep_claimed("gateway-a", &first).await.unwrap());

    // a stalls past its lease: b takes the account over, o1 first, and a learns it lost it.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let taken = b.claim("gateway-b", 10, NO_WAIT).await.unwrap();
    assert_eq!(
        ids(&taken),
        ["o1"],
        "the taken-over entry goes before anything newer"
    );
    assert!(!a.keep_claimed("gateway-a", &first).await.unwrap());
    assert!(a.claim("gateway-a", 10, NO_WAIT).await.unwrap().is_empty());
    b.ack(&taken).await.unwrap();
    let rest = b.claim("gateway-b", 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&rest), ["o2", "o3"]);
    b.ack(&rest).await.unwrap();
}

#[tokio::test]
async fn a_restarted_redis_consumer_resumes_its_own_pending_entries_at_once() {
    let accounts = unique_accounts::<1>();
    let url = fresh_db_url().await;
    let store = redis_store(&url, &accounts).await;
    store.record(&event(&accounts[0], "e1")).await.unwrap();
    assert_eq!(
        ids(&store.claim("gateway-a", 10, NO_WAIT).await.unwrap()),
        ["e1"]
    );
    drop(store);
    // The default lease is 30 s: only its own pending list gives the entry back now.
    let store = redis_store(&url, &accounts).await;
    let resumed = store.claim("gateway-a", 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&resumed), ["e1"]);
    assert!(store
        .claim("gateway-b", 10, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    store.ack(&resumed).await.unwrap();
}

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn command_calls(conn: &mut ::redis::aio::MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_is_one_redis_round_trip_even_with_a_thousand_accounts() {
    let server = RedisServer::start();
    let accounts = unique_accounts::<1000>();
    let store = redis_store(&server.url(), &accounts).await;
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    for i in 0..20 {
        let account = &accounts[i * 37 % accounts.len()];
        store
            .record(&event(account, &format!("e{i}")))
            .await
            .unwrap();
    }
    // Redis counts the commands the script runs too: those are not round trips.
    let round_trips: Vec<_> = command_calls(&mut admin)
        .await
        .into_iter()
        .filter(|(name, _)| !["exists", "xadd", "set"].contains(&name.as_str()))
        .collect();
    assert_eq!(
        round_trips,
        [("evalsha".to_owned(), 20)],
        "one EVALSHA per record, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_rides_out_a_redis_restart_without_losing_an_answered_record() {
    let mut server = RedisServer::start();
    let accounts = unique_accounts::<1>();
    let a = &accounts[0];
    let store = redis_store(&server.url(), &accounts).await;
    assert_eq!(store.record(&event(a, "e1")).await.unwrap(), Recorded::New);
    assert_eq!(
        ids(&store.claim(CONSUMER, 10, NO_WAIT).await.unwrap()),
        ["e1"]
    );

    server.restart(); // SIGKILL, then the append-only file is replayed
                      // The connections dropped: the first command of each fails and is retried once.
    assert_eq!(
        store.record(&event(a, "e1")).await.unwrap(),
        Recorded::Duplicate,
        "the de-duplication mark survived"
    );
    assert_eq!(store.record(&event(a, "e2")).await.unwrap(), Recorded::New);
    let resumed = store.claim(CONSUMER, 10, NO_WAIT).await.unwrap();
    assert_eq!(ids(&resumed), ["e1"], "the pending claim survived");
    store.ack(&resumed).await.unwrap();
    let next = store
        .claim(CONSUMER, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(ids(&next), ["e2"]);
    store.ack(&next).await.unwrap();
    store.ping().await.unwrap();
}

#[tokio::test]
async fn connecting_to_an_unreachable_redis_fails_with_a_clear_error() {
    let Err(StoreError::Unavailable(message)) =
        RedisStore::connect("redis://127.0.0.1:1", vec!["acme".into()], TTL).await
    else {
        panic!("nothing listens on port 1");
    };
    assert!(message.contains("Redis connect failed"), "{message}");
}

/// Records every (account, id) of `sent` at once, each on a task of its own; the answers in order.
async fn record_all_at_once(store: &Arc<RedisStore>, sent: &[(String, String)]) -> Vec<Recorded> {
    let tasks: Vec<_> = sent
        .iter()
        .map(|(account, id)| {
            let store = Arc::clone(store);
            let event = event(account, id);
            tokio::spawn(async move { store.record(&event).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    answers
}

/// An admin connection to `server`, after resetting its command statistics and pausing its
/// writes (`EVALSHA` included) for `millis`, so that concurrent records queue up behind the first.
async fn stats_reset_and_writes_paused(
    server: &RedisServer,
    millis: u64,
) -> ::redis::aio::MultiplexedConnection {
    let mut admin = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(millis)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    admin
}

/// Issue 16: records that arrive together share script calls, and each is answered as if it had
/// been alone. Redis holds back writes for a moment (`CLIENT PAUSE ... WRITE`, which holds
/// `EVALSHA` too), so the first records wait in Redis while the rest queue behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redis_records_share_round_trips_and_each_answers_as_if_alone() {
    let server = RedisServer::start();
    let accounts = unique_accounts::<2>();
    let store = Arc::new(redis_store(&server.url(), &accounts).await);
    let [a, b] = &accounts;
    for i in 0..10 {
        let recorded = store.record(&event(a, &format!("old{i}"))).await.unwrap();
        assert_eq!(recorded, Recorded::New);
    }
    let mut admin = stats_reset_and_writes_paused(&server, 1500).await;

    // 300 records at once: 200 new ids over two accounts, 10 retries of ids recorded before,
    // and 45 ids sent twice (both copies in flight together).
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 0..200 {
        let account = if i % 4 == 0 { b } else { a };
        sent.push((account.clone(), format!("new{i}")));
    }
    for i in 0..10 {
        sent.push((a.clone(), format!("old{i}")));
    }
    for i in 0..45 {
        sent.push((a.clone(), format!("twice{i}")));
        sent.push((a.clone(), format!("twice{i}")));
    }
    let answers = record_all_at_once(&store, &sent).await;

    for ((_, id), answer) in sent.iter().zip(&answers) {
        if id.starts_with("new") {
            assert_eq!(*answer, Recorded::New, "{id}");
        } else if id.starts_with("old") {
            assert_eq!(*answer, Recorded::Duplicate, "{id}");
        }
    }
    for i in 0..45 {
        let id = format!("twice{i}");
        let news = sent
            .iter()
            .zip(&answers)
            .filter(|((_, sent_id), answer)| *sent_id == id && **answer == Recorded::New)
            .count();
        assert_eq!(
            news, 1,
            "one of the two copies of {id} is new, the other a duplicate"
        );
    }

    let calls = command_calls(&mut admin).await;
    let evalsha = calls
        .iter()
        .find(|(name, _)| name == "evalsha")
        .map_or(0, |(_, n)| *n);
    let others: Vec<_> = calls
        .iter()
        .filter(|(name, _)| {
            !["evalsha", "exists", "xadd", "set", "client|pause"].contains(&name.as_str())
        })
        .collect();
    assert!(others.is_empty(), "only scripts ran: {others:?}");
    assert!(
        (2..=40).contains(&evalsha),
        "300 concurrent records of two accounts went in {evalsha} script calls"
    );

    // Each new id is in its account's outbox once, the duplicates are not there again.
    let mut outbox: Vec<String> = drain(store.as_ref())
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.account_id, e.id))
        .collect();
    outbox.sort();
    let mut expected: Vec<String> = (0..10)
        .map(|i| format!("{a} old{i}"))
        .chain(
            sent.iter()
                .filter(|(_, id)| id.starts_with("new"))
                .map(|(acc, id)| format!("{acc} {id}")),
        )
        .chain((0..45).map(|i| format!("{a} twice{i}")))
        .collect();
    expected.sort();
    assert_eq!(outbox, expected);
}

/// Issue 16: on one Redis server, records of many accounts share script calls too (a lane per
/// account made 60 accounts' records at least 60 calls; the 1,000-account benchmark cost 2.2×
/// the one-account figure), and each answer and outbox stays the record's own account's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redis_records_of_many_accounts_share_script_calls() {
    let server = RedisServer::start();
    let run: u32 = rand::random();
    let accounts: Vec<String> = (0..60).map(|i| format!("t{run:08x}-m{i}")).collect();
    let store = Arc::new(redis_store(&server.url(), &accounts).await);
    let mut admin = stats_reset_and_writes_paused(&server, 1000).await;

    // Every account: "same" twice (one new, one duplicate) and an id of its own. "same" is one
    // id in every account: each account's mark is its own.
    let mut sent: Vec<(String, String)> = Vec::new();
    for account in &accounts {
        sent.push((account.clone(), "same".into()));
        sent.push((account.clone(), "same".into()));
        sent.push((account.clone(), format!("own-{account}")));
    }
    let answers = record_all_at_once(&store, &sent).await;
    for account in &accounts {
        let of = |id: &str| {
            sent.iter()
                .zip(&answers)
                .filter(|((a, i), _)| a == account && i == id)
                .map(|(_, answer)| *answer)
                .collect::<Vec<_>>()
        };
        let mut same = of("same");
        same.sort_by_key(|r| *r == Recorded::Duplicate);
        assert_eq!(same, [Recorded::New, Recorded::Duplicate], "{account}");
        assert_eq!(of(&format!("own-{account}")), [Recorded::New], "{account}");
    }

    let evalsha = command_calls(&mut admin)
        .await
        .into_iter()
        .find(|(name, _)| name == "evalsha")
        .map_or(0, |(_, n)| n);
    assert!(
        (1..=20).contains(&evalsha),
        "180 concurrent records of 60 accounts went in {evalsha} script calls"
    );
    let mut outbox: Vec<String> = drain(store.as_ref())
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.account_id, e.id))
        .collect();
    outbox.sort();
    let mut expected: Vec<String> = accounts
        .iter()
        .flat_map(|a| [format!("{a} same"), format!("{a} own-{a}")])
        .collect();
    expected.sort();
    assert_eq!(outbox, expected);
}
