//! Tracked links: short gateway URLs that record who opened them, then redirect.
//!
//! A link is a document ([`LINKS`], id = its code) under its account: the target,
//! checked against `links.allowed_domains` when it was created and never taken from a request
//! afterwards, and a label. Opening it inside WeChat goes through web OAuth (`snsapi_base`, no
//! consent screen) to learn the follower's openid; elsewhere the click is anonymous. Either
//! way a `LinkClick` event is recorded through [`crate::store::Outbox::record`], so it reaches the CRM through
//! the outbox like any callback, with a stable id per click (a reload of the OAuth callback is
//! the same click, de-duplicated by the store).
//!
//! What the gateway keeps about a follower's clicks is one document per openid ([`CLICKS`]): the codes and times of their last [`MAX_REMEMBERED`] identified clicks,
//! lapsing 30 days after the last one. Its one use is to count a second open of the same link
//! within [`CLICK_REPEAT_WINDOW`] (a double tap, the in-app browser loading the page again) as
//! one click. It is deleted with the rest of the follower's data on unsubscribe
//! ([`forget_follower`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::domain::link::{LinkCode, LinkTarget, MAX_LABEL_CHARS};
use crate::domain::{AccountId, Actor, Platform};
use crate::error::ServiceError;
use crate::pb::{self, event::Kind};
use crate::store::{kinds, DocKind, DocWrite, Recorded, Store, StoreError};
use crate::wechat::account::Account;

use super::Services;

/// The links (id: its code).
const LINKS: DocKind<Link> = DocKind::new(kinds::LINK);
/// A follower's recent clicks (id: the openid), lapsing [`CLICKS_TTL`] after the last one.
const CLICKS: DocKind<Clicks> = DocKind::new(kinds::LINK_CLICKS);
/// A second identified open of the same link by the same follower this soon is the same click.
pub const CLICK_REPEAT_WINDOW: Duration = Duration::from_secs(30);
/// Clicks remembered per follower.
const MAX_REMEMBERED: usize = 20;
/// How long a follower's click memory lasts after their last click.
const CLICKS_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The used OAuth states (id: the state's nonce), kept while a state is valid.
const USED_STATES: DocKind<Used> = DocKind::new(kinds::LINK_OAUTH_STATE);
/// Recent anonymous clicks (id: the code and a hash of the client's address).
const ANONYMOUS_CLICKS: DocKind<Used> = DocKind::new(kinds::LINK_ANONYMOUS_CLICK);
/// Most links per account (the list is read whole).
const MAX_LINKS: usize = 10_000;

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub code: String,
    pub target: String,
    pub label: String,
    pub actor: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A link as both transports answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedLink {
    pub code: String,
    /// The short URL to hand out.
    pub url: String,
    pub target: String,
    pub label: String,
}

/// The short URL of a link: `<links.public_base_url>/l/<account>/<code>`.
pub fn short_url(base: &str, account: &str, code: &str) -> String {
    format!("{base}/l/{account}/{code}")
}

#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create_link(
    svc: &Services,
    account_id: &AccountId,
    actor: &Actor,
    target: &str,
    label: &str,
) -> Result<CreatedLink, ServiceError> {
    svc.account(account_id)?;
    let Some(base) = svc.links.public_base_url.as_deref() else {
        return Err(ServiceError::Validation(
            "links: set links.public_base_url (the gateway's public address) to create links"
                .into(),
        ));
    };
    let target =
        LinkTarget::parse(target, &svc.links.allowed_domains).map_err(ServiceError::Validation)?;
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(ServiceError::Validation(format!(
            "label: at most {MAX_LABEL_CHARS} characters, got {}",
            label.chars().count()
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "label: must not contain control characters".into(),
        ));
    }
    if LINKS.list(&*svc.store, account_id.as_str()).await?.len() >= MAX_LINKS {
        return Err(ServiceError::Precondition(format!(
            "the account has {MAX_LINKS} links already"
        )));
    }
    let link = loop {
        let link = Link {
            code: LinkCode::generate().as_str().to_owned(),
            target: target.as_str().to_owned(),
            label: label.to_owned(),
            actor: actor.to_string(),
            created_at: unix_now(),
        };
        // Create-only: a collision of two 131-bit codes never happens, but must not overwrite.
        if LINKS
            .put(
                &*svc.store,
                account_id.as_str(),
                &link.code,
                &link,
                DocWrite::IfAbsent,
            )
            .await?
        {
            break link;
        }
    };
    tracing::info!(code = %link.code, label = %link.label, "tracked link created");
    Ok(CreatedLink {
        url: short_url(base, account_id.as_str(), &link.code),
        code: link.code,
        target: link.target,
        label: link.label,
    })
}

/// Every link of the account, oldest first.
pub async fn list_links(
    svc: &Services,
    account_id: &AccountId,
) -> Result<Vec<CreatedLink>, ServiceError> {
    svc.account(account_id)?;
    let base = svc.links.public_base_url.as_deref().unwrap_or_default();
    let mut links = Vec::new();
    for stored in LINKS.list(&*svc.store, account_id.as_str()).await? {
        links.push(stored.value?);
    }
    links.sort_by(|a, b| (a.created_at, &a.code).cmp(&(b.created_at, &b.code)));
    Ok(links
        .into_iter()
        .map(|l| CreatedLink {
            url: short_url(base, account_id.as_str(), &l.code),
            code: l.code,
            target: l.target,
            label: l.label,
        })
        .collect())
}

/// The stored link of a code, if there is one.
pub async fn find(
    store: &dyn Store,
    account_id: &AccountId,
    code: &LinkCode,
) -> Result<Option<Link>, StoreError> {
    LINKS.get(store, account_id.as_str(), code.as_str()).await
}

/// Who opened a link, as far as the gateway could tell.
#[derive(Debug, Clone)]
pub struct Click {
    /// `None`: anonymous (outside WeChat, or OAuth failed).
    pub open_id: Option<String>,
    pub union_id: String,
    /// This click's nonce (from the OAuth state, or fresh): its event id derives from it.
    pub nonce: String,
}

/// Records the click as a `LinkClick` event (see the module comment); `true` when a new
/// event was recorded.
pub async fn record_click(
    store: &dyn Store,
    account: &Account,
    link: &Link,
    click: Click,
) -> Result<bool, StoreError> {
    let account_id = account.id.as_str();
    if let Some(open_id) = &click.open_id {
        if !remember_click(store, account_id, open_id, &link.code).await? {
            tracing::debug!(code = %link.code, "a repeated open of the same link; one click");
            return Ok(false);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = pb::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    };
    let event = pb::Event {
        id: click_id(account_id, &link.code, &click.nonce),
        account_id: account_id.to_owned(),
        platform: match account.platform {
            Platform::Mp => pb::Platform::Mp,
            Platform::Work => pb::Platform::Work,
        } as i32,
        occurred_at: Some(at),
        received_at: Some(at),
        open_id: click.open_id.clone().unwrap_or_default(),
        union_id: click.union_id,
        kind: Some(Kind::LinkClick(pb::LinkClick {
            code: link.code.clone(),
            label: link.label.clone(),
            target: link.target.clone(),
            anonymous: click.open_id.is_none(),
        })),
        ..Default::default()
    };
    let recorded = store.record(&event).await? == Recorded::New;
    metrics::counter!("wgw_link_clicks_total", "account" => account_id.to_owned(),
        "identified" => if click.open_id.is_some() { "true" } else { "false" })
    .increment(u64::from(recorded));
    Ok(recorded)
}

/// The event id of one click: stable for its nonce, so that a reloaded callback is one click.
fn click_id(account: &str, code: &str, nonce: &str) -> String {
    let mut h = Sha1::new();
    for part in [account, "link_click", code, nonce] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(h.finalize())
}

/// When a one-time thing was used (unix seconds); its presence is what counts.
#[derive(Debug, Serialize, Deserialize)]
struct Used {
    at: u64,
}

/// Takes an OAuth `state` (by its nonce) for its one use; `false` when it was used already, by
/// this instance or another (the store's if-absent write decides). Kept for `valid_for`, the
/// state's own lifetime: after that the state is refused as expired anyway.
pub async fn claim_oauth_state(
    store: &dyn Store,
    account: &AccountId,
    nonce: &str,
    valid_for: Duration,
) -> Result<bool, StoreError> {
    let used = Used { at: unix_now() };
    USED_STATES
        .put_lapsing(
            store,
            account.as_str(),
            nonce,
            &used,
            DocWrite::IfAbsent,
            valid_for,
        )
        .await
}

/// Takes the one anonymous click event that `client` may cause on a link in `window`;
/// `false` when it had it already. The address is kept only as a hash, and only for the window.
pub async fn claim_anonymous_click(
    store: &dyn Store,
    account: &AccountId,
    code: &str,
    client: std::net::IpAddr,
    window: Duration,
) -> Result<bool, StoreError> {
    let mut h = Sha1::new();
    h.update(code.as_bytes());
    h.update([0x1f]);
    h.update(client.to_string().as_bytes());
    let id = format!("{code}.{}", hex::encode(&h.finalize()[..10]));
    let used = Used { at: unix_now() };
    ANONYMOUS_CLICKS
        .put_lapsing(
            store,
            account.as_str(),
            &id,
            &used,
            DocWrite::IfAbsent,
            window,
        )
        .await
}

/// A follower's remembered clicks.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Clicks {
    /// (code, unix ms), oldest first.
    clicks: Vec<(String, u64)>,
}

/// Notes the click in the follower's click memory; `false` when the same link was opened by
/// them within [`CLICK_REPEAT_WINDOW`]. Compare-and-swap, since two opens may race.
async fn remember_click(
    store: &dyn Store,
    account: &str,
    open_id: &str,
    code: &str,
) -> Result<bool, StoreError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for _ in 0..8 {
        let old = CLICKS.read(store, account, open_id).await?;
        let (mut clicks, write) = match old {
            Some(old) => (old.value?, DocWrite::IfEquals(old.bytes)),
            None => (Clicks::default(), DocWrite::IfAbsent),
        };
        let window = CLICK_REPEAT_WINDOW.as_millis() as u64;
        if clicks
            .clicks
            .iter()
            .any(|(c, at)| c == code && now_ms.saturating_sub(*at) < window)
        {
            return Ok(false);
        }
        clicks.clicks.push((code.to_owned(), now_ms));
        let excess = clicks.clicks.len().saturating_sub(MAX_REMEMBERED);
        clicks.clicks.drain(..excess);
        if CLICKS
            .put_lapsing(store, account, open_id, &clicks, write, CLICKS_TTL)
            .await?
        {
            return Ok(true);
        }
    }
    // Contended past reason: count the click rather than lose it.
    Ok(true)
}

/// Deletes what the links feature holds about a follower (their click memory); `true` when
/// there was something.
pub async fn forget_follower(
    store: &dyn Store,
    account: &str,
    open_id: &str,
) -> Result<bool, StoreError> {
    CLICKS.delete(store, account, open_id).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn click_ids_are_stable_per_nonce_and_distinct_otherwise() {
        let a = click_id("acme-mp", "CODE", "n1");
        assert_eq!(a, click_id("acme-mp", "CODE", "n1"));
        assert_ne!(a, click_id("acme-mp", "CODE", "n2"));
        assert_ne!(a, click_id("acme-mp", "CODE2", "n1"));
        assert_eq!(a.len(), 40);
    }
}
