# syntax=docker/dockerfile:1.7
# HeartRule server image.
#
#   docker build -t heartrule:dev .
#   docker run --rm -p 8000:8000 heartrule:dev
#
# Stages: `chef` (toolchain + cargo-chef) → `planner` (dependency recipe from
# the manifests only) → `builder` (dependencies compiled in their own layer,
# reused until Cargo.toml/Cargo.lock change; then the workspace) → `runtime`
# (Debian slim with the shared libraries the binary links and nothing else
# but curl for the health check). Needs BuildKit (Docker 23+ uses it by
# default) for the cache mount.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# reqwest's native-tls links the system OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.76
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only the dependency graph is in this layer's inputs: a source edit does
# not rebuild the ~400 dependency crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --recipe-path recipe.json -p heartrule-server
COPY . .
# No .git in the build context: the commit is passed in so that
# heartrule_build_info carries it (docker build --build-arg HEARTRULE_GIT_SHA=$(git rev-parse --short=12 HEAD)).
ARG HEARTRULE_GIT_SHA=""
ENV HEARTRULE_GIT_SHA=${HEARTRULE_GIT_SHA}
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p heartrule-server --bin heartrule \
 && install -D -m 0755 target/release/heartrule /out/heartrule

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libssl3 for the OpenAI-compatible client, ca-certificates to verify the
# LLM provider's certificate, curl for HEALTHCHECK. glibc and libgcc_s come
# with the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed, high UID/GID (above any host account range) so that Kubernetes'
# runAsUser and file ownership agree with the image.
RUN groupadd --system --gid 10001 heartrule \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin heartrule
WORKDIR /app
# Read-only for the server user: configuration, prompt templates and the
# example scripts (preloaded when scripts.preload_dir points at them; the
# migrations are compiled into the binary).
COPY --chown=root:root --chmod=0755 --from=builder /out/heartrule /usr/local/bin/heartrule
COPY --chown=root:root config/ /app/config/
COPY --chown=root:root examples/scripts/ /app/examples/scripts/
# The config folder by absolute path, so that the working directory does
# not matter; listen on every interface, as a container must to be reached.
# The port stays server.port's (8000) unless API_PORT or
# HEARTRULE__SERVER__PORT is given at run time.
ENV HEARTRULE_CONFIG_DIR=/app/config \
    API_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8000
# Liveness only (no dependency checks): /ready is for load balancers.
# Through sh so that a port set at run time is followed; API_PORT wins over
# HEARTRULE__SERVER__PORT, as in the server's configuration.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${API_PORT:-${HEARTRULE__SERVER__PORT:-8000}}/health\" || exit 1"]
ENTRYPOINT ["heartrule"]
CMD ["serve"]
