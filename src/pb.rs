//! Generated protobuf types of `proto/wechat_gateway/v1/` (package `wechat_gateway.v1`).
//!
//! `Event` is both the wire type to the CRM and the type the gateway stores: one definition,
//! encoded once with prost on the callback path.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("wechat_gateway.v1");

/// The encoded descriptors of every proto above (and the well-known types they import), for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wechat_gateway_descriptor.bin"));

/// Serializes a protobuf timestamp as RFC 3339-like seconds for JSON-lines output.
pub fn serialize_timestamp<S: serde::Serializer>(
    ts: &Option<prost_types::Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.serialize_str(&ts.to_string()),
        None => s.serialize_none(),
    }
}
