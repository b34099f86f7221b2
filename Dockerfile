# syntax=docker/dockerfile:1.7
# One image with every easel binary; each Deployment picks its binary with `command`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (every member must be present for cargo to load it); the registry and
# target caches keep rebuilds incremental.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates crates
COPY services services
COPY tools tools
COPY bench bench
COPY cli cli
COPY tests tests
COPY proto proto
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p easel-gateway -p easel-auth -p easel-jobs -p easel-storage -p easel-comfy-bridge \
      -p easel-comfy-sim -p easel \
 && mkdir -p /out \
 && cp target/release/easel-gateway target/release/easel-auth target/release/easel-jobs \
       target/release/easel-storage target/release/easel-comfy-bridge \
       target/release/easel-comfy-sim target/release/easel /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 easel \
 && useradd --system --uid 10001 --gid easel --home-dir /var/lib/easel --create-home easel
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/easel
ENV EASEL_LOG_FORMAT=json
# tini forwards SIGTERM so the services drain within their grace period.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/easel", "up", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/easel"]
