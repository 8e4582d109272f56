//! Reading Redis stream replies (XRANGE, XREADGROUP) into entries, in RESP2 or RESP3.

use prost::Message;
use redis::Value;

use super::unexpected;
use crate::pb;
use crate::store::StoreError;

/// Sort key of a stream entry id `<ms>-<seq>`: the order in which Redis appended them.
pub(super) fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (
        ms.parse().unwrap_or(u64::MAX),
        seq.parse().unwrap_or(u64::MAX),
    )
}

/// One stream entry as Redis returned it; `fields` is `None` when the entry was deleted while
/// pending (a pending-list read then returns only its id).
#[derive(Debug)]
pub(super) struct StreamEntry {
    pub(super) id: String,
    pub(super) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StreamEntry {
    pub(super) fn exists(&self) -> bool {
        self.fields.is_some()
    }

    pub(super) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    pub(super) fn number(&self, name: &str) -> Option<u64> {
        std::str::from_utf8(self.field(name)?).ok()?.parse().ok()
    }

    pub(super) fn decode_event(&self, what: &str) -> Result<pb::Event, StoreError> {
        let bytes = self
            .field("ev")
            .ok_or_else(|| StoreError::Corrupt(format!("{what} {} has no event", self.id)))?;
        pb::Event::decode(bytes)
            .map_err(|e| StoreError::Corrupt(format!("{what} {}: {e}", self.id)))
    }
}

pub(super) fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unexpected("stream read")),
    }
}

pub(super) fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        _ => Err(unexpected("stream read")),
    }
}

/// `[[id, [field, value, ...] | nil], ...]` (XRANGE, and each stream of XREADGROUP).
pub(super) fn entries(v: Value) -> Result<Vec<StreamEntry>, StoreError> {
    array(v)?
        .into_iter()
        .map(|entry| {
            let mut parts = array(entry)?.into_iter();
            let id = bytes(parts.next().ok_or_else(|| unexpected("stream read"))?)?;
            let id = String::from_utf8(id).map_err(|_| unexpected("stream read"))?;
            let fields = match parts.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Map(pairs)) => Some(
                    pairs
                        .into_iter()
                        .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
                        .collect::<Result<Vec<_>, StoreError>>()?,
                ),
                Some(flat) => {
                    let mut flat = array(flat)?.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(k)?, bytes(v)?));
                    }
                    Some(pairs)
                }
            };
            Ok(StreamEntry { id, fields })
        })
        .collect()
}

/// The streams of an XREADGROUP reply: `[[key, entries], ...]` in RESP2, a map in RESP3, nil
/// when nothing arrived.
pub(super) fn streams(v: Value) -> Result<Vec<(String, Vec<StreamEntry>)>, StoreError> {
    let pairs = match v {
        Value::Map(pairs) => pairs,
        other => array(other)?
            .into_iter()
            .map(|stream| {
                let mut parts = array(stream)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(key), Some(entries)) => Ok((key, entries)),
                    _ => Err(unexpected("XREADGROUP")),
                }
            })
            .collect::<Result<_, StoreError>>()?,
    };
    pairs
        .into_iter()
        .map(|(key, list)| {
            let key = String::from_utf8(bytes(key)?).map_err(|_| unexpected("XREADGROUP"))?;
            Ok((key, entries(list)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_read_reply_gives_entries_and_marks_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("wgw:{a}:outbox"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("ev"), bulk("x"), bulk("at"), bulk("5")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let read = streams(reply).unwrap();
        assert_eq!(read.len(), 1);
        let (key, entries) = &read[0];
        assert_eq!(key, "wgw:{a}:outbox");
        assert_eq!(entries[0].field("ev"), Some(&b"x"[..]));
        assert_eq!(entries[0].number("at"), Some(5));
        assert!(!entries[1].exists());
        assert!(streams(Value::Nil).unwrap().is_empty(), "nothing arrived");
    }

    #[test]
    fn entry_ids_order_numerically() {
        let mut ids = vec!["10-0", "9-1", "9-0", "100-0"];
        ids.sort_by_key(|id| entry_order(id));
        assert_eq!(ids, ["9-0", "9-1", "10-0", "100-0"]);
    }
}
