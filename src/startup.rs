//! Builds the application: opens the store, binds the HTTP and gRPC listeners (port 0 works, and
//! the real ports are reported), builds the WeChat API client, the token authority and the use
//! cases that the admin API and the gRPC `Gateway` service share, spawns the forwarder, and
//! runs everything until one shutdown token is cancelled (SIGTERM, Ctrl-C, or a test).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreBackend};
use crate::grpc::gateway::GatewayService;
use crate::http::{self, AppState};
use crate::outbox::sink::{GrpcSink, Sink, StdoutSink};
use crate::outbox::{Decorate, Forwarder, ForwarderConfig};
use crate::pb::gateway_server::GatewayServer;
use crate::services::attribution::Attribution;
use crate::services::broadcast::JobAttachment;
use crate::services::enrich::Enricher;
use crate::services::Services;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::Store;
use crate::telemetry;
use crate::wechat::api::{install_tls_provider, WeChatApi};
use crate::wechat::tokens::TokenAuthority;

/// How long in-flight HTTP requests may take to finish after shutdown starts.
const HTTP_SHUTDOWN_GRACE: u64 = 10;

pub struct Application {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    server: actix_web::dev::Server,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    workers: Vec<(&'static str, JoinHandle<()>)>,
    shutdown: CancellationToken,
}

/// Opens the configured store backend.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &cfg.store.backend {
        StoreBackend::Embedded { path } => Arc::new(
            EmbeddedStore::open_with_cache(path, cfg.store.dedup_ttl, cfg.store.cache_bytes)
                .with_context(|| format!("cannot open the embedded store at {}", path.display()))?,
        ),
        StoreBackend::Redis { url } => {
            let accounts = cfg.accounts.iter().map(|a| a.id.to_string()).collect();
            Arc::new(
                RedisStore::connect(url.expose(), accounts, cfg.store.dedup_ttl)
                    .await
                    .context("cannot connect to Redis (store.redis_url)")?
                    .with_lease(cfg.store.redis_lease),
            )
        }
    })
}

impl Application {
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        install_tls_provider();
        let store = open_store(&cfg).await?;
        let shutdown = CancellationToken::new();

        let http_listener = std::net::TcpListener::bind(cfg.http.listen)
            .with_context(|| format!("cannot listen on http.listen {}", cfg.http.listen))?;
        let http_addr = http_listener.local_addr()?;

        let accounts = cfg
            .accounts
            .iter()
            .map(|a| (a.id.to_string(), Arc::new(a.clone())))
            .collect::<HashMap<_, _>>();
        let api = WeChatApi::new(&cfg.wechat).context("cannot build the WeChat API client")?;
        // Unique per process, so that a restarted instance never mistakes a lease of its
        // previous life for its own.
        let lease_owner = format!("{}-{:08x}", consumer_name(http_addr), rand::random::<u32>());
        let services = Arc::new(Services {
            accounts: accounts.clone(),
            store: store.clone(),
            tokens: TokenAuthority::new(api, store.clone(), lease_owner.clone()),
            menu_locks: Default::default(),
            replies: Default::default(),
            links: cfg.links.clone(),
            broadcasts: crate::services::broadcast::Broadcasts::new(cfg.broadcasts.clone()),
        });
        let account_ids: Vec<String> = services.accounts.keys().cloned().collect();
        services.replies.refresh_all(&*store, &account_ids).await;
        // What the use cases add to each batch before delivery, in this order: the scene's label,
        // then the user's identity (and the purge of departed users), then the broadcast job.
        let mut decorators: Vec<Arc<dyn Decorate>> =
            vec![Arc::new(Attribution::new(store.clone()))];
        if cfg.enrichment.enabled {
            decorators.push(Arc::new(Enricher::new(
                services.clone(),
                cfg.enrichment.user_ttl,
            )));
        }
        decorators.push(Arc::new(JobAttachment::new(store.clone())));
        let broadcast_runner = tokio::spawn(crate::services::broadcast::run(
            services.clone(),
            lease_owner,
            shutdown.clone(),
        ));
        let state = web::Data::new(AppState {
            accounts,
            store: store.clone(),
            max_clock_skew: cfg.max_clock_skew,
            metrics: telemetry::metrics_handle(),
            admin_tokens: cfg.admin_tokens.clone(),
            services: services.clone(),
            callback_limits: http::limits::CallbackLimits::new(
                cfg.callback_limits.max_in_flight,
                cfg.callback_limits.max_in_flight_per_account,
                cfg.accounts.iter().map(|a| a.id.as_str()),
            ),
        });
        let max_body = cfg.http.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .configure(http::routes)
        })
        .listen(http_listener)?
        .shutdown_signal(shutdown.clone().cancelled_owned())
        .shutdown_timeout(HTTP_SHUTDOWN_GRACE)
        .run();

        let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_listen)
            .await
            .with_context(|| format!("cannot listen on grpc.listen {}", cfg.grpc_listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<GatewayServer<GatewayService>>()
            .await;
        let mut grpc_server = tonic::transport::Server::builder();
        if let Some(tls) = &cfg.grpc_tls {
            let tls = crate::tls::server_config(tls)
                .context("cannot set up TLS of the gRPC server (grpc.tls_*)")?;
            grpc_server = grpc_server
                .tls_config(tls)
                .context("cannot set up TLS of the gRPC server (grpc.tls_*)")?;
        }
        let grpc = tokio::spawn(
            grpc_server
                .add_service(health_service)
                .add_service(
                    reflection_builder()
                        .build_v1()
                        .context("cannot build the gRPC reflection service")?,
                )
                .add_service(
                    reflection_builder()
                        .build_v1alpha()
                        .context("cannot build the gRPC reflection service")?,
                )
                .add_service(
                    GatewayServer::new(GatewayService::new(
                        services.clone(),
                        cfg.grpc_tokens.clone(),
                    ))
                    // SendBroadcast carries openid lists as long as the admin route's.
                    .max_decoding_message_size(cfg.broadcasts.max_body_bytes),
                )
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc_listener),
                    shutdown.clone().cancelled_owned(),
                ),
        );

        let sink: Arc<dyn Sink> = match &cfg.crm.endpoint {
            Some(endpoint) => {
                let tls = cfg
                    .crm
                    .tls
                    .as_ref()
                    .map(crate::tls::client_config)
                    .transpose()
                    .context("cannot set up TLS towards the CRM (crm.tls_*)")?;
                Arc::new(
                    GrpcSink::new(endpoint, cfg.crm.timeout, tls, cfg.crm.token.as_ref())
                        .with_context(|| {
                            format!("cannot build the CRM client of crm.endpoint {endpoint}")
                        })?,
                )
            }
            None => Arc::new(StdoutSink),
        };
        let forwarder = Forwarder::new(
            ForwarderConfig {
                batch_size: cfg.crm.batch_size,
                // A failed batch's retries renew its lease: keep them well inside it, or another
                // instance would take the account over while this one still retries.
                backoff_max: Duration::from_secs(10).min(cfg.store.redis_lease / 3),
                ..ForwarderConfig::new(consumer_name(http_addr))
            },
            decorators,
        );
        let workers = vec![
            (
                "forwarder",
                tokio::spawn(forwarder.run(store.clone(), sink, shutdown.clone())),
            ),
            (
                "reply-rules",
                tokio::spawn(crate::services::autoreply::refresh_periodically(
                    services.clone(),
                    shutdown.clone(),
                )),
            ),
            ("broadcasts", broadcast_runner),
            (
                "document-sweep",
                tokio::spawn(crate::services::sweep::run(
                    services.clone(),
                    cfg.store.sweep_interval,
                    shutdown.clone(),
                )),
            ),
        ];

        tokio::spawn(cancel_on_signal(shutdown.clone()));
        tracing::info!(%http_addr, %grpc_addr, accounts = cfg.accounts.len(), "wechat-gateway started");
        Ok(Self {
            http_addr,
            grpc_addr,
            server,
            grpc,
            workers,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Cancelling this token stops the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until shutdown: HTTP stops accepting and finishes in-flight requests, then the
    /// gRPC server and the workers stop; each is awaited and its end reported.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let http = self.server.await;
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(5), self.grpc).await {
            Ok(Ok(Ok(()))) => tracing::info!("gRPC server stopped"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("gRPC server did not stop within 5 s"),
        }
        for (name, handle) in self.workers {
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Ok(Ok(())) => tracing::info!(worker = name, "stopped"),
                Ok(Err(e)) => tracing::warn!(worker = name, error = %e, "worker failed"),
                Err(_) => tracing::warn!(worker = name, "did not stop within 10 s"),
            }
        }
        http.context("HTTP server failed")
    }
}

/// The services the gRPC server implements, the only ones reflection lists. `EventSink` shares
/// `events.proto` with `Event` (its proto is published for the CRM, which implements it): listing
/// every service of the registered files would advertise an rpc this server does not answer.
pub const GRPC_SERVICES: [&str; 4] = [
    "wechat_gateway.v1.Gateway",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection in both versions: `grpc.reflection.v1`, and `v1alpha` for the clients that only
/// know it (Python's grpcio-reflection client, older grpcurl). Each serves the descriptors of
/// every listed service, both reflection versions included.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    GRPC_SERVICES.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |builder, service| builder.with_service_name(*service),
    )
}

/// This instance's name towards the store: the host name and HTTP port, so that it is unique
/// among instances and the same after a restart (a restarted instance resumes its own pending
/// deliveries at once instead of waiting for its lease to lapse).
fn consumer_name(http_addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "gateway".to_owned());
    format!("{host}-{}", http_addr.port())
}

/// SIGTERM (Kubernetes, docker stop) and Ctrl-C both start a graceful shutdown.
async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            _ = token.cancelled() => return,
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
