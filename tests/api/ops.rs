//! What the platform team sees: health, readiness that follows the store, metrics, gRPC health.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::app::{now, spawn_app, text_xml, AppOptions};
use crate::support::redis::RedisServer;

#[tokio::test]
async fn health_metrics_and_grpc_health_answer() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);

    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oMetrics", "hi", now() << 20))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_plain("no-such-account", &text_xml("oMetrics", "hi", 1))
            .await
            .status(),
        404
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let ok_line = metrics
        .lines()
        .find(|l| {
            l.starts_with("wgw_callbacks_total")
                && l.contains("account=\"acme-plain\"")
                && l.contains("kind=\"text\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no callback counter in:\n{metrics}"));
    assert!(!ok_line.ends_with(" 0"), "{ok_line}");
    // An unknown account from the URL never becomes a label value.
    assert!(!metrics.contains("no-such-account"));
    assert!(metrics.contains("wgw_callback_seconds"));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    app.stop().await;
}

#[tokio::test]
async fn with_redis_down_callbacks_get_503_and_readyz_follows_until_it_is_back() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::redis(&redis.url()), dir.path()).await;
    let base = now() << 20;
    assert_eq!(
        app.post_safe("acme-mp", &text_xml("oOutage", "hi", base))
            .await
            .status(),
        200
    );

    redis.kill();
    let resp = app
        .post_safe("acme-mp", &text_xml("oOutage", "hi", base + 1))
        .await;
    assert_eq!(resp.status(), 503, "never a 200 without a stored event");
    assert!(resp.text().await.unwrap().contains("WeChat will retry"));
    assert_eq!(app.get("/readyz").await.status(), 503);

    redis.restart();
    // The gateway reconnects by itself; WeChat's retry of the refused callback then succeeds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = app
            .post_safe("acme-mp", &text_xml("oOutage", "hi", base + 1))
            .await
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}

/// What both reflection versions list: exactly the services this server implements. The
/// CRM's `EventSink` is in `events.proto` beside `Event`, but the gateway does not serve it.
const SERVED: [&str; 4] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "wechat_gateway.v1.Gateway",
];

#[tokio::test]
async fn grpc_reflection_v1_lists_exactly_the_services_the_gateway_implements() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let requests = vec![
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("wechat_gateway.v1.Gateway".into()),
    ]
    .into_iter()
    .map(|r| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    });
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("a service list");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, SERVED);
    let answer = answers.message().await.unwrap().expect("a file");
    assert!(
        matches!(answer.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "the Gateway's descriptor is served: {answer:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn grpc_reflection_v1alpha_lists_the_same_services_for_older_clients() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let requests = vec![
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into()),
    ]
    .into_iter()
    .map(|r| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    });
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("a service list");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, SERVED);
    let answer = answers.message().await.unwrap().expect("a file");
    assert!(
        matches!(answer.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "the health service's descriptor is served: {answer:?}"
    );
    app.stop().await;
}

/// A dashboard or an alert on a per-account series must see 0, not "absent", before the first
/// increment; and every family says what it counts. The real binary, so that no other test of
/// this process has touched its recorder.
#[tokio::test]
async fn every_metric_family_has_help_and_per_account_series_exist_at_zero_from_start() {
    use crate::support::app::config_toml;
    use crate::support::process::GatewayProcess;
    use wechat_gateway::telemetry::{MetricKind, Preset, METRICS};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        config_toml(&AppOptions::embedded(&dir.path().join("data"))),
    )
    .unwrap();
    let gateway = GatewayProcess::start(&config);
    wechat_gateway::wechat::api::install_tls_provider();
    let metrics = reqwest::get(format!("http://{}/metrics", gateway.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    for (name, kind, _, preset) in METRICS {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        // A family is exported once it has a series: those with open-ended labels (and the
        // histogram) show their HELP with their first sample.
        if *preset != Preset::None {
            assert!(
                metrics.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{metrics}"
            );
            assert!(
                metrics.contains(&format!("# TYPE {name} {kind}")),
                "no TYPE for {name}:\n{metrics}"
            );
        }
    }
    for account in [
        "acme-mp",
        "acme-plain",
        "acme-compat",
        "acme-rotated",
        "acme-work",
    ] {
        for series in [
            format!("wgw_outbox_depth{{account=\"{account}\"}} 0"),
            format!("wgw_outbox_oldest_age_seconds{{account=\"{account}\"}} 0"),
            format!("wgw_token_refresh_failures_total{{account=\"{account}\"}} 0"),
            format!("wgw_callback_duplicates_total{{account=\"{account}\"}} 0"),
        ] {
            assert!(
                metrics.lines().any(|l| l == series),
                "{series} is missing:\n{metrics}"
            );
        }
    }
    let refusal = "wgw_callbacks_total{platform=\"work\",account=\"acme-work\",kind=\"unknown\",outcome=\"store_unavailable\"} 0";
    assert!(
        metrics.lines().any(|l| l == refusal),
        "{refusal} is missing:\n{metrics}"
    );
    assert!(
        metrics.contains("wgw_events_delivered_total 0"),
        "{metrics}"
    );
    drop(gateway);
}
