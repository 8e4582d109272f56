//! The access tokens every instance shares, in the Redis store.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::connection::{query, query_pipe};
use super::keys::token_hash;
use super::RedisStore;
use crate::domain::Secret;
use crate::store::{CachedToken, StoreError, TokenCache};

/// A cached token (and its budget) is kept this long after its last write, so that the day's
/// force-refresh count outlives the token itself.
const TOKEN_KEY_TTL: Duration = Duration::from_secs(2 * 86_400);

#[async_trait]
impl TokenCache for RedisStore {
    async fn cached_token(&self, key: &str) -> Result<Option<CachedToken>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(token_hash(key));
        let fields: HashMap<String, String> =
            self.run("read token", || query(&self.conn, &cmd)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let number = |name: &str| {
            fields
                .get(name)
                .map_or(Ok(0), |v| v.parse::<u64>())
                .map_err(|_| {
                    StoreError::Corrupt(format!("token {key:?}: field {name} is not a number"))
                })
        };
        Ok(Some(CachedToken {
            token: Secret::new(fields.get("t").cloned().unwrap_or_default()),
            expires_at_ms: number("exp")?,
            forced_at_ms: number("fat")?,
            forced_day: number("fday")?,
            forced_today: number("fcnt")? as u32,
        }))
    }

    async fn put_token(&self, key: &str, token: &CachedToken) -> Result<(), StoreError> {
        let hash = token_hash(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&hash)
            .arg("t")
            .arg(token.token.expose())
            .arg("exp")
            .arg(token.expires_at_ms)
            .arg("fat")
            .arg(token.forced_at_ms)
            .arg("fday")
            .arg(token.forced_day)
            .arg("fcnt")
            .arg(token.forced_today)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(TOKEN_KEY_TTL.as_millis() as u64)
            .ignore();
        self.run("write token", || query_pipe::<()>(&self.conn, &pipe))
            .await
    }

    async fn evict_token(&self, key: &str, rejected: &str) -> Result<bool, StoreError> {
        if rejected.is_empty() {
            return Ok(false);
        }
        let hash = token_hash(key);
        // Safe to retry: a second run finds the token already emptied and answers 0; the first
        // run's caller then waits for the refresh like any other.
        let evicted: i64 = self
            .run("evict token", || {
                let mut invocation = self.evict_token_script.key(&hash);
                invocation.arg(rejected);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(evicted == 1)
    }
}
