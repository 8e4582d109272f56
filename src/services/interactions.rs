//! Each follower's last interaction, for the 48-hour window of customer-service messages
//! (`crate::services::message`): a [`Decorate`] step of the forwarder records, for every event
//! WeChat counts as an interaction, the time it happened, in a document that lapses when the
//! window closes.
//!
//! What counts is WeChat's list ("客服接口": 用户发送信息、点击自定义菜单(仅有点击推事件、扫码推
//! 事件、扫码推事件且弹出"消息接收中"提示框这3种菜单类型是会触发客服接口的)、关注公众号、扫描二维码、
//! 支付成功、用户维权): a message of any type, a subscribe, a scan, a CLICK menu event, and the
//! two scancode menu events. A VIEW click, a location report or a picture menu does not open
//! the window. Payments and complaints do not come through this gateway.
//!
//! A record that fails leaves the event as it is: it is logged and counted in
//! `wgw_interaction_record_failures_total`, and delivery never waits or fails because of it;
//! the follower's window then opens at their next interaction (or the caller overrides).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;

use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::store::docs::DocKind;
use crate::store::{kinds, DocWrite, Store, StoreError};

/// WeChat's window for customer-service messages after the follower's last interaction.
pub const WINDOW: Duration = Duration::from_secs(48 * 3600);

/// openid → unix seconds of the follower's last interaction; lapses when the window closes.
const LAST_INTERACTION: DocKind<u64> = DocKind::new(kinds::INTERACTION);

/// Whether WeChat counts the event as an interaction (module comment).
pub fn counts(event: &pb::Event) -> bool {
    matches!(
        event.kind,
        Some(
            Kind::Text(_)
                | Kind::Image(_)
                | Kind::Voice(_)
                | Kind::Video(_)
                | Kind::Location(_)
                | Kind::Link(_)
                | Kind::Subscribe(_)
                | Kind::Scan(_)
                | Kind::MenuClick(_)
                | Kind::ScanCode(_)
        )
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records an interaction of `open_id` at `at` (unix seconds), unless a later one is recorded
/// or the window of this one has already closed.
pub async fn record(
    store: &dyn Store,
    account: &str,
    open_id: &str,
    at: u64,
) -> Result<(), StoreError> {
    let closes = at + WINDOW.as_secs();
    let now = now_secs();
    if closes <= now {
        return Ok(());
    }
    if let Some(known) = LAST_INTERACTION.get(store, account, open_id).await? {
        if known >= at {
            return Ok(());
        }
    }
    LAST_INTERACTION
        .put_lapsing(
            store,
            account,
            open_id,
            &at,
            DocWrite::Always,
            Duration::from_secs(closes - now),
        )
        .await?;
    Ok(())
}

/// The follower's last interaction inside the window, unix seconds; `None` when there is none.
pub async fn last(
    store: &dyn Store,
    account: &str,
    open_id: &str,
) -> Result<Option<u64>, StoreError> {
    let known = LAST_INTERACTION.get(store, account, open_id).await?;
    Ok(known.filter(|at| at + WINDOW.as_secs() > now_secs()))
}

/// The recording step, given to the forwarder at start-up.
pub struct Interactions {
    store: Arc<dyn Store>,
}

impl Interactions {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// Followers recorded at once: the embedded store group-commits concurrent writes into one
/// transaction and Redis pipelines them, where one at a time cost a commit each (a batch of 100
/// new followers held the forwarder for ~35 ms).
const CONCURRENT_RECORDS: usize = 32;

#[async_trait]
impl Decorate for Interactions {
    async fn decorate(&self, events: &mut [pb::Event]) {
        // Each follower once, at their latest interaction in the batch.
        let mut latest: HashMap<(&str, &str), (u64, &str)> = HashMap::new();
        for event in events.iter() {
            if event.platform != pb::Platform::Mp as i32
                || event.open_id.is_empty()
                || !counts(event)
            {
                continue;
            }
            let at = event
                .occurred_at
                .as_ref()
                .and_then(|t| u64::try_from(t.seconds).ok())
                .unwrap_or_else(now_secs);
            let seen = latest
                .entry((event.account_id.as_str(), event.open_id.as_str()))
                .or_insert((at, event.id.as_str()));
            if at > seen.0 {
                *seen = (at, event.id.as_str());
            }
        }
        let store = &*self.store;
        futures::stream::iter(latest)
            .for_each_concurrent(CONCURRENT_RECORDS, |((account, open_id), (at, event_id))| async move {
                if let Err(e) = record(store, account, open_id, at).await {
                    tracing::warn!(event_id = %event_id, error = %e,
                        "cannot record the follower's interaction; the 48-hour window is not opened");
                    metrics::counter!("wgw_interaction_record_failures_total").increment(1);
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_records_each_follower_once_at_their_latest_interaction() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            crate::store::embedded::EmbeddedStore::open(dir.path(), Duration::from_secs(3600))
                .unwrap(),
        );
        let now = now_secs();
        let event = |id: &str, open_id: &str, at: u64, kind| pb::Event {
            id: id.into(),
            account_id: "acme".into(),
            platform: pb::Platform::Mp as i32,
            open_id: open_id.into(),
            occurred_at: Some(pb::Timestamp {
                seconds: at as i64,
                nanos: 0,
            }),
            kind: Some(kind),
            ..Default::default()
        };
        let text = || Kind::Text(pb::TextMessage::default());
        let mut batch: Vec<pb::Event> = (0..100)
            .map(|i| {
                event(
                    &format!("e{i}"),
                    &format!("o{}", i % 40),
                    now - 100 + i,
                    text(),
                )
            })
            .collect();
        // Not an interaction, later than every other: must not count.
        batch.push(event(
            "view",
            "o1",
            now,
            Kind::MenuView(pb::MenuView::default()),
        ));
        Interactions::new(store.clone()).decorate(&mut batch).await;
        for f in 0..40u64 {
            let latest = (0..100).filter(|i| i % 40 == f).max().unwrap();
            assert_eq!(
                last(&*store, "acme", &format!("o{f}")).await.unwrap(),
                Some(now - 100 + latest),
                "o{f}"
            );
        }
        assert_eq!(last(&*store, "acme", "o40").await.unwrap(), None);
    }

    #[test]
    fn a_view_click_or_a_location_report_does_not_open_the_window() {
        let event = |kind| pb::Event {
            kind: Some(kind),
            ..Default::default()
        };
        assert!(counts(&event(Kind::MenuClick(pb::MenuClick::default()))));
        assert!(counts(&event(Kind::Subscribe(pb::Subscribe::default()))));
        assert!(counts(&event(Kind::Text(pb::TextMessage::default()))));
        assert!(!counts(&event(Kind::MenuView(pb::MenuView::default()))));
        assert!(!counts(&event(Kind::LocationReport(
            pb::LocationReport::default()
        ))));
        assert!(!counts(&event(Kind::Unsubscribe(
            pb::Unsubscribe::default()
        ))));
    }
}
