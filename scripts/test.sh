#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests on a private PostgreSQL and Apache
# Kafka (a JVM broker per test process; a three-node cluster for the failover drills), doc
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# TIDEMARK_TEST_PG_MAJOR=18 runs it on another PostgreSQL major (installed when missing).
NEED_BROKER=1 NEED_PYTHON=1 NEED_DEBEZIUM=1 NEED_PG_MAJORS="${TIDEMARK_TEST_PG_MAJOR:-}" \
  source scripts/ensure-deps.sh
cargo nextest run --no-fail-fast "$@"
cargo test --doc --quiet
