# A small tidemark image: built in the Rust image, run on Debian slim as a non-root user.
#   docker build -t tidemark .
#   docker run --rm -v $PWD/connectors:/etc/tidemark tidemark run --config /etc/tidemark/docker-compose.toml
# The build compiles librdkafka and DuckDB from source (about 20 minutes on 2 cores).

FROM rust:1.85-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY examples examples
COPY schemas schemas
COPY sql sql
RUN cargo build --release --locked --bin tidemark \
 && strip target/release/tidemark

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tidemark --create-home tidemark
COPY --from=build /src/target/release/tidemark /usr/local/bin/tidemark
USER tidemark
WORKDIR /var/lib/tidemark
# [metrics] listen: /metrics, /healthz, /readyz
EXPOSE 9187
ENTRYPOINT ["tidemark"]
CMD ["--help"]
