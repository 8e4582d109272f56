//! The connections of the Redis store: one server (a reconnecting manager, and a second one for
//! the blocking read) or a Redis Cluster (slot-aware), and the helpers that send commands over
//! them.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};

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
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
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
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
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
pub(super) async fn connect_cluster(urls: &str) -> Result<ClusterConnection, StoreError> {
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
    client
        .get_async_connection()
        .await
        .map_err(|e| redis_error("connect to the cluster", e))
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
