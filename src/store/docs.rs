//! Documents: the small records of the use cases, bytes under (account, kind, id), and the typed
//! view of them that the use cases go through.
//!
//! A [`DocKind`] names one kind of document and the value type stored under it; it is made only
//! from a [`Kind`] declared in [`super::kinds`], the one registry of every kind's name and
//! whether it lapses, which the sweeper reads. Its helpers do the encoding, so a kind's encoding
//! is written once, and the backends see only bytes ([`super::Documents`]). The encoding is a
//! [`Codec`]: [`Json`] unless the kind declares another, for the kinds that have always been
//! stored as plain bytes ([`Utf8`], [`Marker`]) and must read the same.
//!
//! Both backends store a document the same way: [`encode_doc`] puts its expiry in front of its
//! bytes, so a lapsed document reads as absent whatever the backend can expire.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kinds::Kind;
use super::{Documents, StoreError};

/// The condition of a [`Documents::put_doc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocWrite {
    /// Create or replace.
    Always,
    /// Create only: `false` when a live document is there (an idempotency key, a claimed code).
    IfAbsent,
    /// Compare-and-swap: replace only if the live document is exactly these bytes, so that two
    /// writers of one record never lose each other's change.
    IfEquals(Vec<u8>),
}

/// A stored document is its expiry (unix ms, big-endian; 0 = never) followed by its bytes, in
/// both backends, so that a lapsed document reads as absent whatever the backend can expire.
pub(crate) fn encode_doc(value: &[u8], ttl: Option<Duration>, now_ms: u64) -> Vec<u8> {
    let expires = ttl.map_or(0, |t| now_ms.saturating_add(t.as_millis() as u64).max(1));
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The live value of a stored document, `None` when it lapsed.
pub(crate) fn live_doc(stored: &[u8], now_ms: u64) -> Result<Option<&[u8]>, StoreError> {
    let Some((head, value)) = stored.split_first_chunk::<8>() else {
        return Err(StoreError::Corrupt(
            "a stored document is shorter than its header".into(),
        ));
    };
    let expires = u64::from_be_bytes(*head);
    Ok((expires == 0 || expires > now_ms).then_some(value))
}

/// Whether the documents of a kind lapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// Kept until deleted.
    Never,
    /// Written with a TTL (chosen by each write); once it passes the document reads as absent,
    /// and the sweeper removes it, since neither backend does by itself.
    AfterTtl,
}

/// How the values of a kind are stored as bytes. The bytes are the stored data's: changing a
/// kind's codec makes what was written under it unreadable.
pub trait Codec<T> {
    fn encode(value: &T) -> Vec<u8>;
    /// The value of `bytes`, or why they are not one.
    fn decode(bytes: &[u8]) -> Result<T, String>;
}

/// JSON: how a kind is stored unless it declares another codec.
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("a document serializes")
    }

    fn decode(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A string as its UTF-8 bytes, with no quoting: for a kind that has always been stored so.
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
}

/// Bytes as they are: a file kept for a later upload.
pub struct Raw;

impl Codec<Vec<u8>> for Raw {
    fn encode(value: &Vec<u8>) -> Vec<u8> {
        value.clone()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

/// A document whose presence is all it says: written as the byte `1`, and read as present
/// whatever its bytes (nothing has ever read them).
pub struct Marker;

impl Codec<()> for Marker {
    fn encode(_: &()) -> Vec<u8> {
        b"1".to_vec()
    }

    fn decode(_: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// One kind of document with its value type `T`, stored as `C` encodes it (JSON by default).
/// Declared once, next to `T`, from its [`Kind`] in the registry.
pub struct DocKind<T, C = Json> {
    kind: Kind,
    value: PhantomData<fn() -> (T, C)>,
}

/// A document as read: its value, and its bytes as stored, which a compare-and-swap
/// ([`DocWrite::IfEquals`]) compares.
#[derive(Debug)]
pub struct Stored<T> {
    pub id: String,
    pub bytes: Vec<u8>,
    /// `Err` when the bytes do not decode as `T` (the caller decides whether that is fatal).
    pub value: Result<T, StoreError>,
}

impl<T, C> DocKind<T, C> {
    pub const fn new(kind: Kind) -> Self {
        Self {
            kind,
            value: PhantomData,
        }
    }

    /// The kind's name in the store.
    pub const fn name(&self) -> &'static str {
        self.kind.name()
    }
}

impl<T, C: Codec<T>> DocKind<T, C> {
    pub fn encode(&self, value: &T) -> Vec<u8> {
        C::encode(value)
    }

    pub fn decode(&self, id: &str, bytes: &[u8]) -> Result<T, StoreError> {
        C::decode(bytes)
            .map_err(|e| StoreError::Corrupt(format!("{} document {id:?}: {e}", self.name())))
    }

    /// The document decoded; a document that does not decode is [`StoreError::Corrupt`].
    pub async fn get(
        &self,
        store: &dyn Documents,
        account: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        match store.doc(account, self.name(), id).await? {
            Some(bytes) => self.decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The document with its stored bytes, for a compare-and-swap.
    pub async fn read(
        &self,
        store: &dyn Documents,
        account: &str,
        id: &str,
    ) -> Result<Option<Stored<T>>, StoreError> {
        let found = store.doc(account, self.name(), id).await?;
        Ok(found.map(|bytes| self.stored(id.to_owned(), bytes)))
    }

    /// Every live document of the kind of an account, by id ([`Documents::docs`]).
    pub async fn list(
        &self,
        store: &dyn Documents,
        account: &str,
    ) -> Result<Vec<Stored<T>>, StoreError> {
        let all = store.docs(account, self.name()).await?;
        Ok(all
            .into_iter()
            .map(|(id, bytes)| self.stored(id, bytes))
            .collect())
    }

    /// Writes a document that does not lapse, as `write` allows; `true` when written.
    pub async fn put(
        &self,
        store: &dyn Documents,
        account: &str,
        id: &str,
        value: &T,
        write: DocWrite,
    ) -> Result<bool, StoreError> {
        let bytes = self.encode(value);
        store
            .put_doc(account, self.name(), id, &bytes, write, None)
            .await
    }

    /// Writes a document that lapses after `ttl`, as `write` allows; `true` when written. Only
    /// for a kind declared [`Lapse::AfterTtl`] (so that the sweeper goes through it).
    pub async fn put_lapsing(
        &self,
        store: &dyn Documents,
        account: &str,
        id: &str,
        value: &T,
        write: DocWrite,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        debug_assert_eq!(
            self.kind.lapse(),
            Lapse::AfterTtl,
            "{} is not declared lapsing: nothing would sweep it",
            self.name()
        );
        let bytes = self.encode(value);
        store
            .put_doc(account, self.name(), id, &bytes, write, Some(ttl))
            .await
    }

    /// Deletes the document; `true` when there was one.
    pub async fn delete(
        &self,
        store: &dyn Documents,
        account: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        store.delete_doc(account, self.name(), id).await
    }

    fn stored(&self, id: String, bytes: Vec<u8>) -> Stored<T> {
        let value = self.decode(&id, &bytes);
        Stored { id, bytes, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stores_the_string_as_it_is() {
        assert_eq!(Utf8::encode(&"0a1b-x".to_owned()), b"0a1b-x");
        assert_eq!(Utf8::decode(b"0a1b-x"), Ok("0a1b-x".to_owned()));
        assert!(Utf8::decode(&[0xff]).is_err());
    }

    #[test]
    fn a_marker_is_the_byte_one_and_reads_present_whatever_its_bytes() {
        assert_eq!(Marker::encode(&()), b"1");
        assert_eq!(Marker::decode(b"1"), Ok(()));
        assert_eq!(Marker::decode(b""), Ok(()));
    }

    #[test]
    fn json_is_serde_jsons_encoding() {
        let value = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(Json::encode(&value), br#"["a","b"]"#);
        assert_eq!(
            <Json as Codec<Vec<String>>>::decode(br#"["a","b"]"#),
            Ok(value)
        );
    }
}
