//! The log engine's own guarantees, beyond the store contract that `tests/api/store.rs` checks
//! on both backends: group commit, marks moved to the cold tier, segments rolled and deleted, a
//! torn tail cut, and an older store's redb outbox moved into the log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTableMetadata};

use super::log::LogOptions;
use super::schema::{create_tables, META, NEXT_SEQ, OUTBOX, SEEN};
use super::{journal, EmbeddedStore, DEFAULT_CACHE_BYTES, FILE_NAME};
use crate::pb;
use crate::store::{Outbox, OutboxEntry, Recorded, StoreError};

const TTL: Duration = Duration::from_secs(3600);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn event(id: &str, at: u64) -> pb::Event {
    pb::Event {
        id: id.into(),
        account_id: if id.ends_with('b') { "beta" } else { "acme" }.into(),
        occurred_at: Some(pb::Timestamp {
            seconds: at as i64,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn open(dir: &std::path::Path, options: LogOptions) -> EmbeddedStore {
    EmbeddedStore::open_tuned(dir, TTL, DEFAULT_CACHE_BYTES, options).unwrap()
}

/// Marks go cold as soon as their second is over; segments of 8 KiB.
fn eager() -> LogOptions {
    LogOptions {
        segment_bytes: 8 << 10,
        hot_secs: 0,
        hot_cap: 1 << 20,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain(store: &EmbeddedStore) -> Vec<OutboxEntry> {
    let entries = store.claim("c", 10_000, Duration::ZERO).await.unwrap();
    store.ack(&entries).await.unwrap();
    entries
}

fn cold_marks(store: &EmbeddedStore) -> u64 {
    let txn = store.db.begin_read().unwrap();
    txn.open_table(SEEN).unwrap().len().unwrap()
}

fn segments(dir: &std::path::Path) -> Vec<u32> {
    journal::segments(&journal::dir(dir)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_share_commits_and_all_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), TTL).unwrap());
    let at = unix_now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.record(&event(&format!("e{i}"), at)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Recorded::New);
    }
    let commits = store.log.shared.commits.load(Ordering::Relaxed);
    assert!(commits < 200, "{commits} commits for 200 records");
    assert_eq!(store.outbox_stats().await.unwrap().depth, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_written_without_a_sync_and_synced_when_the_log_idles() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), LogOptions::default());
        let shared = store.log.shared.clone();
        for i in 0..3 {
            store
                .record(&event(&format!("e{i}"), unix_now()))
                .await
                .unwrap();
        }
        let syncs = shared.syncs.load(Ordering::Relaxed);
        let end = *super::lock(&shared.end);
        let claimed = store.claim("c", 2, Duration::ZERO).await.unwrap();
        store.ack(&claimed).await.unwrap();
        assert_eq!(
            shared.syncs.load(Ordering::Relaxed),
            syncs,
            "an ack alone waits for no sync"
        );
        assert_eq!(
            *super::lock(&shared.end),
            end,
            "the compactor's end stays at the durable end"
        );
        wait_for("the idle sync", || {
            shared.syncs.load(Ordering::Relaxed) > syncs
        })
        .await;
        assert!(*super::lock(&shared.end) > end);
        // A record after an ack syncs both at once.
        let claimed = store.claim("c", 1, Duration::ZERO).await.unwrap();
        store.ack(&claimed).await.unwrap();
        let syncs = shared.syncs.load(Ordering::Relaxed);
        let end = *super::lock(&shared.end);
        store.record(&event("e3", unix_now())).await.unwrap();
        assert_eq!(shared.syncs.load(Ordering::Relaxed), syncs + 1);
        assert!(*super::lock(&shared.end) > end);
    }
    let store = open(dir.path(), LogOptions::default());
    let left = store.claim("c", 10, Duration::ZERO).await.unwrap();
    let ids: Vec<_> = left.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, ["e3"], "the acks outlived the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_moved_to_the_cold_tier_still_refuse_a_retry_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let at = unix_now();
    let fresh_at = at + 1;
    {
        let store = open(dir.path(), eager());
        for i in 0..50 {
            let e = event(&format!("m{i}"), at);
            assert_eq!(store.record(&e).await.unwrap(), Recorded::New);
        }
        wait_for("every mark to go cold", || {
            store.log.shared.hot_len.load(Ordering::Relaxed) == 0
        })
        .await;
        assert_eq!(cold_marks(&store), 50);
        for i in 0..50 {
            let e = event(&format!("m{i}"), at);
            assert_eq!(
                store.record(&e).await.unwrap(),
                Recorded::Duplicate,
                "m{i} found in the cold tier"
            );
        }
        let fresh = event("fresh", fresh_at);
        assert_eq!(store.record(&fresh).await.unwrap(), Recorded::New);
    }
    let store = open(dir.path(), LogOptions::default());
    for (id, at) in [("m0", at), ("m49", at), ("fresh", fresh_at)] {
        assert_eq!(
            store.record(&event(id, at)).await.unwrap(),
            Recorded::Duplicate,
            "{id} after the restart"
        );
    }
    assert_eq!(
        drain(&store).await.len(),
        51,
        "each event once in the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_segments_roll_over_and_spent_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), eager());
    let at = unix_now();
    let mut big = event("x", at);
    big.label = "y".repeat(1500);
    for i in 0..40 {
        big.id = format!("big{i}");
        assert_eq!(store.record(&big).await.unwrap(), Recorded::New);
    }
    let before = segments(dir.path());
    assert!(
        before.len() >= 6,
        "40 × ~1.6 KiB in 8 KiB segments: {before:?}"
    );
    let delivered = drain(&store).await;
    assert_eq!(delivered.len(), 40);
    assert!(delivered
        .iter()
        .enumerate()
        .all(|(i, e)| e.event.id == format!("big{i}") && e.event.label.len() == 1500));
    // The acks leave every closed segment spent once the compactor has passed it.
    wait_for("the spent segments to be deleted", || {
        segments(dir.path()).len() == 1
    })
    .await;
    assert_eq!(segments(dir.path()), [*before.last().unwrap()]);
    drop(store);
    let store = open(dir.path(), eager());
    assert!(drain(&store).await.is_empty(), "nothing comes back");
    big.id = "big7".into();
    assert_eq!(store.record(&big).await.unwrap(), Recorded::Duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_frame_at_the_end_is_cut_and_appends_go_on_after_the_last_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let at = unix_now();
    {
        let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
        for id in ["a", "b", "c"] {
            store.record(&event(id, at)).await.unwrap();
        }
    }
    // A power cut in the middle of a fourth frame: its first bytes reached the disk.
    let log = journal::dir(dir.path());
    let path = journal::segment_path(&log, segments(dir.path())[0]);
    let end = journal::scan(&path, 0, None, |_, _| Ok(true)).unwrap();
    let mut frame = Vec::new();
    journal::put_event(
        &mut frame,
        &journal::EventFrame {
            seq: 99,
            enqueued_ms: 0,
            at,
            marked: true,
            id: "torn",
            account: "acme",
            event: b"never acknowledged",
        },
    );
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&frame[..frame.len() - 5], end).unwrap();
    drop(file);
    {
        let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end,
            "cut at the end"
        );
        store.record(&event("d", at)).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
    let ids: Vec<String> = drain(&store)
        .await
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(
        store.record(&event("torn", at)).await.unwrap(),
        Recorded::New,
        "the torn frame's mark was never there"
    );
}

/// A store written before the log: its outbox and marks in redb, laid out as that version did
/// (the table definitions in `schema.rs` are that layout).
fn write_old_store(dir: &std::path::Path, at: u64) {
    use prost::Message;
    std::fs::create_dir_all(dir).unwrap();
    let db = Database::create(dir.join(FILE_NAME)).unwrap();
    create_tables(&db).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut outbox = txn.open_table(OUTBOX).unwrap();
        let mut seen = txn.open_table(SEEN).unwrap();
        for (seq, id) in [(7u64, "old1"), (8, "old2b"), (9, "old3")] {
            let bytes = event(id, at).encode_to_vec();
            outbox.insert(seq, (at * 1000, bytes.as_slice())).unwrap();
            seen.insert((at, id), at + 3600).unwrap();
        }
        // A delivered one: its mark only.
        seen.insert((at, "old0"), at + 3600).unwrap();
        txn.open_table(META).unwrap().insert(NEXT_SEQ, 10).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_stores_redb_outbox_is_moved_into_the_log_on_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let at = unix_now() - 30;
    write_old_store(dir.path(), at);
    {
        let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
        let claimed = store.claim("c", 10, Duration::ZERO).await.unwrap();
        let ids: Vec<(&str, &str)> = claimed
            .iter()
            .map(|e| (e.handle.as_str(), e.event.id.as_str()))
            .collect();
        assert_eq!(ids, [("7", "old1"), ("8", "old2b"), ("9", "old3")]);
        let txn = store.db.begin_read().unwrap();
        assert!(
            matches!(
                txn.open_table(OUTBOX),
                Err(redb::TableError::TableDoesNotExist(_))
            ),
            "the redb outbox is gone"
        );
        for id in ["old0", "old1", "old3"] {
            assert_eq!(
                store.record(&event(id, at)).await.unwrap(),
                Recorded::Duplicate,
                "{id}: its mark came along"
            );
        }
        let new = store.record(&event("new", unix_now())).await.unwrap();
        assert_eq!(new, Recorded::New);
        let stats = store.outbox_stats().await.unwrap();
        assert_eq!((stats.depth, stats.accounts["beta"].depth), (4, 1));
    }
    let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
    let entries = drain(&store).await;
    let ids: Vec<&str> = entries.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(
        ids,
        ["old1", "old2b", "old3", "new"],
        "moved once, in order"
    );
    assert_eq!(
        entries[3].handle, "10",
        "new numbers continue after the old ones"
    );
}

#[tokio::test]
async fn a_handle_of_another_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
    let entry = OutboxEntry {
        handle: "acme\n1-0".into(),
        event: event("a", 1),
    };
    assert!(matches!(
        store.ack(&[entry]).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn the_index_keeps_order_when_events_go_out_of_order() {
    use super::log::{Entry, Index};
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(std::fs::File::create(dir.path().join("1.seg")).unwrap());
    let mut index = Index::default();
    index.files.insert(1, file.clone());
    for seq in 1..=5u64 {
        let account: Arc<str> = Arc::from(if seq % 2 == 0 { "beta" } else { "acme" });
        let entry = Entry {
            file: file.clone(),
            segment: 1,
            offset: seq * 100,
            len: 10,
            account,
            enqueued_ms: seq,
        };
        index.insert(seq, entry);
    }
    assert_eq!(index.backlogs(), [("acme", 3, 1), ("beta", 2, 2)]);
    assert!(index.remove(2) && index.remove(4));
    assert!(!index.remove(4), "gone already");
    let seqs = |index: &Index| -> Vec<u64> { index.oldest(10).iter().map(|(s, _)| *s).collect() };
    assert_eq!(seqs(&index), [1, 3, 5]);
    assert_eq!(index.oldest(2)[1].1.offset, 300);
    assert!(index.remove(1));
    assert_eq!(seqs(&index), [3, 5]);
    assert_eq!(index.live[&1], 2);
    assert_eq!(index.backlogs(), [("acme", 2, 3)]);
    assert!(!index.contains(2) && index.contains(5));
}

/// Writes started in one scheduler tick of a single-threaded runtime (an actix worker's) reach
/// the log thread as one group: one commit for all of them, however the threads interleave.
#[tokio::test(flavor = "current_thread")]
async fn the_writes_of_one_tick_go_to_the_log_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), TTL).unwrap());
    let at = unix_now();
    let before = store.log.shared.commits.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.record(&event(&format!("t{i}"), at)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Recorded::New);
    }
    let commits = store.log.shared.commits.load(Ordering::Relaxed) - before;
    assert_eq!(commits, 1, "50 records of one tick took {commits} commits");
}

/// A leader whose caller went away while it yielded (an HTTP request dropped) still hands the
/// writes gathered behind it to the log thread: none is stranded.
#[tokio::test(flavor = "current_thread")]
async fn a_leader_dropped_while_gathering_still_hands_the_others_over() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), TTL).unwrap();
    let at = unix_now();
    let noop = std::task::Waker::noop();
    let mut cx = Context::from_waker(noop);
    let (lead, follow) = (event("lead", at), event("follow", at));
    let mut leader = Box::pin(store.record(&lead));
    assert!(
        leader.as_mut().poll(&mut cx).is_pending(),
        "the leader yields"
    );
    let mut follower = pin!(store.record(&follow));
    assert!(follower.as_mut().poll(&mut cx).is_pending());
    drop(leader);
    let answer = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower is answered");
    assert_eq!(answer.unwrap(), Recorded::New);
    // The dropped leader's own write went too (its caller just does not hear the answer).
    let ids: Vec<String> = drain(&store)
        .await
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, ["lead", "follow"]);
}
