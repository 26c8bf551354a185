#!/usr/bin/env bash
# The long versions of the drills in tests/ (the test suite runs short ones):
# - the crash loops (tests/crash_loop.rs) with 50 SIGKILLs each under a pgbench load, of
#   the source and the sink, at least once and exactly once, on Apache Kafka;
#   TIDEMARK_CRASH_KILLS changes the count, TIDEMARK_CRASH_SEED replays a run's kill
#   schedule (each run prints its seed);
# - the fault drills (tests/fault_drills.rs) with outages of 60 s
#   (TIDEMARK_FAULT_OUTAGE_SECS changes it);
# - the broker failover drills on a three-node cluster (tests/broker_failover.rs), as in
#   the suite;
# - the PostgreSQL failover drill (tests/failover.rs) on PostgreSQL 17: a promoted standby
#   with a synchronized slot, the load on for 120 s before the kill and after the promotion
#   (TIDEMARK_FAILOVER_LOAD_SECS changes it).
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_BROKER=1 source scripts/ensure-deps.sh
TIDEMARK_CRASH_KILLS="${TIDEMARK_CRASH_KILLS:-50}" \
  cargo nextest run --retries 0 --no-capture -E 'test(/^crash_loop::/)' "$@"
TIDEMARK_FAULT_OUTAGE_SECS="${TIDEMARK_FAULT_OUTAGE_SECS:-60}" \
  cargo nextest run --retries 0 --no-capture -E 'test(/^fault_drills::/)' "$@"
cargo nextest run --retries 0 --no-capture -E 'test(/^broker_failover::/)' "$@"
NEED_PG_MAJORS=17 source scripts/ensure-deps.sh
TIDEMARK_TEST_PG_MAJOR=17 TIDEMARK_FAILOVER_LOAD_SECS="${TIDEMARK_FAILOVER_LOAD_SECS:-120}" \
  cargo nextest run --retries 0 --no-capture -E 'test(/^failover::/)' "$@"
