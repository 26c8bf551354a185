//! The crash loop: a pgbench workload (its TPC-B-like tables) on the source while the
//! `tidemark run` source process and the `tidemark sink` process are killed with SIGKILL
//! at random moments and started again, on tansu.
//!
//! A killed sink is started again only after its consumer-group session has expired
//! (`SINK_SESSION`): tansu drops an expired member only when another one joins, so a sink
//! restarted at once could be handed no partitions, with nothing to trigger a later
//! rebalance. (Apache Kafka evicts the expired member itself and rebalances; a supervisor's
//! restart back-off of that length is common anyway.) The producer's batches are one
//! record each, as in the other sink tests: tansu answers a fetch from inside a batch
//! with nothing of it. After the load stops and tidemark catches up:
//! - every warehouse table equals its source table (row count and md5 of every row);
//! - Kafka holds every change (at-least-once: no gap): every row pgbench inserted into
//!   `pgbench_history` (one per committed pgbench transaction) is on its topic as an
//!   insert, and each of the three updated tables has at least that many update events;
//! - the slot's retained WAL is back to near zero.
//!
//!
//! The exactly-once version runs the source alone (`delivery = "exactly_once"`) against
//! librdkafka's mock cluster, served by this test process over TCP (tansu has no
//! transactions, and the sink's consumer stalls on the mock cluster, so the warehouse is not
//! part of it), with the same kill loop. After it, a `read_committed` consumer finds every
//! source change (by its position headers) in Kafka: each history row, exactly one update
//! per pgbench transaction in each updated table, each snapshot row. The mock cluster
//! cannot show the absence of duplicates under SIGKILL: it never aborts the transaction a
//! killed producer left open and answers every fetch with no aborted transactions (its
//! Fetch handler writes an empty aborted list), so those records stay visible to
//! `read_committed`, next to their re-sent copies. Apache Kafka aborts that transaction
//! when the restarted producer registers its transactional id and hides it from
//! `read_committed`. The test therefore checks that every extra copy is identical to the
//! change at its position (a re-send, never a different record) and prints how many there
//! were; `tests/kafka_exactly_once.rs` checks that committed transactions are not sent
//! again.
//!
//! `TIDEMARK_CRASH_KILLS` sets the number of kills (default 8; `scripts/drills.sh` runs
//! the long version with 50) and `TIDEMARK_CRASH_SEED` replays a run's kill schedule (the
//! test prints its seed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::drill::*;
use common::kafka::drain;
use common::*;
use rdkafka::mocking::MockCluster;
use tidemark::testing::{KafkaBroker, PgCluster};

/// The sink's consumer-group session timeout (`session.timeout.ms`), plus a margin.
const SINK_SESSION: Duration = Duration::from_millis(11_500);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_under_pgbench_ends_equal_with_no_gap_in_kafka() {
    let (kills, mut schedule) = kills_and_schedule("crash loop");

    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = broker.bootstrap.clone();
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("crash").await;
    let (warehouse, warehouse_client) = database("crash_wh").await;
    pgbench_tables(cluster, &db, &client, ACCOUNTS).await;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source_config = dir.path().join("source.toml");
    let common_part = format!(
        "name = \"crash\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\"]\n\
         status_interval_ms = 500\nheartbeat_interval_ms = 1000\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"json\"\njson_schemas = true\npartitions = 3\n\
         [kafka.properties]\n\"batch.num.messages\" = \"1\"\n",
        db.url(),
        bootstrap
    );
    std::fs::write(&source_config, &common_part).unwrap_or_else(|e| panic!("{e}"));
    let sink_config = dir.path().join("sink.toml");
    std::fs::write(
        &sink_config,
        format!(
            "{common_part}[sink]\nkind = \"postgres\"\nurl = \"{}\"\nbatch_ms = 200\n",
            warehouse.url()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let source_path = source_config.display().to_string();
    let sink_path = sink_config.display().to_string();
    let mut source = Process::new("source", &["run", "--config", &source_path], dir.path());
    let mut sink = Process::new("sink", &["sink", "--config", &sink_path], dir.path());

    source.start();
    sink.start();
    // The load starts once the slot exists, so every pgbench transaction is streamed (and
    // none is only in the snapshot).
    wait_for_slot(&client, "tidemark_crash").await;
    let mut load = start_load(cluster, &db.url(), dir.path(), 150, ACCOUNTS);

    for kill in 1..=kills {
        // Between 0.3 s and 4 s of running, then one or both killed.
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
        // The source restarted at once or after a pause, as a supervisor would; a killed
        // sink once its group session has expired (see the module docs).
        tokio::time::sleep(Duration::from_millis(schedule.next() % 1_000)).await;
        if source.child.is_none() {
            source.start();
        }
        if sink.child.is_none() {
            tokio::time::sleep(SINK_SESSION).await;
            sink.start();
        }
    }
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
    source.terminate();
    sink.terminate();
}

/// Partitions of the exactly-once loop's topics: the mock cluster keeps at most 5 MB per
/// partition and drops the oldest records beyond that (`max_size` in librdkafka's
/// `rdkafka_mock.c`), so the 50-kill run spreads the accounts' records over 8.
const MOCK_PARTITIONS: i32 = 8;

/// The exactly-once loop's pgbench rate (transactions/s). pgbench's one branch takes an
/// update per transaction, all on one partition, so 50 kills at 150/s would pass the mock's
/// 5 MB on that partition.
const MOCK_RATE: u32 = 50;

/// Fails if the mock cluster dropped old records of `topic` (its low watermark moved).
fn assert_mock_kept_everything(bootstrap: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    for partition in 0..MOCK_PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic} [{partition}]: {e}"));
        assert_eq!(
            low, 0,
            "the mock cluster dropped the first {low} of {high} records of {topic} [{partition}] \
             (it keeps 5 MB per partition): raise MOCK_PARTITIONS"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_exactly_once_leaves_every_change_in_kafka_once() {
    let (kills, mut schedule) = kills_and_schedule("exactly-once crash loop");
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("mock cluster: {e}"));
    for table in TABLES {
        mock.create_topic(&format!("crasheos.public.{table}"), MOCK_PARTITIONS, 1)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    mock.create_topic("crasheos.offsets", 1, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = mock.bootstrap_servers();
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("crash_eos").await;
    pgbench_tables(cluster, &db, &client, ACCOUNTS).await;
    // Rows each table holds before tidemark starts: its snapshot. A count that cannot be
    // read fails here, rather than passing the snapshot check below as zero.
    let mut snapshot_rows: Vec<(String, usize)> = Vec::new();
    for table in TABLES {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("counting {table}: {e}"))
            .get(0);
        snapshot_rows.push((table.to_owned(), count as usize));
    }

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("source.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"crasheos\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\"]\n\
             status_interval_ms = 500\n\
             [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = {MOCK_PARTITIONS}\n\
             [kafka.properties]\n\"transaction.timeout.ms\" = \"10000\"\n",
            db.url()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config_path = config.display().to_string();
    let mut source = Process::new("source", &["run", "--config", &config_path], dir.path());
    source.start();
    wait_for_slot(&client, "tidemark_crasheos").await;
    // The load starts after the snapshot, so no row is both read by it and streamed.
    let started = Instant::now();
    while !std::fs::read_to_string(source.log())
        .is_ok_and(|log| log.contains("snapshot done rows="))
    {
        source.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no \"snapshot done\" in 120 s:\n{}",
            source.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut load = start_load(cluster, &db.url(), dir.path(), MOCK_RATE, ACCOUNTS);
    for kill in 1..=kills {
        let run_for = Duration::from_millis(300 + schedule.next() % 3_700);
        tokio::time::sleep(run_for).await;
        source.assert_running();
        eprintln!("kill {kill}/{kills}: source after {run_for:?}");
        source.kill();
        tokio::time::sleep(Duration::from_millis(schedule.next() % 1_000)).await;
        source.start();
    }
    let _ = load.kill();
    let _ = load.wait();

    // Caught up: the slot's retained WAL is back to near zero.
    let retained = || retained_wal(&client, "tidemark_crasheos");
    let stopped_at = Instant::now();
    while retained().await >= NEAR_ZERO_WAL {
        source.assert_running();
        assert!(
            stopped_at.elapsed() < Duration::from_secs(120),
            "the slot retains {} bytes of WAL 120 s after the load:\n{}",
            retained().await,
            source.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every change in Kafka: read with read_committed, each source change (position
    // headers tidemark.commit_lsn and tidemark.seq) present, and every extra copy of one
    // identical to it: a re-send of a change from a transaction the kill left open (see the
    // module docs on what the mock cluster cannot show).
    let inserted = history_ids(&client).await;
    let transactions = inserted.len();
    let mut resent = 0;
    for (table, snapshot_count) in &snapshot_rows {
        assert_mock_kept_everything(&bootstrap, &format!("crasheos.public.{table}"));
        let records = drain(
            &bootstrap,
            &format!("crasheos.public.{table}"),
            true,
            Duration::from_secs(3),
        )
        .await;
        let mut by_position: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
        for record in &records {
            let mut value = record
                .value
                .clone()
                .unwrap_or_else(|| panic!("{table}: a record without a JSON value"));
            // When the envelope was made: a re-send's differs.
            if let Some(envelope) = value.as_object_mut() {
                for made in ["ts_ms", "ts_us", "ts_ns"] {
                    envelope.remove(made);
                }
            }
            let position = |name: &str| {
                record
                    .headers
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{table}: a record without {name}"))
            };
            by_position
                .entry((position("tidemark.commit_lsn"), position("tidemark.seq")))
                .or_default()
                .push(value);
        }
        for (position, copies) in &by_position {
            assert!(
                copies.iter().all(|copy| *copy == copies[0]),
                "{table}: different records at one source position {position:?}: {copies:?}"
            );
            resent += copies.len() - 1;
        }
        let changes = |op: &str| {
            by_position
                .values()
                .filter(|copies| copies[0]["op"] == op)
                .count()
        };
        assert!(
            changes("r") >= *snapshot_count,
            "{table}: {} snapshot rows in Kafka of {snapshot_count}",
            changes("r")
        );
        if table == "pgbench_history" {
            let ids: BTreeSet<i64> = by_position
                .values()
                .filter(|copies| copies[0]["op"] == "c")
                .filter_map(|copies| copies[0]["after"]["id"].as_i64())
                .collect();
            assert_eq!(ids, inserted, "history: Kafka holds each inserted row");
        } else {
            assert_eq!(
                changes("u"),
                transactions,
                "{table}: one update per pgbench transaction"
            );
        }
    }
    eprintln!(
        "{transactions} transactions, every change in Kafka, {resent} records re-sent from transactions left open by a kill, retained WAL {} bytes, {} source starts",
        retained().await,
        source.starts
    );
    source.terminate();
    drop(mock);
}
