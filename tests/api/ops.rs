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
