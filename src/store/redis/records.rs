//! The scene registry, the menu versions and the documents of the Redis store: one hash per
//! account (and per document kind).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::connection::{query, redis_error};
use super::keys::{docs_hash, menu_versions_hash, scenes_hash};
use super::{unix_millis, RedisStore};
use crate::store::docs::{encode_doc, live_doc};
use crate::store::{
    decode_menu_version, decode_scene, encode_menu_version, encode_scene, DocWrite, Documents,
    MenuVersion, MenuVersions, SceneRecord, Scenes, StoreError,
};

#[async_trait]
impl Scenes for RedisStore {
    async fn put_scene(
        &self,
        account: &str,
        scene: &str,
        record: &SceneRecord,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(scenes_hash(account))
            .arg(scene)
            .arg(encode_scene(record));
        self.run("register scene", || query::<()>(&self.conn, &cmd))
            .await
    }

    async fn scene(&self, account: &str, scene: &str) -> Result<Option<SceneRecord>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(scenes_hash(account)).arg(scene);
        let found: Option<Vec<u8>> = self.run("read scene", || query(&self.conn, &cmd)).await?;
        found
            .map(|bytes| decode_scene(&bytes, &format!("scene {scene:?} of {account:?}")))
            .transpose()
    }
}

#[async_trait]
impl MenuVersions for RedisStore {
    async fn put_menu_version(
        &self,
        account: &str,
        version: &MenuVersion,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("HSETNX");
        cmd.arg(menu_versions_hash(account))
            .arg(version.version)
            .arg(encode_menu_version(version));
        // Not retried: had a lost answer stored it, a retry would answer "taken" and the caller
        // would store the same change again under the next number.
        let stored: i64 = query(&self.conn, &cmd)
            .await
            .map_err(|e| redis_error("store menu version", e))?;
        Ok(stored == 1)
    }

    async fn menu_versions(&self, account: &str) -> Result<Vec<MenuVersion>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(menu_versions_hash(account));
        let fields: HashMap<u64, Vec<u8>> = self
            .run("read menu versions", || query(&self.conn, &cmd))
            .await?;
        let mut versions = fields
            .into_iter()
            .map(|(n, bytes)| {
                decode_menu_version(&bytes, &format!("menu version {n} of {account:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }
}

#[async_trait]
impl Documents for RedisStore {
    async fn put_doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
        value: &[u8],
        write: DocWrite,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let hash = docs_hash(account, kind);
        let now = unix_millis();
        let stored = encode_doc(value, ttl, now);
        let (mode, expected): (&str, &[u8]) = match &write {
            DocWrite::Always => ("a", b""),
            DocWrite::IfAbsent => ("n", b""),
            DocWrite::IfEquals(expected) => ("e", expected),
        };
        let written: i64 = self
            .run("write document", || {
                let mut invocation = self.put_doc_script.key(&hash);
                invocation
                    .arg(id)
                    .arg(&stored)
                    .arg(mode)
                    .arg(expected)
                    .arg(now);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(written == 1)
    }

    async fn doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(docs_hash(account, kind)).arg(id);
        let found: Option<Vec<u8>> = self
            .run("read document", || query(&self.conn, &cmd))
            .await?;
        match found {
            Some(stored) => Ok(live_doc(&stored, unix_millis())?.map(<[u8]>::to_vec)),
            None => Ok(None),
        }
    }

    async fn docs(&self, account: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(docs_hash(account, kind));
        let all: Vec<(String, Vec<u8>)> = self
            .run("list documents", || query(&self.conn, &cmd))
            .await?;
        let now = unix_millis();
        let mut out = Vec::with_capacity(all.len());
        for (id, stored) in all {
            if let Some(live) = live_doc(&stored, now)? {
                out.push((id, live.to_vec()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn delete_doc(&self, account: &str, kind: &str, id: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(docs_hash(account, kind)).arg(id);
        let removed: i64 = self
            .run("delete document", || query(&self.conn, &cmd))
            .await?;
        Ok(removed == 1)
    }

    /// The cursor is HSCAN's; the lapsed ids of a step are removed by one script that checks
    /// each again.
    async fn sweep_docs(
        &self,
        account: &str,
        kind: &str,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<(Option<String>, usize), StoreError> {
        let hash = docs_hash(account, kind);
        let mut cmd = redis::cmd("HSCAN");
        cmd.arg(&hash)
            .arg(cursor.unwrap_or("0"))
            .arg("COUNT")
            .arg(budget.max(1));
        let (next, fields): (String, Vec<(String, Vec<u8>)>) = self
            .run("scan documents", || query(&self.conn, &cmd))
            .await?;
        let now = unix_millis();
        let mut lapsed = Vec::new();
        for (id, stored) in fields {
            if live_doc(&stored, now)?.is_none() {
                lapsed.push(id);
            }
        }
        let removed: usize = if lapsed.is_empty() {
            0
        } else {
            self.run("remove lapsed documents", || {
                let mut invocation = self.delete_lapsed_docs_script.key(&hash);
                invocation.arg(now);
                for id in &lapsed {
                    invocation.arg(id);
                }
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?
        };
        Ok(((next != "0").then_some(next), removed))
    }
}
