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
//! `TIDEMARK_CRASH_KILLS` sets the number of kills (default 8; `scripts/drills.sh` runs
//! the long version with 50) and `TIDEMARK_CRASH_SEED` replays a run's kill schedule (the
//! test prints its seed).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::drain;
use common::*;
use tidemark::testing::{KafkaBroker, PgCluster};

const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Accounts kept after `pgbench -i -s 1` (which makes 100,000).
const ACCOUNTS: u32 = 20_000;

/// pgbench's built-in "TPC-B (sort of)" script, with the account drawn from the rows kept.
fn tpcb_like() -> String {
    format!(
        "\\set aid random(1, {ACCOUNTS})
\\set bid random(1, 1)
\\set tid random(1, 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
"
    )
}

/// The sink's consumer-group session timeout (`session.timeout.ms`), plus a margin.
const SINK_SESSION: Duration = Duration::from_millis(11_500);

/// Retained WAL counted as "near zero" once caught up: heartbeats and pgbench's last
/// checkpoint records can sit between the confirmed position and the server's end.
const NEAR_ZERO_WAL: i64 = 1024 * 1024;

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

/// One tidemark process, restarted after each kill; its logs go to numbered files.
struct Process {
    label: &'static str,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Process {
    fn new(label: &'static str, args: &[&str], dir: &Path) -> Process {
        Process {
            label,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dir: dir.to_owned(),
            child: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("{}-{}.log", self.label, self.starts));
        let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(&self.args)
            .env(
                "TIDEMARK_LOG",
                std::env::var("TIDEMARK_CRASH_LOG")
                    .unwrap_or_else(|_| "tidemark=info,librdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting tidemark {}: {e}", self.label));
        self.child = Some(child);
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tidemark {} had exited by itself ({status}); see {}",
                    self.label,
                    self.log().display()
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a graceful stop, which must exit 0.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
            assert!(
                status.success(),
                "tidemark {} exited with {status} after SIGTERM; see {}",
                self.label,
                self.log().display()
            );
        }
    }

    /// The last lines of the current log, for failure messages.
    fn tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} ---\n{}",
            self.log().display(),
            lines[from..].join("\n")
        )
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.log", self.label, self.starts))
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            panic!(
                "tidemark {} stopped by itself ({status}):\n{log}",
                self.label
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Count and md5 of every row of `table` in primary-key order (the row as text).
async fn checksum(
    client: &tokio_postgres::Client,
    table: &str,
    key: &str,
) -> Vec<Vec<Option<String>>> {
    let columns = match table {
        "pgbench_accounts" => "aid, bid, abalance, filler",
        "pgbench_branches" => "bid, bbalance, filler",
        "pgbench_tellers" => "tid, bid, tbalance, filler",
        _ => "id, tid, bid, aid, delta, mtime, filler",
    };
    text_rows(
        client,
        &format!(
            "SELECT count(*)::text, md5(coalesce(string_agg(r::text, '|' ORDER BY {key}), '')) \
             FROM (SELECT {columns} FROM public.{table}) r"
        ),
    )
    .await
    // The warehouse table appears with the sink's first flush.
    .unwrap_or_default()
}

fn key_of(table: &str) -> &'static str {
    match table {
        "pgbench_accounts" => "aid",
        "pgbench_branches" => "bid",
        "pgbench_tellers" => "tid",
        _ => "id",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_under_pgbench_ends_equal_with_no_gap_in_kafka() {
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
    eprintln!("crash loop: {kills} kills, TIDEMARK_CRASH_SEED={seed}");
    let mut schedule = Schedule(seed);

    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = broker.bootstrap.clone();
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("crash").await;
    let (warehouse, warehouse_client) = database("crash_wh").await;
    let pgbench = |args: &[&str]| {
        let output = Command::new(cluster.binary("pgbench"))
            .args(args)
            .arg(db.url())
            .output()
            .unwrap_or_else(|e| panic!("pgbench: {e}"));
        assert!(
            output.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    pgbench(&["-i", "-q", "-s", "1"]);
    // pgbench_history has no key; users give such a table one before capturing it. The
    // accounts are cut to ACCOUNTS rows (the workload's script picks among them) to keep
    // the snapshot short.
    exec(
        &client,
        &format!(
            "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY;
             DELETE FROM pgbench_accounts WHERE aid > {ACCOUNTS};"
        ),
    )
    .await;

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
    wait_until(
        "the source created its slot",
        Duration::from_secs(60),
        || async {
            text_rows(
                &client,
                "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = 'tidemark_crash'",
            )
            .await
            .is_ok_and(|rows| !rows.is_empty())
        },
    )
    .await;
    // The load: pgbench's TPC-B-like transaction at a fixed rate, on two connections.
    let script = dir.path().join("tpcb-like.sql");
    std::fs::write(&script, tpcb_like()).unwrap_or_else(|e| panic!("{e}"));
    let mut load = Command::new(cluster.binary("pgbench"))
        .args(["-n", "-c", "2", "-j", "1", "-R", "150", "-T", "3600", "-f"])
        .arg(&script)
        .arg(db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("pgbench: {e}"));

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
    for table in TABLES {
        let key = key_of(table);
        let expected = checksum(&client, table, key).await;
        let limit = Duration::from_secs(240).saturating_sub(stopped_at.elapsed());
        let started = Instant::now();
        loop {
            source.assert_running();
            sink.assert_running();
            if checksum(&warehouse_client, table, key).await == expected {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "{table}: the warehouse has {:?}, the source {expected:?}\n{}\n{}",
                checksum(&warehouse_client, table, key).await,
                source.tail(),
                sink.tail()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "warehouse equal {:?} after the load stopped",
        stopped_at.elapsed()
    );

    // Kafka holds every change: every committed pgbench transaction inserted one history
    // row, and updated one account, one teller and one branch.
    let inserted: BTreeSet<i64> = text_rows(&client, "SELECT id::text FROM pgbench_history")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|row| row.first().cloned().flatten())
        .filter_map(|id| id.parse().ok())
        .collect();
    let transactions = inserted.len();
    assert!(transactions > 0, "pgbench committed nothing");
    let history = drain(
        &bootstrap,
        "crash.public.pgbench_history",
        false,
        Duration::from_secs(3),
    )
    .await;
    let in_kafka: BTreeSet<i64> = history
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(|v| &v["payload"])
        .filter(|v| v["op"] == "c")
        .filter_map(|v| v["after"]["id"].as_i64())
        .collect();
    let missing: Vec<&i64> = inserted.difference(&in_kafka).take(10).collect();
    assert!(
        missing.is_empty(),
        "history rows not in Kafka (first 10): {missing:?} of {transactions}; {} records read, the first: {:?}",
        history.len(),
        history
            .first()
            .and_then(|r| r.value.as_ref())
            .map(|v| &v["payload"])
    );
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
    let retained = || async {
        text_rows(
            &client,
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text \
             FROM pg_replication_slots WHERE slot_name = 'tidemark_crash'",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|bytes| bytes.parse::<i64>().ok())
        .unwrap_or(i64::MAX)
    };
    wait_until(
        "the slot's retained WAL is near zero",
        Duration::from_secs(30),
        || async { retained().await < NEAR_ZERO_WAL },
    )
    .await;
    eprintln!(
        "{transactions} transactions, {} history records in Kafka, retained WAL {} bytes, {} source and {} sink starts",
        history.len(),
        retained().await,
        source.starts,
        sink.starts
    );
    source.terminate();
    sink.terminate();
}
