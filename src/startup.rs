//! Builds the application: opens the store, binds the HTTP listeners (the public one and, when
//! `http.admin_listen` is set, the admin one) and the gRPC listener (port 0 works, and the real
//! ports are reported), builds the WeChat API client, the token authority and the use
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
use crate::domain::Platform;
use crate::grpc::gateway::{self, GatewayService};
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

/// How long an idle connection is kept open between requests (actix's default, made explicit:
/// an idle connection holds one of `http.max_connections`).
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The HTTP socket's listen backlog (actix's own default): clients over `http.max_connections`
/// wait here. std's `TcpListener::bind` allows 128; past that, Linux drops the handshake's last
/// ACK and the client waits for SYN-ACK retransmits (1, 2, 4, 8 s...), long after a slot frees.
const HTTP_BACKLOG: u32 = 1024;

fn bind_http(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's bind does on Unix: a restarted gateway can listen at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)?.into_std()
}

/// `http.max_connections` as actix takes it: actix bounds connections per worker, so the
/// bound is split evenly (rounded down: the total never exceeds the setting), with no more
/// workers than connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionBound {
    workers: usize,
    per_worker: usize,
}

impl ConnectionBound {
    fn new(configured: Option<usize>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = configured.unwrap_or_else(default_max_connections);
        Self::split(total, cpus)
    }

    fn split(total: usize, cpus: usize) -> Self {
        let workers = cpus.clamp(1, total.max(1));
        Self {
            workers,
            per_worker: (total / workers).max(1),
        }
    }
}

/// Without `http.max_connections`: half the process's open-file limit (the rest is for the
/// store, Redis, WeChat, the CRM and gRPC), at most 10,000, so that clients cannot exhaust file
/// descriptors.
fn default_max_connections() -> usize {
    const CEILING: usize = 10_000;
    open_file_limit().map_or(CEILING, |n| (n / 2).clamp(1, CEILING))
}

/// The soft `RLIMIT_NOFILE` of this process, if it has one.
fn open_file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
    }
    #[cfg(not(unix))]
    None
}

pub struct Application {
    http_addr: SocketAddr,
    /// Where `/admin/v1` and `/metrics` are served: `http_addr` unless `http.admin_listen` is set.
    admin_addr: SocketAddr,
    grpc_addr: SocketAddr,
    /// The public server, then the admin one when it has its own listener.
    servers: Vec<actix_web::dev::Server>,
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
        for warning in cfg.warnings() {
            tracing::warn!("{warning}");
        }
        let store = open_store(&cfg).await?;
        let shutdown = CancellationToken::new();

        let http_listener = bind_http(cfg.http.listen)
            .with_context(|| format!("cannot listen on http.listen {}", cfg.http.listen))?;
        let http_addr = http_listener.local_addr()?;
        let admin_listener = match cfg.http.admin_listen {
            Some(addr) => Some(
                bind_http(addr)
                    .with_context(|| format!("cannot listen on http.admin_listen {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = match &admin_listener {
            Some(l) => l.local_addr()?,
            None => http_addr,
        };

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
            syncs: crate::services::sync::Syncs::new(cfg.syncs.clone()),
            templates: crate::services::templates::Templates::new(cfg.template_sends.clone()),
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
            // Reads WeCom like the enrichment does: one event per customer group member who
            // joined or left (crate::services::group_chats).
            decorators.push(Arc::new(crate::services::group_chats::GroupMembers::new(
                services.clone(),
            )));
        }
        decorators.push(Arc::new(JobAttachment::new(store.clone())));
        decorators.push(Arc::new(
            crate::services::templates::TemplateAttachment::new(store.clone()),
        ));
        decorators.push(Arc::new(crate::services::interactions::Interactions::new(
            store.clone(),
        )));
        let broadcast_runner = tokio::spawn(crate::services::broadcast::run(
            services.clone(),
            lease_owner.clone(),
            shutdown.clone(),
        ));
        let sync_runner = tokio::spawn(crate::services::sync::run(
            services.clone(),
            lease_owner.clone(),
            shutdown.clone(),
        ));
        let template_runner = tokio::spawn(crate::services::templates::run(
            services.clone(),
            lease_owner,
            shutdown.clone(),
        ));
        let state = web::Data::new(AppState {
            accounts,
            store: store.clone(),
            max_clock_skew: cfg.max_clock_skew,
            metrics: {
                let handle = telemetry::metrics_handle();
                telemetry::register_metrics(
                    cfg.accounts
                        .iter()
                        .map(|a| (a.id.as_str(), a.platform == Platform::Work)),
                );
                handle
            },
            admin_tokens: cfg.admin_tokens.clone(),
            services: services.clone(),
            callback_limits: http::limits::CallbackLimits::new(
                cfg.callback_limits.max_in_flight,
                cfg.callback_limits.max_in_flight_per_account,
                cfg.accounts.iter().map(|a| a.id.as_str()),
            ),
        });
        let connections = ConnectionBound::new(cfg.http.max_connections);
        let serve = |routes: fn(&mut web::ServiceConfig), listener| {
            http_server(
                state.clone(),
                &cfg.http,
                connections,
                routes,
                listener,
                &shutdown,
            )
        };
        let servers = match admin_listener {
            None => vec![serve(http::routes, http_listener)?],
            Some(admin) => vec![
                serve(http::public_routes, http_listener)?,
                serve(http::admin_routes, admin)?,
            ],
        };

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
                .add_service(gateway::server(
                    services.clone(),
                    cfg.grpc_tokens.clone(),
                    cfg.grpc_max_message_bytes,
                ))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc_listener)
                        // `serve_with_incoming` ignores the builder's `tcp_nodelay`: without this,
                        // Nagle and delayed ACKs held some answers back for 40 ms.
                        .with_nodelay(Some(true)),
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
                accounts: cfg.accounts.iter().map(|a| a.id.to_string()).collect(),
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
            ("syncs", sync_runner),
            ("templates", template_runner),
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
        if let Some(limit) = open_file_limit() {
            let bound = connections.workers * connections.per_worker;
            if bound >= limit {
                tracing::warn!(
                    max_connections = bound,
                    open_file_limit = limit,
                    "http.max_connections is not below the open-file limit (ulimit -n): \
                     clients can exhaust file descriptors; lower it or raise the limit"
                );
            }
        }
        tracing::info!(%http_addr, %admin_addr, %grpc_addr, accounts = cfg.accounts.len(), "wechat-gateway started");
        Ok(Self {
            http_addr,
            admin_addr,
            grpc_addr,
            servers,
            grpc,
            workers,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the admin API and `/metrics` answer (the public address unless
    /// `http.admin_listen` is set).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
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
        // Each server ends on the shared shutdown token; should one fail on its own, cancelling
        // stops the other too.
        let shutdown = self.shutdown.clone();
        let http = futures::future::join_all(self.servers.into_iter().map(|server| {
            let shutdown = shutdown.clone();
            async move {
                let ended = server.await;
                shutdown.cancel();
                ended
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>();
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
        http.map(drop).context("HTTP server failed")
    }
}

/// One actix server on `listener` serving `routes`, stopped by the shared shutdown token.
fn http_server(
    state: web::Data<AppState>,
    cfg: &crate::config::HttpConfig,
    connections: ConnectionBound,
    routes: fn(&mut web::ServiceConfig),
    listener: std::net::TcpListener,
    shutdown: &CancellationToken,
) -> std::io::Result<actix_web::dev::Server> {
    let max_body = cfg.max_body_bytes;
    let body_timeout = cfg.body_timeout;
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .configure(routes)
            .wrap(http::body::BodyDeadline {
                timeout: body_timeout,
            })
            // Outermost, so that every answer has it: errors, 404s and 408s included.
            .wrap(http::nosniff())
    })
    .workers(connections.workers)
    .max_connections(connections.per_worker)
    // The headers' deadline: a client that connects and sends nothing, or its headers a
    // byte at a time, is dropped after as long as it would have for its body.
    .client_request_timeout(body_timeout)
    .keep_alive(HTTP_KEEP_ALIVE)
    .listen(listener)?
    .shutdown_signal(shutdown.clone().cancelled_owned())
    .shutdown_timeout(HTTP_SHUTDOWN_GRACE)
    .run())
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

#[cfg(test)]
mod tests {
    use super::ConnectionBound;

    #[test]
    fn the_connection_bound_is_split_across_workers_without_exceeding_it() {
        for (total, cpus) in [(10_000, 2), (101, 4), (3, 8), (1, 2), (7, 1)] {
            let b = ConnectionBound::split(total, cpus);
            assert!(
                b.workers * b.per_worker <= total,
                "{total} over {cpus}: {b:?}"
            );
            assert!(b.workers >= 1 && b.per_worker >= 1);
            assert!(
                total - b.workers * b.per_worker < b.workers,
                "rounded down by less than one per worker"
            );
        }
    }
}
