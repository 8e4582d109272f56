//! TLS on both gRPC transports, with certificates the tests generate: the gateway delivering to
//! a CRM over TLS (its bearer token, a private CA, mutual TLS, an untrusted certificate), and
//! the Gateway server over TLS (with and without client certificates). Real tonic servers and
//! clients on loopback.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use wechat_gateway::config;
use wechat_gateway::pb::event::Kind;

use crate::support::app::{
    config_toml, spawn_app, spawn_configured, text_xml, unique_msg_id, AppOptions, TestApp,
};
use crate::support::crm::{CrmOptions, FakeCrm};
use crate::support::pki::Ca;

const CRM_TOKEN: &str = "crm-bearer-token-4f1c9a";

/// An embedded app in `dir` whose `[crm]` section is `crm` (TOML lines).
async fn app_with_crm_toml(dir: &Path, crm: &str) -> TestApp {
    let mut opts = AppOptions::embedded(&dir.join("data"));
    opts.extra_toml = format!("[crm]\ntimeout_ms = 2000\n{crm}\n");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_toml(&opts)).unwrap();
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    spawn_configured(cfg).await
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.to_string_lossy())
}

/// Posts one text callback and returns its content, to find it at the CRM.
async fn post_text(app: &TestApp, content: &str) {
    let status = app
        .post_plain(
            "acme-plain",
            &text_xml("oTlsUser", content, unique_msg_id()),
        )
        .await
        .status();
    assert_eq!(status, 200, "the callback is acknowledged (stored durably)");
}

fn texts(events: &[wechat_gateway::pb::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Text(t)) => Some(t.content.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn events_reach_a_crm_over_tls_with_the_bearer_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("crm private CA");
    let crm = FakeCrm::start_with(
        "127.0.0.1:0".parse().unwrap(),
        CrmOptions {
            tls: Some(ca.server()),
            token: Some(CRM_TOKEN.into()),
            ..CrmOptions::default()
        },
    )
    .await;
    assert!(crm.endpoint().starts_with("https://"));
    let ca_file = ca.write(dir.path(), "crm-ca");
    let crm_toml = |token: &str| {
        format!(
            "endpoint = {:?}\ntls_ca_file = {}\ntoken = {token:?}",
            crm.endpoint(),
            toml_path(&ca_file)
        )
    };

    // A token the CRM does not know: refused with UNAUTHENTICATED, kept, retried.
    let app = app_with_crm_toml(dir.path(), &crm_toml("not-the-crm-token")).await;
    post_text(&app, "over tls").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crm.unauthenticated() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the CRM never saw the wrong token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crm.accepted().is_empty());
    app.stop().await;

    std::env::set_var("GWTEST_CRM_TOKEN_TLS", CRM_TOKEN);
    let app = app_with_crm_toml(dir.path(), &crm_toml("${GWTEST_CRM_TOKEN_TLS}")).await;
    let refused = crm.unauthenticated();
    let events = crm
        .wait_for(|e| !e.is_empty(), Duration::from_secs(10))
        .await;
    assert_eq!(texts(&events), ["over tls"]);
    assert_eq!(
        crm.unauthenticated(),
        refused,
        "every Deliver carried the right token"
    );
    assert!(
        !format!("{:?}", app.config).contains(CRM_TOKEN),
        "the token is a secret: never printed"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_crm_the_gateway_does_not_trust_gets_nothing_until_its_ca_is_configured_then_the_event_once(
) {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Ca::new("the CA the gateway is told about");
    let actual = Ca::new("the CA that signed the CRM");
    let crm = FakeCrm::start_with(
        "127.0.0.1:0".parse().unwrap(),
        CrmOptions {
            tls: Some(actual.server()),
            ..CrmOptions::default()
        },
    )
    .await;
    let wrong = trusted.write(dir.path(), "wrong-ca");
    let right = actual.write(dir.path(), "right-ca");
    let crm_toml = |ca: &Path| {
        format!(
            "endpoint = {:?}\ntls_ca_file = {}",
            crm.endpoint(),
            toml_path(ca)
        )
    };

    let app = app_with_crm_toml(dir.path(), &crm_toml(&wrong)).await;
    let msg_id = unique_msg_id();
    let xml = text_xml("oTlsUser", "held back", msg_id);
    assert_eq!(app.post_plain("acme-plain", &xml).await.status(), 200);
    // The forwarder tries (and backs off) for a while: the handshake fails every time, so no
    // Deliver reaches the CRM and nothing is acknowledged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(crm.calls(), 0, "no rpc over an untrusted connection");
    assert!(crm.accepted().is_empty());
    let cfg = app.config.clone();
    app.stop().await;
    let store = wechat_gateway::startup::open_store(&cfg).await.unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        1,
        "the event is still in the outbox"
    );
    drop(store);

    let app = app_with_crm_toml(dir.path(), &crm_toml(&right)).await;
    let events = crm
        .wait_for(|e| !e.is_empty(), Duration::from_secs(10))
        .await;
    assert_eq!(texts(&events), ["held back"]);
    // WeChat's retry of the same callback is a duplicate: the id is the one already delivered.
    assert_eq!(app.post_plain("acme-plain", &xml).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(crm.accepted().len(), 1, "delivered exactly once");
    assert_eq!(crm.accepted()[0].id, events[0].id);
    app.stop().await;
}

#[tokio::test]
async fn a_crm_demanding_mutual_tls_gets_events_only_from_a_gateway_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("crm server CA");
    let client_ca = Ca::new("crm client CA");
    // The CRM's certificate names `crm.internal` only: the gateway reaches it on 127.0.0.1 and
    // checks the name it is told (`tls_server_name`).
    let crm = FakeCrm::start_with(
        "127.0.0.1:0".parse().unwrap(),
        CrmOptions {
            tls: Some(server_ca.server_named("crm.internal")),
            client_ca_pem: Some(client_ca.pem().to_owned()),
            ..CrmOptions::default()
        },
    )
    .await;
    let ca_file = server_ca.write(dir.path(), "crm-ca");
    let base = format!(
        "endpoint = {:?}\ntls_ca_file = {}\ntls_server_name = \"crm.internal\"",
        crm.endpoint(),
        toml_path(&ca_file)
    );

    let app = app_with_crm_toml(dir.path(), &base).await;
    post_text(&app, "needs a client certificate").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        crm.accepted().is_empty(),
        "no client certificate: the CRM refuses the handshake"
    );
    app.stop().await;

    let (cert, key) = client_ca
        .client("gateway")
        .write(dir.path(), "gateway-client");
    let app = app_with_crm_toml(
        dir.path(),
        &format!(
            "{base}\ntls_cert_file = {}\ntls_key_file = {}",
            toml_path(&cert),
            toml_path(&key)
        ),
    )
    .await;
    let events = crm
        .wait_for(|e| !e.is_empty(), Duration::from_secs(10))
        .await;
    assert_eq!(texts(&events), ["needs a client certificate"]);
    app.stop().await;
}

/// One gRPC health check of the Gateway server at `endpoint`: `Err` when the connection or
/// the call fails (with TLS 1.3 a refused client certificate surfaces at the first call).
async fn health_check(endpoint: Endpoint) -> Result<(), String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "wechat_gateway.v1.Gateway".into(),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e:?}"))
}

/// An app whose Gateway server presents a certificate of `server_ca` (and, with `client_ca`,
/// demands client certificates it signed).
async fn app_with_grpc_tls(dir: &Path, server_ca: &Ca, client_ca: Option<&Ca>) -> TestApp {
    let (cert, key) = server_ca.server().write(dir, "gateway-server");
    let mut opts = AppOptions::embedded(&dir.join("data"));
    opts.grpc_toml = format!(
        "tls_cert_file = {}\ntls_key_file = {}\n",
        toml_path(&cert),
        toml_path(&key)
    );
    if let Some(client_ca) = client_ca {
        let ca = client_ca.write(dir, "gateway-client-ca");
        opts.grpc_toml += &format!("tls_client_ca_file = {}\n", toml_path(&ca));
    }
    spawn_app(opts, dir).await
}

fn tls_endpoint(app: &TestApp, ca: &Ca, identity: Option<Identity>) -> Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{}", app.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

#[tokio::test]
async fn the_gateway_grpc_server_speaks_tls_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gateway server CA");
    let app = app_with_grpc_tls(dir.path(), &ca, None).await;

    health_check(tls_endpoint(&app, &ca, None))
        .await
        .expect("a TLS client that trusts the CA is served");
    let plaintext = Endpoint::from_shared(format!("http://{}", app.grpc_addr)).unwrap();
    assert!(
        health_check(plaintext).await.is_err(),
        "plaintext is refused"
    );
    let stranger = Ca::new("some other CA");
    assert!(
        health_check(tls_endpoint(&app, &stranger, None))
            .await
            .is_err(),
        "a client checks the server's certificate"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_gateway_grpc_server_with_a_client_ca_serves_only_clients_with_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("gateway server CA");
    let client_ca = Ca::new("gateway client CA");
    let app = app_with_grpc_tls(dir.path(), &server_ca, Some(&client_ca)).await;

    health_check(tls_endpoint(
        &app,
        &server_ca,
        Some(client_ca.client("crm").identity()),
    ))
    .await
    .expect("a client with a certificate of the client CA is served");
    let refused = health_check(tls_endpoint(&app, &server_ca, None)).await;
    assert!(refused.is_err(), "no client certificate: refused");
    let other = Ca::new("a CA the gateway does not know");
    let refused = health_check(tls_endpoint(
        &app,
        &server_ca,
        Some(other.client("crm").identity()),
    ))
    .await;
    assert!(
        refused.is_err(),
        "a client certificate of another CA: refused"
    );
    app.stop().await;
}
