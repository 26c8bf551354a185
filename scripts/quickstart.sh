#!/usr/bin/env bash
# The quickstart: a private PostgreSQL, an Apache Kafka broker (KRaft), the embedded
# schema registry, a workload, and tidemark's source and sink applying every change to
# warehouse/quickstart.duckdb; ends by comparing the warehouse with the source row by row.
# Installs what is missing first (PostgreSQL 15, build tools, Apache Kafka's jars from Maven Central).
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_BROKER=1 source scripts/ensure-deps.sh
exec cargo run --quiet --example quickstart
