//! Compiles `proto/` with protox (pure Rust: no system protoc needed) and tonic-prost-build, and
//! generates the proto3 JSON mapping of every message with pbjson-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/wechat_gateway/v1/events.proto",
        "proto/wechat_gateway/v1/gateway.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // The descriptor set also feeds gRPC server reflection (grpcurl, Postman, evans) and
    // pbjson-build.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("wechat_gateway_descriptor.bin"), &descriptors)?;
    // `google.protobuf.Timestamp` is `crate::pb::Timestamp`: prost-types' message, with the
    // proto3 JSON mapping (an RFC 3339 string) that an `Event` leaving as JSON needs (issue 13).
    tonic_prost_build::configure()
        .extern_path(".google.protobuf.Timestamp", "crate::pb::Timestamp")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out)
        .build(&[".wechat_gateway.v1"])?;
    Ok(())
}
