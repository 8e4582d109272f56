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

/// A `SystemTime` as a protobuf timestamp (prost-types' conversion, which normalizes times
/// before the epoch, into the pbjson-types message the generated code uses).
pub fn timestamp(t: std::time::SystemTime) -> pbjson_types::Timestamp {
    let prost_types::Timestamp { seconds, nanos } = t.into();
    pbjson_types::Timestamp { seconds, nanos }
}
