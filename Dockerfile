# Multi-stage build: compile in the Rust image, run in a slim Debian with CA certificates, as a
# non-root user. The context is filtered by .dockerignore (no target/).
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
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home /var/lib/wechat-gateway gateway \
    && mkdir -p /var/lib/wechat-gateway && chown gateway:gateway /var/lib/wechat-gateway
COPY --from=build /src/target/release/wechat-gateway /usr/local/bin/wechat-gateway
# The baked configuration takes every secret from the environment (${NAME}): the image holds no
# credential, and starting it without them fails at once, naming the missing variables. Mount
# your own file over it, or set WECHAT_GATEWAY_CONFIG. The gateway refuses to start when an
# admin token is the published example one and the admin API listens beyond loopback.
COPY deploy/gateway.toml /etc/wechat-gateway/gateway.toml
USER 10001:10001
WORKDIR /var/lib/wechat-gateway
ENV WECHAT_GATEWAY_CONFIG=/etc/wechat-gateway/gateway.toml \
    WGW_STORE__PATH=/var/lib/wechat-gateway/data
EXPOSE 8080 9090 50051
ENTRYPOINT ["wechat-gateway"]
CMD ["serve"]
