#!/usr/bin/env bash
# Installs what tidemark's demo and tests need, when it is missing. Sourced by the other scripts.
# With NEED_BROKER=1 (the tests, the benches, the quickstart) it also resolves Apache Kafka's
# broker from Maven Central (and Java and Maven where they are missing); with NEED_PYTHON=1
# (the tests) Confluent's Python client, which a test uses to
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
# Apache Kafka's broker: its jars from Maven Central (tests/jvm/kafka/pom.xml), resolved once
# into a cache outside the clone; tidemark::testing::broker runs them with `java`.
KAFKA_VERSION=4.4.0
export TIDEMARK_TEST_KAFKA_LIBS="${TIDEMARK_TEST_KAFKA_LIBS:-$HOME/.cache/tidemark/kafka-$KAFKA_VERSION/libs}"
if [ "${NEED_BROKER:-0}" = 1 ] && [ -z "${TIDEMARK_TEST_KAFKA_BROKERS:-}" ] \
  && [ ! -f "$TIDEMARK_TEST_KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    echo "installing Java and Maven (Debian's default-jre-headless maven) for Apache Kafka" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      default-jre-headless maven >/dev/null
  fi
  echo "resolving Apache Kafka $KAFKA_VERSION's jars from Maven Central into $TIDEMARK_TEST_KAFKA_LIBS (about 15 s, once)" >&2
  kafka_pom="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/jvm/kafka/pom.xml"
  rm -rf "$TIDEMARK_TEST_KAFKA_LIBS.partial"
  mvn -q -B -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$TIDEMARK_TEST_KAFKA_LIBS.partial" >&2
  rm -rf "$TIDEMARK_TEST_KAFKA_LIBS"
  mv "$TIDEMARK_TEST_KAFKA_LIBS.partial" "$TIDEMARK_TEST_KAFKA_LIBS"
fi
if [ "${NEED_PYTHON:-0}" = 1 ] \
  && ! python3 -c 'import confluent_kafka.schema_registry.avro, fastavro' >/dev/null 2>&1; then
  echo "installing confluent-kafka and fastavro (Python) for the Avro interoperability test" >&2
  python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka[avro,schemaregistry]" fastavro
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}"
