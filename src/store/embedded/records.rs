//! The scene registry, the menu versions and the documents of the embedded store: redb tables
//! written through the writer, read in read transactions.

use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;

use super::schema::{DOCS, MENU_VERSIONS, SCENES};
use super::writer::{Now, Op};
use super::{unavailable, EmbeddedStore};
use crate::store::docs::{encode_doc, live_doc};
use crate::store::{
    decode_menu_version, decode_scene, encode_menu_version, encode_scene, DocWrite, Documents,
    MenuVersion, MenuVersions, SceneRecord, Scenes, StoreError,
};

fn scene_key(account: &str, scene: &str) -> String {
    format!("{account}\u{1f}{scene}")
}

#[async_trait]
impl Scenes for EmbeddedStore {
    async fn put_scene(
        &self,
        account: &str,
        scene: &str,
        record: &SceneRecord,
    ) -> Result<(), StoreError> {
        self.write(Op::PutScene {
            key: scene_key(account, scene),
            record: encode_scene(record),
        })
        .await
        .map(|_| ())
    }

    async fn scene(&self, account: &str, scene: &str) -> Result<Option<SceneRecord>, StoreError> {
        let key = scene_key(account, scene);
        self.read(move |txn| {
            let scenes = txn.open_table(SCENES).map_err(unavailable)?;
            let found = scenes.get(key.as_str()).map_err(unavailable)?;
            found
                .map(|v| decode_scene(v.value(), &format!("scene {key:?}")))
                .transpose()
        })
        .await
    }
}

#[async_trait]
impl MenuVersions for EmbeddedStore {
    async fn put_menu_version(
        &self,
        account: &str,
        version: &MenuVersion,
    ) -> Result<bool, StoreError> {
        self.write(Op::PutMenuVersion {
            account: account.to_owned(),
            version: version.version,
            record: encode_menu_version(version),
        })
        .await
    }

    async fn menu_versions(&self, account: &str) -> Result<Vec<MenuVersion>, StoreError> {
        let account = account.to_owned();
        self.read(move |txn| {
            let versions = txn.open_table(MENU_VERSIONS).map_err(unavailable)?;
            let rows = versions
                .range((account.as_str(), 0)..=(account.as_str(), u64::MAX))
                .map_err(unavailable)?;
            rows.map(|row| {
                let (key, value) = row.map_err(unavailable)?;
                let (_, n) = key.value();
                decode_menu_version(value.value(), &format!("menu version {n} of {account:?}"))
            })
            .collect()
        })
        .await
    }
}

#[async_trait]
impl Documents for EmbeddedStore {
    async fn put_doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
        value: &[u8],
        write: DocWrite,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.write(Op::PutDoc {
            key: (account.to_owned(), kind.to_owned(), id.to_owned()),
            stored: encode_doc(value, ttl, Now::get().millis),
            write,
        })
        .await
    }

    async fn doc(
        &self,
        account: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = (account.to_owned(), kind.to_owned(), id.to_owned());
        self.read(move |txn| {
            let docs = txn.open_table(DOCS).map_err(unavailable)?;
            let found = docs
                .get((key.0.as_str(), key.1.as_str(), key.2.as_str()))
                .map_err(unavailable)?;
            match found {
                Some(v) => Ok(live_doc(v.value(), Now::get().millis)?.map(<[u8]>::to_vec)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn docs(&self, account: &str, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (account, kind) = (account.to_owned(), kind.to_owned());
        self.read(move |txn| {
            let docs = txn.open_table(DOCS).map_err(unavailable)?;
            let now = Now::get().millis;
            let mut out = Vec::new();
            for row in docs
                .range((account.as_str(), kind.as_str(), "")..)
                .map_err(unavailable)?
            {
                let (key, value) = row.map_err(unavailable)?;
                let (a, k, id) = key.value();
                if a != account || k != kind {
                    break;
                }
                if let Some(live) = live_doc(value.value(), now)? {
                    out.push((id.to_owned(), live.to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_doc(&self, account: &str, kind: &str, id: &str) -> Result<bool, StoreError> {
        self.write(Op::DeleteDoc {
            key: (account.to_owned(), kind.to_owned(), id.to_owned()),
        })
        .await
    }

    /// The cursor is the last id looked at; the lapsed ones found by a read are removed by the
    /// writer only if still lapsed, in as few commits as the group commit makes of them.
    async fn sweep_docs(
        &self,
        account: &str,
        kind: &str,
        cursor: Option<&str>,
        budget: usize,
    ) -> Result<(Option<String>, usize), StoreError> {
        let (a, k) = (account.to_owned(), kind.to_owned());
        let after = cursor.map(str::to_owned);
        let budget = budget.max(1);
        let (lapsed, last, more) = self
            .read(move |txn| {
                let docs = txn.open_table(DOCS).map_err(unavailable)?;
                let now = Now::get().millis;
                let start = match &after {
                    Some(id) => Bound::Excluded((a.as_str(), k.as_str(), id.as_str())),
                    None => Bound::Included((a.as_str(), k.as_str(), "")),
                };
                let (mut lapsed, mut last, mut seen) = (Vec::new(), None, 0);
                for row in docs
                    .range::<(&str, &str, &str)>((start, Bound::Unbounded))
                    .map_err(unavailable)?
                {
                    let (key, value) = row.map_err(unavailable)?;
                    let (ra, rk, id) = key.value();
                    if ra != a || rk != k {
                        return Ok((lapsed, last, false));
                    }
                    if seen == budget {
                        return Ok((lapsed, last, true));
                    }
                    seen += 1;
                    if live_doc(value.value(), now)?.is_none() {
                        lapsed.push(id.to_owned());
                    }
                    last = Some(id.to_owned());
                }
                Ok((lapsed, last, false))
            })
            .await?;
        let removals = lapsed.into_iter().map(|id| {
            self.write(Op::DeleteLapsedDoc {
                key: (account.to_owned(), kind.to_owned(), id),
            })
        });
        let mut removed = 0;
        for outcome in futures::future::join_all(removals).await {
            removed += usize::from(outcome?);
        }
        Ok((if more { last } else { None }, removed))
    }
}
