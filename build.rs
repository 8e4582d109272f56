//! Compiles `proto/` with protox (pure Rust: no system protoc needed) and tonic-prost-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/wechat_gateway/v1/events.proto",
        "proto/wechat_gateway/v1/gateway.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // The descriptor set also feeds gRPC server reflection (grpcurl, Postman, evans).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("wechat_gateway_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .type_attribute(".wechat_gateway.v1", "#[derive(serde::Serialize)]")
        .field_attribute(
            ".wechat_gateway.v1.Event.occurred_at",
            "#[serde(serialize_with = \"crate::pb::serialize_timestamp\")]",
        )
        .field_attribute(
            ".wechat_gateway.v1.Event.received_at",
            "#[serde(serialize_with = \"crate::pb::serialize_timestamp\")]",
        )
        .field_attribute(
            ".wechat_gateway.v1.UserProfile.subscribed_at",
            "#[serde(serialize_with = \"crate::pb::serialize_timestamp\")]",
        )
        .field_attribute(
            ".wechat_gateway.v1.UserProfile.fetched_at",
            "#[serde(serialize_with = \"crate::pb::serialize_timestamp\")]",
        )
        .field_attribute(
            ".wechat_gateway.v1.CreateQrCodeResponse.expire_at",
            "#[serde(serialize_with = \"crate::pb::serialize_timestamp\")]",
        )
        .compile_fds(fds)?;
    Ok(())
}
