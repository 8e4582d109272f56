//! The connections of the Redis store: one server (a reconnecting manager, and a second one for
//! the blocking read) or a Redis Cluster (slot-aware), and the helpers that send commands over
//! them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use crate::store::StoreError;

/// Response timeout of the command connection: well inside WeChat's 5-second window, with room
/// for a busy server that fsyncs every write.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest single blocking read; a longer claim wait returns empty after this. The blocking
/// connection's response timeout is this plus [`RESPONSE_TIMEOUT`].
pub(super) const MAX_BLOCK: Duration = Duration::from_secs(10);

/// One Redis server (reconnecting manager) or a Redis Cluster (slot-aware, reconnecting).
/// Both multiplex one connection per server and are cloned per call.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Healing),
}

/// A cluster connection that is built anew from the node list when it has lost every node.
/// After the whole cluster was restarted under load, `redis`'s own recovery sometimes left the
/// connection with no node at all, answering every command `ClusterConnectionNotFound` for
/// minutes (`tests/api/faults.rs`, the cluster-down test, about one run in ten beside the rest
/// of the suite); a new connection learns the slots again like the first one did.
#[derive(Clone)]
pub(super) struct Healing {
    inner: Arc<HealingInner>,
}

struct HealingInner {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    /// Counts the connections made, so that concurrent failures of one make one new one.
    generation: AtomicU64,
    /// Held while a new connection is being made, so that one is made at a time.
    rebuilding: tokio::sync::Mutex<()>,
}

impl Healing {
    fn current(&self) -> ClusterConnection {
        self.inner
            .conn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a `ClusterConnectionNotFound` on `failed`: a new connection, unless another call
    /// has already replaced `failed` meanwhile. A failure to connect leaves the old one.
    async fn rebuild(&self, failed_generation: u64) {
        let _one = self.inner.rebuilding.lock().await;
        if self.inner.generation.load(Ordering::Acquire) != failed_generation {
            return;
        }
        match self.inner.client.get_async_connection().await {
            Ok(conn) => {
                *self.inner.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
                self.inner.generation.fetch_add(1, Ordering::AcqRel);
                tracing::warn!("Redis Cluster: the connection had lost every node; connected anew");
            }
            Err(e) => {
                tracing::debug!(error = %e, "Redis Cluster: cannot connect anew yet");
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => Box::pin(async move {
                let generation = c.inner.generation.load(Ordering::Acquire);
                let result = c.current().req_packed_command(cmd).await;
                if let Err(e) = &result {
                    if e.kind() == ErrorKind::ClusterConnectionNotFound {
                        c.rebuild(generation).await;
                    }
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => Box::pin(async move {
                let generation = c.inner.generation.load(Ordering::Acquire);
                let result = c
                    .current()
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                if let Err(e) = &result {
                    if e.kind() == ErrorKind::ClusterConnectionNotFound {
                        c.rebuild(generation).await;
                    }
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.current().get_db(),
        }
    }
}

pub(super) async fn query<T: FromRedisValue>(conn: &Conn, cmd: &Cmd) -> RedisResult<T> {
    cmd.query_async(&mut conn.clone()).await
}

pub(super) async fn query_pipe<T: FromRedisValue>(conn: &Conn, pipe: &Pipeline) -> RedisResult<T> {
    pipe.query_async(&mut conn.clone()).await
}

/// One Redis server: a connection for commands and one of its own for the blocking read.
pub(super) async fn connect_single(
    url: &str,
) -> Result<(ConnectionManager, ConnectionManager), StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let conn = ConnectionManager::new_with_config(
        client.clone(),
        config.clone().set_response_timeout(Some(RESPONSE_TIMEOUT)),
    )
    .await
    .map_err(|e| redis_error("connect", e))?;
    let blocking = ConnectionManager::new_with_config(
        client,
        config.set_response_timeout(Some(MAX_BLOCK + RESPONSE_TIMEOUT)),
    )
    .await
    .map_err(|e| redis_error("connect", e))?;
    Ok((conn, blocking))
}

/// A Redis Cluster from a comma-separated list of node URLs (any reachable node is enough to
/// learn the slot map).
pub(super) async fn connect_cluster(urls: &str) -> Result<Healing, StoreError> {
    let nodes: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = ClusterClientBuilder::new(nodes)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(3)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis Cluster URLs: {e}")))?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| redis_error("connect to the cluster", e))?;
    Ok(Healing {
        inner: Arc::new(HealingInner {
            client,
            conn: RwLock::new(conn),
            generation: AtomicU64::new(0),
            rebuilding: tokio::sync::Mutex::new(()),
        }),
    })
}

/// Pipelines of several accounts as one (one server only: they span slots).
pub(super) fn merge(pipes: impl IntoIterator<Item = Pipeline>) -> Pipeline {
    let mut all = redis::pipe();
    for pipe in pipes {
        for cmd in pipe.cmd_iter() {
            all.add_command(cmd.clone());
        }
    }
    all
}

/// [`RedisStore::run`] without a store, for the setup done inside `connect`.
pub(super) async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    match op().await {
        Err(e) if e.is_connection_dropped() => op().await.map_err(|e| redis_error(what, e)),
        result => result.map_err(|e| redis_error(what, e)),
    }
}

pub(super) fn redis_error(what: &str, e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis {what} failed: {e}"))
}
