//! Plain mode's guard against forged bodies: a `signature` covers only the Token, `timestamp`
//! and `nonce`, never the body, and it is on every callback URL WeChat calls, so whoever sees
//! one URL (a proxy log, say) could send any body under it for as long as its timestamp is
//! fresh. Each plain callback's signature is therefore remembered with a hash of its body, in the
//! store that every instance shares: the same signature with the same body again is WeChat's
//! retry (answered as a duplicate), with another body it is refused (issue 18).
//!
//! This narrows the hole; it cannot close it. Whoever is first with a fresh signature wins, and
//! a forger who is faster than WeChat still gets an event in (and WeChat's own callback is then
//! refused). Only safe mode authenticates bodies (`msg_signature` covers the `Encrypt` value),
//! which is why it is the recommended setting. Safe and compatible mode never come here.

use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::store::docs::Utf8;
use crate::store::kinds;
use crate::store::{DocKind, DocWrite, Documents, StoreError};

/// Lowercase hex signature → lowercase hex SHA-1 of the body it came with.
const SEEN: DocKind<String, Utf8> = DocKind::new(kinds::PLAIN_SIGNATURE);

/// How long a signature is remembered when `callbacks.max_clock_skew_seconds` is 0 (the check
/// off, so a signature never goes stale): twice the default window.
const WITHOUT_CLOCK_CHECK: Duration = Duration::from_secs(600);

/// What [`remember`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use of the signature, or its use again with the same body (a retry).
    Fresh,
    /// The signature came before with another body.
    OtherBody,
}

/// Records that `signature` (already verified) came with `body`, unless it came before; says
/// whether it came before with another body. It is kept for twice `max_skew`: a timestamp may
/// be up to `max_skew` ahead of the clock, and stays fresh until `max_skew` after it.
pub async fn remember(
    store: &dyn Documents,
    account: &str,
    signature: &str,
    body: &[u8],
    max_skew: Option<Duration>,
) -> Result<Seen, StoreError> {
    // The signature is compared case-insensitively: one key for every spelling of it.
    let id = signature.to_ascii_lowercase();
    let digest = hex::encode(Sha1::digest(body));
    let ttl = max_skew.map_or(WITHOUT_CLOCK_CHECK, |skew| skew * 2);
    if SEEN
        .put_lapsing(store, account, &id, &digest, DocWrite::IfAbsent, ttl)
        .await?
    {
        return Ok(Seen::Fresh);
    }
    // Taken: by a retry of this callback, or by another body. It may lapse in between; a
    // signature seen with no body now is fresh again (its timestamp is then stale anyway).
    Ok(match SEEN.get(store, account, &id).await? {
        Some(seen) if seen != digest => Seen::OtherBody,
        _ => Seen::Fresh,
    })
}
