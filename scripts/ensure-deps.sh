#!/usr/bin/env bash
# Installs what tidemark's demo and tests need, when it is missing. Sourced by the other scripts.
# With NEED_BROKER=1 (the tests, the quickstart) it also installs tansu, a Kafka-compatible
# broker; with NEED_PYTHON=1 (the tests) Confluent's Python client, which a test uses to
# decode tidemark's Avro records.
set -euo pipefail

need_apt=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -z "${TIDEMARK_PG_BIN:-}" ]; then
  need_apt+=(postgresql-15)
fi
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# librdkafka is built from source by the rdkafka crate: it needs make, pkg-config and OpenSSL.
for pkg in make pkg-config libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi
if [ "${NEED_BROKER:-0}" = 1 ] && [ -z "${TIDEMARK_TEST_KAFKA_BROKERS:-}" ] \
  && ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "installing tansu, a Kafka-compatible broker for the tests (about 9 minutes, once)" >&2
  cargo install tansu --locked --features dynostore,libsql
fi
if [ "${NEED_PYTHON:-0}" = 1 ] \
  && ! python3 -c 'import confluent_kafka.schema_registry.avro, fastavro' >/dev/null 2>&1; then
  echo "installing confluent-kafka and fastavro (Python) for the Avro interoperability test" >&2
  python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka[avro,schemaregistry]" fastavro
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}"
