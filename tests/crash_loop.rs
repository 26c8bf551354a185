//! The crash loop: a pgbench workload (its TPC-B-like tables) on the source while the
//! `tidemark run` source process and the `tidemark sink` process are killed with SIGKILL
//! at random moments and started again at once (or after a pause under a second), on
//! Apache Kafka. A killed sink's group member stays until its session times out; the
//! broker then evicts it and hands its partitions to the restarted one. The producer
//! batches as in production. After the load stops and tidemark catches up:
//! - every warehouse table equals its source table (row count and md5 of every row);
//! - Kafka holds every change (at-least-once: no gap): every row pgbench inserted into
//!   `pgbench_history` (one per committed pgbench transaction) is on its topic as an
//!   insert, and each of the three updated tables has at least that many update events;
//! - the slot's retained WAL is back to near zero.
//!
//! The exactly-once version runs the same loop with `delivery = "exactly_once"`, the
//! source and the sink both killed. Afterwards the warehouse equals the source, including
//! `history_copy`, a keyless copy of `pgbench_history` kept by a trigger, whose rows the
//! sink appends, so a change applied twice would show as an extra row; and a
//! `read_committed` consumer finds every source change exactly once (by its position
//! headers): each snapshot row, each history row, one update per pgbench transaction in
//! each updated table, each `history_copy` row, and no other record. What a
//! killed producer left in an open transaction is aborted by the broker when the restarted
//! producer registers the same transactional id, and `read_committed` skips it.
//!
//! `TIDEMARK_CRASH_KILLS` sets the number of kills (default 8; `scripts/drills.sh` runs
//! the long version with 50) and `TIDEMARK_CRASH_SEED` replays a run's kill schedule (the
//! test prints its seed).

use crate::common;

use std::time::{Duration, Instant};

use common::drill::*;
use common::kafka::drain;
use common::*;
use tidemark::testing::{KafkaBroker, PgCluster};

/// A small deterministic generator for the kill schedule (xorshift64*).
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The number of kills and the kill schedule, from the environment (see the module docs).
fn kills_and_schedule(label: &str) -> (u32, Schedule) {
    let kills: u32 = std::env::var("TIDEMARK_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("TIDEMARK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{label}: {kills} kills, TIDEMARK_CRASH_SEED={seed}");
    (kills, Schedule(seed))
}

/// Waits until `slot` exists (the source created it), so every load transaction after is
/// streamed.
async fn wait_for_slot(client: &tokio_postgres::Client, slot: &str) {
    wait_until(
        "the source created its slot",
        Duration::from_secs(60),
        || async {
            text_rows(
                client,
                &format!(
                    "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            )
            .await
            .is_ok_and(|rows| !rows.is_empty())
        },
    )
    .await;
}

/// `kills` times: the pipeline runs between 0.3 s and 4 s, then the source, the sink or
/// both are SIGKILLed, and restarted at once or after a pause under a second, as a
/// supervisor would (Apache Kafka evicts a killed sink's member when its session times out
/// and rebalances).
async fn kill_loop(kills: u32, schedule: &mut Schedule, source: &mut Process, sink: &mut Process) {
    for kill in 1..=kills {
        let run_for = Duration::from_millis(300 + schedule.next() % 3_700);
        tokio::time::sleep(run_for).await;
        source.assert_running();
        sink.assert_running();
        let victims = match schedule.next() % 3 {
            0 => "source",
            1 => "sink",
            _ => "both",
        };
        eprintln!("kill {kill}/{kills}: {victims} after {run_for:?}");
        if victims != "sink" {
            source.kill();
        }
        if victims != "source" {
            sink.kill();
        }
        tokio::time::sleep(Duration::from_millis(schedule.next() % 1_000)).await;
        if source.child.is_none() {
            source.start();
        }
        if sink.child.is_none() {
            sink.start();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_under_pgbench_ends_equal_with_no_gap_in_kafka() {
    let (kills, mut schedule) = kills_and_schedule("crash loop");

    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = broker.bootstrap.clone();
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("crash").await;
    let (warehouse, warehouse_client) = database("crash_wh").await;
    pgbench_tables(cluster, &db, &client, ACCOUNTS).await;

    let dir = LogDir::new("crash");
    let common_part = format!(
        "name = \"crash\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\"]\n\
         status_interval_ms = 500\nheartbeat_interval_ms = 1000\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"json\"\njson_schemas = true\npartitions = 3\n\
         ",
        db.url(),
        bootstrap
    );
    let (source_path, sink_path) =
        write_source_and_sink_configs(dir.path(), &common_part, &warehouse.url());
    let mut source = Process::new("source", &["run", "--config", &source_path], dir.path());
    let mut sink = Process::new("sink", &["sink", "--config", &sink_path], dir.path());

    source.start();
    sink.start();
    // The load starts once the slot exists, so every pgbench transaction is streamed (and
    // none is only in the snapshot).
    wait_for_slot(&client, "tidemark_crash").await;
    let mut load = start_load(cluster, &db.url(), dir.path(), 150, ACCOUNTS);

    kill_loop(kills, &mut schedule, &mut source, &mut sink).await;
    let _ = load.kill();
    let _ = load.wait();
    let stopped_at = Instant::now();

    // Caught up: every table equal, row for row.
    wait_tables_equal(
        &client,
        &warehouse_client,
        stopped_at,
        Duration::from_secs(240),
        &mut [&mut source, &mut sink],
    )
    .await;

    // Kafka holds every change: every committed pgbench transaction inserted one history
    // row, and updated one account, one teller and one branch.
    let (transactions, history_records) =
        assert_history_in_kafka(&client, &bootstrap, "crash.public.pgbench_history").await;
    for table in ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"] {
        let records = drain(
            &bootstrap,
            &format!("crash.public.{table}"),
            false,
            Duration::from_secs(3),
        )
        .await;
        let updates = records
            .iter()
            .filter(|r| r.value.as_ref().is_some_and(|v| v["payload"]["op"] == "u"))
            .count();
        assert!(
            updates >= transactions,
            "{table}: {updates} update events in Kafka for {transactions} transactions"
        );
    }

    // The slot's retained WAL is back to near zero.
    let retained = || retained_wal(&client, "tidemark_crash");
    wait_until(
        "the slot's retained WAL is near zero",
        Duration::from_secs(30),
        || async { retained().await < NEAR_ZERO_WAL },
    )
    .await;
    eprintln!(
        "{transactions} transactions, {} history records in Kafka, retained WAL {} bytes, {} source and {} sink starts",
        history_records,
        retained().await,
        source.starts,
        sink.starts
    );
    eprintln!(
        "{}",
        describe_delays(sink_restart_delays(dir.path(), "sink", sink.starts))
    );
    source.terminate();
    sink.terminate();
    dir.passed();
}

/// Partitions of the exactly-once loop's change topics.
const EOS_PARTITIONS: i32 = 4;

/// The exactly-once loop's pgbench rate (transactions/s).
const EOS_RATE: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_exactly_once_leaves_every_change_in_kafka_once() {
    let (kills, mut schedule) = kills_and_schedule("exactly-once crash loop");
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = broker.bootstrap.clone();
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("crash_eos").await;
    let (warehouse, warehouse_client) = database("crash_eos_wh").await;
    pgbench_tables(cluster, &db, &client, ACCOUNTS).await;
    keyless_history_copy(&client).await;
    // Rows each table holds before tidemark starts: its snapshot.
    let snapshot_rows = snapshot_counts(&client).await;

    let dir = LogDir::new("crash-eos");
    let common_part = format!(
        "name = \"crasheos\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\", \"public.history_copy\"]\n\
         status_interval_ms = 500\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\njson_schemas = true\ndelivery = \"exactly_once\"\npartitions = {EOS_PARTITIONS}\n\
         [kafka.properties]\n\"transaction.timeout.ms\" = \"10000\"\n",
        db.url()
    );
    let (source_path, sink_path) =
        write_source_and_sink_configs(dir.path(), &common_part, &warehouse.url());
    let mut source = Process::new("source", &["run", "--config", &source_path], dir.path());
    let mut sink = Process::new("sink", &["sink", "--config", &sink_path], dir.path());
    source.start();
    sink.start();
    wait_for_slot(&client, "tidemark_crasheos").await;
    // The load starts after the snapshot, so no row is both read by it and streamed.
    wait_for_snapshot(&mut source).await;
    let mut load = start_load(cluster, &db.url(), dir.path(), EOS_RATE, ACCOUNTS);
    kill_loop(kills, &mut schedule, &mut source, &mut sink).await;
    let _ = load.kill();
    let _ = load.wait();
    let stopped_at = Instant::now();

    // The warehouse equals the source, row for row.
    wait_tables_equal(
        &client,
        &warehouse_client,
        stopped_at,
        Duration::from_secs(240),
        &mut [&mut source, &mut sink],
    )
    .await;

    // Caught up: the slot's retained WAL is back to near zero.
    let retained = || retained_wal(&client, "tidemark_crasheos");
    wait_until(
        "the slot's retained WAL is near zero",
        Duration::from_secs(60),
        || async { retained().await < NEAR_ZERO_WAL },
    )
    .await;

    // Every change in Kafka exactly once.
    let transactions =
        assert_each_change_once(&client, &bootstrap, "crasheos", &snapshot_rows).await;
    assert_keyless_copy_in_kafka_once(&client, &bootstrap, "crasheos").await;
    assert_keyless_copy_equal(&client, &warehouse_client).await;
    eprintln!(
        "{transactions} transactions, every change in Kafka exactly once, warehouse equal, retained WAL {} bytes, {} source and {} sink starts",
        retained().await,
        source.starts,
        sink.starts
    );
    eprintln!(
        "{}",
        describe_delays(sink_restart_delays(dir.path(), "sink", sink.starts))
    );
    source.terminate();
    sink.terminate();
    dir.passed();
}
