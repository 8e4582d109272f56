//! Logs (tracing, text or JSON) and the Prometheus recorder.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Label, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber once. `RUST_LOG` wins over `log.level`. Logs go to stderr so
/// that stdout carries only events (JSON lines) when no CRM is configured.
pub fn init_logging(cfg: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Ignore "already set": tests and `simulate` may initialise more than once.
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder: installed on first use, shared afterwards (a process
/// can hold only one recorder, and tests start several apps in one process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static bucket list is valid")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// `install_recorder` leaves histogram samples queued until something drains them: without a
/// scrape of `/metrics`, every callback's `wgw_callback_seconds` sample stayed in memory (a
/// 10-minute soak grew by ~140 MiB). This thread drains them every [`UPKEEP_PERIOD`].
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("wgw-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_PERIOD);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the metrics upkeep thread; histogram samples are drained only by scrapes of /metrics");
    }
}

/// What a metric family is, for its `# TYPE` and `# HELP` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Which series of a family exist from start, at 0, so that an alert or a dashboard on them sees
/// 0 rather than "absent" before the first increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// None: its labels (an API name and an errcode, an event kind) are open-ended.
    None,
    /// The one unlabelled series.
    Global,
    /// One series per configured account (`account` label).
    PerAccount,
    /// Per account, the refusals of `wgw_callbacks_total` (labels as the callback path writes
    /// them: platform, account, kind="unknown", outcome).
    CallbackRefusals(&'static [&'static str]),
    /// Per account, once for each value of a second label.
    PerAccountAnd(&'static str, &'static [&'static str]),
    /// Per account, WeCom accounts only, once for each value of a second label.
    PerWorkAccountAnd(&'static str, &'static [&'static str]),
    /// Per lapsing document kind (`kind` label).
    PerLapsingKind,
}

/// Every metric family the gateway exports: name, type, help, and which series exist from
/// start. docs/operations.md lists the same names (a test checks that they agree).
pub const METRICS: &[(&str, MetricKind, &str, Preset)] = {
    use MetricKind::*;
    use Preset::*;
    &[
        ("wgw_callbacks_total", Counter,
            "Callbacks answered, by platform, account, event kind and outcome (ok, or why it was refused).",
            // Refusals carry kind="unknown" (the body was not read into an event); an "ok" series
            // appears with the first event of its kind.
            CallbackRefusals(&["bad_request", "bad_signature", "stale", "bad_xml", "bad_encryption", "store_unavailable", "overloaded"])),
        ("wgw_callback_seconds", Histogram, "Time to answer a callback, in seconds.", None),
        ("wgw_callback_duplicates_total", Counter,
            "Callbacks already stored (WeChat retries), answered without a new event.", PerAccount),
        ("wgw_outbox_depth", Gauge, "Events acknowledged to WeChat and not yet accepted by the CRM.", PerAccount),
        ("wgw_outbox_oldest_age_seconds", Gauge,
            "Age of the oldest event waiting for the CRM, in seconds (0 when none waits).", PerAccount),
        ("wgw_events_delivered_total", Counter, "Events the CRM accepted.", Global),
        ("wgw_delivery_failures_total", Counter,
            "Attempts to deliver a batch to the CRM that failed (the batch is retried).", Global),
        ("wgw_dead_letters_total", Counter, "Events the CRM refused, moved to the dead-letter list.", Global),
        ("wgw_attribution_failures_total", Counter,
            "QR scene lookups that failed (the event went out without its label).", Global),
        ("wgw_enrichment_lookups_total", Counter, "User profile lookups made to enrich events.", PerAccount),
        ("wgw_enrichment_failures_total", Counter,
            "User profile lookups that failed (the event went out without the profile).", PerAccount),
        ("wgw_user_data_purged_total", Counter, "Unsubscribes whose stored user data was deleted.", PerAccount),
        ("wgw_wechat_api_calls_total", Counter,
            "Calls to the WeChat API by account, API and errcode (0 on success; network, timeout, http_<status>).", None),
        ("wgw_wechat_token_rejections_total", Counter,
            "WeChat API calls refused for the access token (40001, 40014, 42001) and retried with a fresh one.", PerAccount),
        ("wgw_token_refresh_failures_total", Counter,
            "Attempts to fetch an access token from WeChat that failed.", PerAccount),
        ("wgw_menu_drift", Gauge,
            "1 when the live menu was last found changed outside the gateway, else 0.", PerAccount),
        ("wgw_auto_replies_total", Counter, "Passive replies chosen, by origin (rule or welcome).",
            PerAccountAnd("origin", &["rule", "welcome"])),
        ("wgw_welcome_messages_total", Counter, "WeCom welcome messages, by outcome.",
            PerWorkAccountAnd("outcome", &["sent", "failed", "expired"])),
        ("wgw_broadcast_batches_total", Counter, "Broadcast batch attempts, by outcome.",
            PerAccountAnd("outcome", &["sent", "already_sent", "reconciled", "failed", "retry"])),
        ("wgw_link_clicks_total", Counter, "Tracked link clicks recorded, identified or not.",
            PerAccountAnd("identified", &["true", "false"])),
        ("wgw_link_click_failures_total", Counter,
            "Tracked link clicks that could not be recorded (the redirect still happened).", PerAccount),
        ("wgw_link_oauth_failures_total", Counter,
            "Tracked link OAuth exchanges that failed (the click was recorded anonymously).", PerAccount),
        ("wgw_link_oauth_state_reused_total", Counter,
            "Tracked link OAuth returns refused because their state was already used.", PerAccount),
        ("wgw_link_anonymous_clicks_suppressed_total", Counter,
            "Anonymous tracked link opens that made no event (one per link and client per window).", PerAccount),
        ("wgw_store_docs_swept_total", Counter, "Lapsed documents removed by the sweeper, by kind.", PerLapsingKind),
        ("wgw_store_account_unavailable", Gauge,
            "1 while the account's part of the store is unreachable (its Redis Cluster slot's master is down): its events wait and its callbacks get 503; else 0.",
            PerAccount),
        ("wgw_group_member_events_total", Counter,
            "WeCom customer group join and leave events made, one per member of a change_external_chat.", PerAccount),
        ("wgw_group_member_lookup_failures_total", Counter,
            "WeCom customer groups that could not be read for a member change (join events went out with the callback's details).", PerAccount),
        ("wgw_sync_snapshots_total", Counter,
            "Snapshot events recorded by audience syncs (each person once per sync).", PerAccount),
        ("wgw_sync_pauses_total", Counter,
            "Audience sync pauses (a WeChat quota, busy or unreachable WeChat).", PerAccount),
        ("wgw_jsapi_signatures_total", Counter, "JS-SDK (wx.config) signatures issued.", PerAccount),
        ("wgw_identity_oauth_total", Counter,
            "H5 OAuth entry steps by outcome (redirected to WeChat, identified, or why refused).",
            PerAccountAnd("outcome", &["redirected", "identified", "bad_request", "off", "bad_state", "replayed", "wechat_error", "unavailable"])),
        ("wgw_template_sends_total", Counter,
            "Template message and subscription notice sends to one follower, by outcome.",
            PerAccountAnd("outcome", &["sent", "failed", "quota", "retry", "unknown"])),
        ("wgw_custom_messages_outside_window_total", Counter,
            "Customer-service messages refused because the follower's 48-hour window is closed (the gateway's check or WeChat's 45015).", PerAccount),
        ("wgw_interaction_record_failures_total", Counter,
            "Follower interactions the forwarder could not record (their 48-hour window stays closed).", Global),
        ("wgw_media_uploads_total", Counter,
            "Media uploads, by outcome: uploaded, reused (same bytes, no call), reuploaded (a lapsed temporary id), refused (WeChat's limits), failed.",
            PerAccountAnd("outcome", &["uploaded", "reused", "reuploaded", "refused", "failed"])),
    ]
};

/// Writes the HELP text of every family and creates the series that exist from start (at 0),
/// for these accounts (id, whether it is a WeCom account). Idempotent: tests start several apps
/// in one process.
pub fn register_metrics<'a>(accounts: impl IntoIterator<Item = (&'a str, bool)>) {
    // Each account's id is allocated once and shared by its ~55 series, and the other label
    // values are static: 1,000 accounts' series took 18.6 MiB with an owned string for every
    // label value, 15.6 MiB this way (the rest is the registry's own, ~290 bytes a series).
    let accounts: Vec<(Label, bool)> = accounts
        .into_iter()
        .map(|(id, work)| {
            let shared = SharedString::from_shared(Arc::<str>::from(id));
            (Label::new("account", shared), work)
        })
        .collect();
    for &(name, kind, help, preset) in METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => metrics::describe_histogram!(name, help),
        }
        let zero = |labels: Vec<Label>| match kind {
            MetricKind::Counter => metrics::counter!(name, labels).increment(0),
            // A gauge set elsewhere keeps its value; only a new one starts at 0.
            MetricKind::Gauge => metrics::gauge!(name, labels).increment(0.0),
            MetricKind::Histogram => {}
        };
        let fixed = Label::from_static_parts;
        match preset {
            Preset::None => {}
            Preset::Global => zero(Vec::new()),
            Preset::PerAccount => {
                for (account, _) in &accounts {
                    zero(vec![account.clone()]);
                }
            }
            Preset::CallbackRefusals(outcomes) => {
                for (account, work) in &accounts {
                    for outcome in outcomes {
                        zero(vec![
                            fixed("platform", if *work { "work" } else { "mp" }),
                            account.clone(),
                            fixed("kind", "unknown"),
                            fixed("outcome", outcome),
                        ]);
                    }
                }
            }
            Preset::PerAccountAnd(label, values) => {
                for (account, _) in &accounts {
                    for value in values {
                        zero(vec![account.clone(), fixed(label, value)]);
                    }
                }
            }
            Preset::PerWorkAccountAnd(label, values) => {
                for (account, _) in accounts.iter().filter(|(_, work)| *work) {
                    for value in values {
                        zero(vec![account.clone(), fixed(label, value)]);
                    }
                }
            }
            Preset::PerLapsingKind => {
                for kind in crate::store::kinds::lapsing() {
                    zero(vec![fixed("kind", kind.name())]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    /// A spawned thread names itself once it runs, so on a busy machine the name can show up a
    /// little after `spawn` returns: the test waits for it (up to 10 s) rather than reading once.
    #[test]
    fn the_recorder_comes_with_a_thread_that_drains_histogram_samples() {
        let _ = metrics_handle();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut threads = thread_names();
        while !threads.iter().any(|name| name == "wgw-metrics-upk") {
            assert!(
                std::time::Instant::now() < deadline,
                "no upkeep thread among {threads:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
            threads = thread_names();
        }
    }

    fn names_in(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                names_in(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("wgw_")
                        && piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        found.insert(piece.to_owned());
                    }
                }
            }
        }
    }

    /// The catalogue, the code that writes metrics and docs/operations.md name the same
    /// families: a metric added without HELP, or without a line in the docs, fails here.
    #[test]
    fn the_catalogue_names_every_metric_the_code_writes_and_the_docs_list_them() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut written = BTreeSet::new();
        names_in(&root.join("src"), &mut written);
        let catalogued: BTreeSet<String> = METRICS.iter().map(|m| m.0.to_owned()).collect();
        assert_eq!(written, catalogued, "src/telemetry.rs METRICS vs the code");
        let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
        for name in &catalogued {
            assert!(
                docs.contains(&format!("`{name}`")),
                "{name} is not in docs/operations.md"
            );
        }
    }
}
