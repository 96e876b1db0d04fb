# syntax=docker/dockerfile:1
# patchpull container image: a release build on Debian bookworm, run as a non-root user.
#   docker build -t patchpull .
#   docker run -p 5000:5000 -v patchpull-data:/var/lib/patchpull patchpull
# Configuration: /etc/patchpull/patchpull.toml (mount your own over it), or PATCHPULL_*
# environment variables, which win over the file (see docs/configuration.md).

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what `cargo build` reads. Cargo.toml names the benches, and cargo refuses a manifest
# whose targets are missing, so they come along (they are not built).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin patchpull \
 && install -m 0755 target/release/patchpull /patchpull

FROM debian:bookworm-slim
# ca-certificates: the trust roots for https upstreams (Docker Hub, GHCR, Quay, ...).
# util-linux (unshare, setpriv, pivot_root) and mount: the sandbox that runs maintainer
# scripts (slim already has them; named so that they stay). Nothing else: the image is
# bookworm-slim plus the one binary and its default configuration.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates util-linux mount \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 patchpull \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/patchpull \
      --shell /usr/sbin/nologin patchpull \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/patchpull

COPY --from=build /patchpull /usr/local/bin/patchpull
COPY config/patchpull.toml /etc/patchpull/patchpull.toml

# The file's listen address and store path are for running from a checkout; in a container
# the proxy listens on all interfaces and keeps its store on the volume.
ENV PATCHPULL_SERVER__LISTEN=0.0.0.0:5000 \
    PATCHPULL_STORAGE__PATH=/var/lib/patchpull

USER 65532:65532
WORKDIR /var/lib/patchpull
VOLUME ["/var/lib/patchpull"]
EXPOSE 5000

# The slim image has no curl: a plain HTTP/1.0 request through bash's /dev/tcp. It follows
# the port of PATCHPULL_SERVER__LISTEN; with TLS switched on, replace it with a probe that
# speaks TLS (or drop it and use your orchestrator's HTTPS check of /healthz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "port=${PATCHPULL_SERVER__LISTEN##*:}; exec 3<>/dev/tcp/127.0.0.1/${port:-5000} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["patchpull"]
CMD ["serve", "--config", "/etc/patchpull/patchpull.toml"]
