#!/usr/bin/env bash
# The benchmark report in one command: builds the benches in release mode, runs each of
# them (every figure is measured side by side with its baseline, in the same run, on this
# machine) and writes benches/REPORT.md with the machine, the versions and the exact
# commands, so anyone can run it again and compare.
#
#   benches/run.sh                 # everything, default sizes (about 30 minutes here)
#   BENCHES="drain sink_merge" benches/run.sh   # a subset
#
# The benches' own size variables (DRAIN_ROWS, SNAPSHOT_ROWS, SINK_SIZES, ...) pass
# through and are written into the report. The release build has a target directory of
# its own (BENCH_TARGET_DIR, default ~/.cache/tidemark/bench-target): DuckDB's optimised
# build takes a long time once (about an hour from a cold cache on 2 cores), and the test
# builds must not evict it. BENCH_CARGO_FLAGS passes flags to every `cargo bench`:
# `--no-default-features` leaves DuckDB out (sink_merge then measures PostgreSQL only).
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_BROKER=1 NEED_DEBEZIUM=1 source scripts/ensure-deps.sh
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$HOME/.cache/tidemark/bench-target}"
BENCHES="${BENCHES:-drain latency big_transaction snapshot sink_merge decoder avro_encode}"
report=benches/REPORT.md
logs="$(mktemp -d)"
draft="$logs/REPORT.md"

echo "== building the benches (release)" >&2
cargo bench ${BENCH_CARGO_FLAGS:-} --no-run --quiet

title() {
  case "$1" in
    drain) echo "Streaming: tidemark draining a slot against pg_recvlogical and Debezium on identical slots, narrow and wide rows, with CPU per event" ;;
    latency) echo "Latency: commit to Kafka and to the warehouse at a fixed pgbench rate" ;;
    big_transaction) echo "Memory: peak RSS while one transaction of millions of rows streams through" ;;
    snapshot) echo "Snapshot: tidemark against PostgreSQL's own COPY and Debezium, and into Kafka against a bare producer" ;;
    sink_merge) echo "Sink: MERGE batches against a bare bulk load, DuckDB and PostgreSQL" ;;
    decoder) echo "Decoder: pgoutput messages and events per second (criterion)" ;;
    avro_encode) echo "Encoding: records per second, Avro and JSON (criterion)" ;;
    *) echo "$1" ;;
  esac
}

pg_bin="${TIDEMARK_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
sizes="$(env | grep -E '^(DRAIN|SNAPSHOT|SINK|LATENCY|BIG)_' | sort | tr '\n' ' ' || true)"
{
  echo "# tidemark benchmark report"
  echo
  echo "Written by \`benches/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Every ratio compares"
  echo "two figures measured in the same run on the same machine; absolute rates depend on"
  echo "the machine."
  echo
  echo "## Machine and versions"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- kernel: $(uname -sr)"
  echo "- tidemark: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "- $(rustc --version)"
  echo "- PostgreSQL: $("$pg_bin/postgres" --version)"
  echo "- broker: Apache Kafka $(ls "$TIDEMARK_TEST_KAFKA_LIBS" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p') (KRaft, one node), $(java -version 2>&1 | head -1)"
  echo "- librdkafka (rdkafka-sys): $(grep -A1 'name = "rdkafka-sys"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')"
  echo "- DuckDB (duckdb crate): $(grep -A1 '^name = "duckdb"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')"
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "BENCHES=\"$BENCHES\" ${BENCH_CARGO_FLAGS:+BENCH_CARGO_FLAGS=\"$BENCH_CARGO_FLAGS\" }${sizes}benches/run.sh"
  for bench in $BENCHES; do
    echo "cargo bench ${BENCH_CARGO_FLAGS:+$BENCH_CARGO_FLAGS }--bench $bench"
  done
  echo '```'
} > "$draft"

for bench in $BENCHES; do
  echo "== cargo bench --bench $bench" >&2
  started=$(date +%s)
  cargo bench ${BENCH_CARGO_FLAGS:-} --quiet --bench "$bench" > "$logs/$bench.out" 2> "$logs/$bench.err" || {
    echo "cargo bench --bench $bench failed; its output:" >&2
    tail -50 "$logs/$bench.err" >&2
    exit 1
  }
  {
    echo
    echo "## $(title "$bench")"
    echo
    echo "\`cargo bench --bench $bench\`, $(( $(date +%s) - started )) s."
    echo
    if grep -q '^|' "$logs/$bench.out"; then
      cat "$logs/$bench.out"
    else
      echo '```'
      grep -v '^\s*$' "$logs/$bench.out" | grep -vi 'warming up\|analyzing\|collecting' || true
      echo '```'
    fi
    echo
    echo "<details><summary>progress lines (stderr)</summary>"
    echo
    echo '```'
    grep -v '^\s*$' "$logs/$bench.err" | tail -40 || true
    echo '```'
    echo
    echo "</details>"
  } >> "$draft"
done

mv "$draft" "$report"
echo "wrote $report" >&2
