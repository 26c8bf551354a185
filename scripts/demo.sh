#!/usr/bin/env bash
# The quickstart: a private PostgreSQL, a workload, and every change streamed to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
exec cargo run --release --quiet --example demo
