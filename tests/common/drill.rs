//! Shared parts of the drills (`crash_loop.rs`, `fault_drills.rs`): pgbench's TPC-B-like
//! workload on the source, tidemark child processes that can be killed and started again,
//! and the table checksums that decide whether the warehouse equals the source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tidemark::testing::{PgCluster, TestDatabase};

use super::kafka::{Record, drain};
use super::{exec, text_rows};

pub const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Accounts the crash loop keeps after `pgbench -i -s 1` (which makes 100,000).
pub const ACCOUNTS: u32 = 20_000;

/// pgbench's built-in "TPC-B (sort of)" script, with the account drawn from the rows kept.
pub fn tpcb_like(accounts: u32) -> String {
    format!(
        "\\set aid random(1, {accounts})
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

/// Retained WAL counted as "near zero" once caught up: heartbeats and pgbench's last
/// checkpoint records can sit between the confirmed position and the server's end.
pub const NEAR_ZERO_WAL: i64 = 1024 * 1024;

/// One tidemark process, restarted after each kill; its logs go to numbered files.
pub struct Process {
    label: &'static str,
    args: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub starts: u32,
}

impl Process {
    pub fn new(label: &'static str, args: &[&str], dir: &Path) -> Process {
        Process {
            label,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dir: dir.to_owned(),
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// An environment variable for every start.
    pub fn env(mut self, name: &str, value: &str) -> Process {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn start(&mut self) {
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
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting tidemark {}: {e}", self.label));
        self.child = Some(child);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
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
    pub fn terminate(&mut self) {
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
    pub fn tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} ---\n{}",
            self.log().display(),
            lines[from..].join("\n")
        )
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.log", self.label, self.starts))
    }

    pub fn assert_running(&mut self) {
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
pub async fn checksum(
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

pub fn key_of(table: &str) -> &'static str {
    match table {
        "pgbench_accounts" => "aid",
        "pgbench_branches" => "bid",
        "pgbench_tellers" => "tid",
        _ => "id",
    }
}

/// pgbench's tables in `db` (`pgbench -i -s 1`), made ready for capture: the history table
/// gets a key (it has none, and users give such a table one before capturing it) and the
/// accounts are cut to `accounts` rows (the workload picks among them) to keep the
/// snapshot short.
pub async fn pgbench_tables(
    cluster: &PgCluster,
    db: &TestDatabase,
    client: &tokio_postgres::Client,
    accounts: u32,
) {
    let output = Command::new(cluster.binary("pgbench"))
        .args(["-i", "-q", "-s", "1"])
        .arg(db.url())
        .output()
        .unwrap_or_else(|e| panic!("pgbench: {e}"));
    assert!(
        output.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    exec(
        client,
        &format!(
            "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY;
             DELETE FROM pgbench_accounts WHERE aid > {accounts};"
        ),
    )
    .await;
}

/// The load: pgbench's TPC-B-like transaction (over `accounts` accounts) at `rate` per
/// second on two connections to `url`, for up to an hour (the caller kills it). pgbench stops when its server goes away;
/// the fault drills start it again.
pub fn start_load(cluster: &PgCluster, url: &str, dir: &Path, rate: u32, accounts: u32) -> Child {
    let script = dir.join("tpcb-like.sql");
    std::fs::write(&script, tpcb_like(accounts)).unwrap_or_else(|e| panic!("{e}"));
    Command::new(cluster.binary("pgbench"))
        .args([
            "-n",
            "-c",
            "2",
            "-j",
            "1",
            "-R",
            &rate.to_string(),
            "-T",
            "3600",
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("pgbench: {e}"))
}

/// The WAL `slot` keeps on the server beyond its confirmed position, in bytes.
pub async fn retained_wal(client: &tokio_postgres::Client, slot: &str) -> i64 {
    text_rows(
        client,
        &format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text \
             FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .first()
    .and_then(|row| row.first().cloned().flatten())
    .and_then(|bytes| bytes.parse::<i64>().ok())
    .unwrap_or(i64::MAX)
}

/// The ids of the rows in `pgbench_history`: one per committed pgbench transaction.
/// Fails if there are none.
pub async fn history_ids(client: &tokio_postgres::Client) -> BTreeSet<i64> {
    let ids = ids(client, "SELECT id::text FROM pgbench_history").await;
    assert!(!ids.is_empty(), "pgbench committed nothing");
    ids
}

/// The integers a one-column query returns (as text).
async fn ids(client: &tokio_postgres::Client, sql: &str) -> BTreeSet<i64> {
    text_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|row| row.first().cloned().flatten())
        .map(|id| id.parse().unwrap_or_else(|e| panic!("{sql}: {id}: {e}")))
        .collect()
}

/// A drained record's change envelope (under `payload` with json_schemas).
fn envelope<'r>(record: &'r Record, topic: &str) -> &'r serde_json::Value {
    record
        .value
        .as_ref()
        .map(|v| v.get("payload").unwrap_or(v))
        .unwrap_or_else(|| panic!("{topic}: a record without a JSON value"))
}

/// Asserts that every row of the source's `pgbench_history` (one per committed pgbench
/// transaction) is on `topic` as an insert (at least once: no gap). Returns the number of
/// transactions and of history records read from the topic.
pub async fn assert_history_in_kafka(
    client: &tokio_postgres::Client,
    bootstrap: &str,
    topic: &str,
) -> (usize, usize) {
    let inserted = history_ids(client).await;
    let history = drain(bootstrap, topic, false, Duration::from_secs(3)).await;
    let in_kafka: BTreeSet<i64> = history
        .iter()
        .filter_map(|r| r.value.as_ref())
        // With json_schemas the envelope is under "payload".
        .map(|v| v.get("payload").unwrap_or(v))
        .filter(|v| v["op"] == "c")
        .filter_map(|v| v["after"]["id"].as_i64())
        .collect();
    let missing: Vec<&i64> = inserted.difference(&in_kafka).take(10).collect();
    assert!(
        missing.is_empty(),
        "history rows not in Kafka (first 10): {missing:?} of {}; {} records read, the first: {:?}",
        inserted.len(),
        history.len(),
        history
            .first()
            .and_then(|r| r.value.as_ref())
            .map(|v| &v["payload"])
    );
    (inserted.len(), history.len())
}

/// Waits until every pgbench table of `warehouse` equals its table in `source` (count and
/// md5 of every row), at most `limit` after `since` (when the load stopped); `processes`
/// must keep running meanwhile, and the tails of their logs go into the failure message.
/// Prints how long after `since` the warehouse was equal.
pub async fn wait_tables_equal(
    source: &tokio_postgres::Client,
    warehouse: &tokio_postgres::Client,
    since: std::time::Instant,
    limit: Duration,
    processes: &mut [&mut Process],
) {
    for table in TABLES {
        let key = key_of(table);
        let expected = checksum(source, table, key).await;
        loop {
            for process in processes.iter_mut() {
                process.assert_running();
            }
            let actual = checksum(warehouse, table, key).await;
            if actual == expected {
                break;
            }
            let tails: Vec<String> = processes.iter().map(|p| p.tail()).collect();
            assert!(
                since.elapsed() < limit,
                "{table}: the warehouse has {actual:?}, the source {expected:?}\n{}",
                tails.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!(
        "warehouse equal {:?} after the load stopped",
        since.elapsed()
    );
}

/// How many rows each pgbench table holds now (before tidemark starts: its snapshot). A
/// count that cannot be read fails here, rather than letting a snapshot check pass as zero.
pub async fn snapshot_counts(client: &tokio_postgres::Client) -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    for table in TABLES {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("counting {table}: {e}"))
            .get(0);
        counts.push((table.to_owned(), count as usize));
    }
    counts
}

/// A keyless copy of `pgbench_history` kept by a trigger (`history_copy`, REPLICA IDENTITY
/// FULL): the sink appends a keyless table's rows, so a change it applied twice shows as an
/// extra row there. Capture it by adding `public.history_copy` to the tables.
pub async fn keyless_history_copy(client: &tokio_postgres::Client) {
    exec(
        client,
        "CREATE TABLE history_copy (hid bigint, aid int, delta int);
         ALTER TABLE history_copy REPLICA IDENTITY FULL;
         CREATE FUNCTION copy_history() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO history_copy VALUES (NEW.id, NEW.aid, NEW.delta); RETURN NEW; END $$;
         CREATE TRIGGER copy_history AFTER INSERT ON pgbench_history
           FOR EACH ROW EXECUTE FUNCTION copy_history();",
    )
    .await;
}

/// Asserts that a `read_committed` consumer finds each row of the source's `history_copy`
/// on `<prefix>.public.history_copy` exactly once, as an insert, and no other record: the
/// keyless table's changes have no key to fold duplicates by, so this is where a change
/// delivered twice, or a source transaction delivered in part, would show.
pub async fn assert_keyless_copy_in_kafka_once(
    client: &tokio_postgres::Client,
    bootstrap: &str,
    prefix: &str,
) {
    let expected = hids(client).await;
    let topic = format!("{prefix}.public.history_copy");
    let records = drain(bootstrap, &topic, true, Duration::from_secs(3)).await;
    let mut seen: BTreeMap<i64, (i32, i64)> = BTreeMap::new();
    for record in &records {
        let value = envelope(record, &topic);
        assert_eq!(
            value["op"], "c",
            "{topic}: a record other than an insert: {value}"
        );
        let hid = value["after"]["hid"]
            .as_i64()
            .unwrap_or_else(|| panic!("{topic}: an insert without hid: {value}"));
        if let Some(first) = seen.insert(hid, (record.partition, record.offset)) {
            panic!(
                "{topic}: hid {hid} twice under exactly-once, at (partition, offset) {first:?} and {:?}",
                (record.partition, record.offset)
            );
        }
    }
    let in_kafka: BTreeSet<i64> = seen.keys().copied().collect();
    let missing: Vec<&i64> = expected.difference(&in_kafka).take(10).collect();
    let extra: Vec<&i64> = in_kafka.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{topic}: source rows not in Kafka (first 10) {missing:?}, Kafka rows not at the source {extra:?}; {} records, {} source rows",
        records.len(),
        expected.len()
    );
}

/// The `hid`s of a database's `history_copy`.
async fn hids(client: &tokio_postgres::Client) -> BTreeSet<i64> {
    ids(client, "SELECT hid::text FROM public.history_copy").await
}

/// Waits (at most 60 s: the sink may not have flushed its last batch of this table yet)
/// until the warehouse's `history_copy` equals the source's: the same count, distinct ids
/// and md5 of every row, so no row was applied twice (see [`keyless_history_copy`]).
/// Only under exactly-once delivery: at least once, Kafka itself may hold a change twice.
/// A failure names the rows missing from the warehouse and the extra ones.
pub async fn assert_keyless_copy_equal(
    source: &tokio_postgres::Client,
    warehouse: &tokio_postgres::Client,
) {
    let sql = "SELECT count(*)::text, count(DISTINCT hid)::text, \
               md5(coalesce(string_agg(concat_ws(':', hid, aid, delta), ',' ORDER BY hid), '')) \
               FROM public.history_copy";
    let expected = text_rows(source, sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    loop {
        let actual = text_rows(warehouse, sql)
            .await
            .unwrap_or_else(|e| panic!("the warehouse's history_copy: {e}"));
        if actual == expected {
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            let (at_source, in_warehouse) = (hids(source).await, hids(warehouse).await);
            let missing: Vec<&i64> = at_source.difference(&in_warehouse).take(10).collect();
            let extra: Vec<&i64> = in_warehouse.difference(&at_source).take(10).collect();
            panic!(
                "history_copy (keyless): the warehouse has [count, distinct, md5] {actual:?}, the source {expected:?}; hids missing from the warehouse (first 10) {missing:?}, extra {extra:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that a `read_committed` consumer finds every change of the pgbench tables on
/// `<prefix>.public.<table>` exactly once, by its position headers (`tidemark.commit_lsn`,
/// `tidemark.seq`): each snapshot row (`snapshot_rows`, from [`snapshot_counts`]), each
/// history row, one update per pgbench transaction in each updated table, and no other
/// record. The load must have started after the snapshot. Returns the transactions.
pub async fn assert_each_change_once(
    client: &tokio_postgres::Client,
    bootstrap: &str,
    prefix: &str,
    snapshot_rows: &[(String, usize)],
) -> usize {
    let inserted = history_ids(client).await;
    let transactions = inserted.len();
    for (table, snapshot_count) in snapshot_rows {
        let records = drain(
            bootstrap,
            &format!("{prefix}.public.{table}"),
            true,
            Duration::from_secs(3),
        )
        .await;
        let mut by_position: BTreeMap<(String, String), &serde_json::Value> = BTreeMap::new();
        for record in &records {
            let value = envelope(record, table);
            let position = |name: &str| {
                record
                    .headers
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{table}: a record without {name}"))
            };
            let key = (position("tidemark.commit_lsn"), position("tidemark.seq"));
            if let Some(first) = by_position.insert(key.clone(), value) {
                panic!(
                    "{table}: two records at source position {key:?} under exactly-once:\n{first}\n{value}"
                );
            }
        }
        let changes = |op: &str| by_position.values().filter(|v| v["op"] == op).count();
        assert_eq!(
            changes("r"),
            *snapshot_count,
            "{table}: snapshot rows in Kafka"
        );
        if table == "pgbench_history" {
            let ids: Vec<i64> = by_position
                .values()
                .filter(|v| v["op"] == "c")
                .filter_map(|v| v["after"]["id"].as_i64())
                .collect();
            assert_eq!(
                ids.len(),
                inserted.len(),
                "history: one insert record per inserted row"
            );
            let ids: BTreeSet<i64> = ids.into_iter().collect();
            assert_eq!(ids, inserted, "history: Kafka holds each inserted row");
        } else {
            assert_eq!(
                changes("u"),
                transactions,
                "{table}: exactly one update per pgbench transaction"
            );
        }
        assert_eq!(
            records.len(),
            changes("r") + changes("c") + changes("u"),
            "{table}: records other than the snapshot and the load's changes"
        );
    }
    transactions
}

/// A directory for a drill's logs, kept when the drill fails (its path is printed) and
/// removed by [`LogDir::passed`].
pub struct LogDir(PathBuf);

impl LogDir {
    pub fn new(label: &str) -> LogDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tidemark-{label}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"))
            .keep();
        eprintln!("{label}: logs in {}", dir.display());
        LogDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The drill passed: its logs are not needed.
    pub fn passed(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Seconds of the day of a log line's leading RFC 3339 timestamp
/// (`2026-12-03T10:46:00.079548Z …`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// For each start of the sink process `label` after its first (a restart after a kill):
/// seconds from "sink started" to its first "partitions assigned", read from its log
/// (`<label>-<n>.log` in `dir`). How long the warehouse waited for a restarted sink.
pub fn sink_restart_delays(dir: &Path, label: &str, starts: u32) -> Vec<f64> {
    (2..=starts)
        .filter_map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("{label}-{n}.log"))).ok()?;
            let at = |needle: &str| {
                log.lines()
                    .find(|line| line.contains(needle))
                    .and_then(log_seconds)
            };
            Some(at("partitions assigned")? - at("sink started")?)
        })
        .collect()
}

/// "n restarts, median m s, max x s" of [`sink_restart_delays`].
pub fn describe_delays(mut delays: Vec<f64>) -> String {
    if delays.is_empty() {
        return "no sink restarts".into();
    }
    delays.sort_by(f64::total_cmp);
    format!(
        "{} sink restarts: partitions assigned after a median of {:.1} s, at most {:.1} s",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    )
}

/// Waits until the source's log says the snapshot is done (a load started after it has no
/// row both read by the snapshot and streamed).
pub async fn wait_for_snapshot(source: &mut Process) {
    let started = std::time::Instant::now();
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
}

/// Writes a drill's two configs into `dir`: `source.toml` (`common`, no sink) and
/// `sink.toml` (`common` with a PostgreSQL sink into `warehouse_url`, batch_ms 200).
/// Returns their paths, for `--config`.
pub fn write_source_and_sink_configs(
    dir: &Path,
    common: &str,
    warehouse_url: &str,
) -> (String, String) {
    let source = dir.join("source.toml");
    std::fs::write(&source, common).unwrap_or_else(|e| panic!("{e}"));
    let sink = dir.join("sink.toml");
    std::fs::write(
        &sink,
        format!("{common}[sink]\nkind = \"postgres\"\nurl = \"{warehouse_url}\"\nbatch_ms = 200\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (source.display().to_string(), sink.display().to_string())
}
