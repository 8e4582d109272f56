//! Generated protobuf types of `proto/wechat_gateway/v1/` (package `wechat_gateway.v1`).
//!
//! `Event` is both the wire type to the CRM and the type the gateway stores: one definition,
//! encoded once with prost on the callback path. Where an `Event` leaves as JSON (the stdout
//! sink, the dead-letter listing) it uses the canonical proto3 JSON mapping that pbjson-build
//! generates from the same proto (enum names, 64-bit integers as strings, lowerCamelCase field
//! names, RFC 3339 timestamps), so any protobuf JSON parser reads it back.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("wechat_gateway.v1");
include!(concat!(env!("OUT_DIR"), "/wechat_gateway.v1.serde.rs"));

/// The encoded descriptors of every proto above (and the well-known types they import), for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wechat_gateway_descriptor.bin"));

/// `google.protobuf.Timestamp`, prost-types' message under a local name so that it can carry
/// the proto3 JSON mapping: RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fractional digits, as the
/// specification says generated output is (prost-types' `Display`); pbjson-types writes
/// `+00:00` instead. Every `Timestamp` field of the generated code is this type (build.rs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<Timestamp> for prost_types::Timestamp {
    fn from(Timestamp { seconds, nanos }: Timestamp) -> Self {
        Self { seconds, nanos }
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// prost-types' conversion, which normalizes times before the epoch.
    fn from(t: std::time::SystemTime) -> Self {
        let prost_types::Timestamp { seconds, nanos } = t.into();
        Self { seconds, nanos }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&prost_types::Timestamp::from(*self))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let prost_types::Timestamp { seconds, nanos } =
            text.parse().map_err(serde::de::Error::custom)?;
        Ok(Self { seconds, nanos })
    }
}
