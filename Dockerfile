# Multi-stage build: compile in the Rust image, run in a slim Debian with CA certificates.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin wechat-gateway || true
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin wechat-gateway

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/wechat-gateway gateway \
    && mkdir -p /var/lib/wechat-gateway && chown gateway /var/lib/wechat-gateway
COPY --from=build /src/target/release/wechat-gateway /usr/local/bin/wechat-gateway
COPY config/example.toml /etc/wechat-gateway/config.toml
USER gateway
WORKDIR /var/lib/wechat-gateway
ENV WECHAT_GATEWAY_CONFIG=/etc/wechat-gateway/config.toml \
    WGW_HTTP__LISTEN=0.0.0.0:8080 \
    WGW_GRPC__LISTEN=0.0.0.0:50051 \
    WGW_STORE__PATH=/var/lib/wechat-gateway/data \
    WGW_LOG__FORMAT=json
EXPOSE 8080 50051
ENTRYPOINT ["wechat-gateway"]
CMD ["serve"]
