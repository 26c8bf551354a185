//! Steady-state latency at a fixed offered load: `tidemark run` (the release binary, source
//! and PostgreSQL warehouse sink in one process, as a user runs it) while `pgbench` inserts
//! at a fixed rate, one row per transaction, from one client.
//!
//! Each source row records `clock_timestamp()` at its insert, microseconds before its
//! commit (`at_us`). Two observers in this process time each row's arrival:
//!
//! - **in Kafka**: a consumer reading the table's topic (`fetch.wait.max.ms` = 10), stamping
//!   each record when it is handed over. A record is readable only after the broker
//!   acknowledged it, so this is commit → acknowledged plus the consumer's fetch.
//! - **in the warehouse**: a poller selecting the rows past the last id it saw every 10 ms,
//!   stamping each row when it first sees it (commit → merged and committed, ±10 ms).
//!
//! The sink's `batch_ms` bounds the warehouse figure from below: a batch closes on size or
//! time. The bench runs at least once with the sink's default (1000 ms) and with
//! `batch_ms = 100`, then exactly once with `batch_ms = 100`: there a record is readable
//! (`read_committed`) only once its Kafka transaction committed, so the figure includes the
//! wait for the commit.
//!
//! `cargo bench --bench latency`; `LATENCY_RATE` (transactions/s, default 2000),
//! `LATENCY_SECONDS` (default 30 per setting).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};

use tidemark::testing::{PgCluster, TestDatabase};

mod common;
use common::{client_command, env_number};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The `p`-quantile of sorted latencies, in milliseconds.
fn quantile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// `tidemark run`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Tidemark(Child);

impl Drop for Tidemark {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Latencies of the records on `topic` whose `at_us` is at or after `since_us`, until
/// `stop` is set and nothing more arrives.
fn consume(
    brokers: &str,
    topic: &str,
    since_us: i64,
    read_committed: bool,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<i64>> {
    let isolation = if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("isolation.level", isolation)
        .set("group.id", format!("latency-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut latencies = Vec::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                let arrived = now_us();
                idle_since = None;
                let Some(payload) = message.payload() else {
                    continue;
                };
                let value: serde_json::Value = serde_json::from_slice(payload)?;
                let envelope = value.get("payload").unwrap_or(&value);
                let at = envelope
                    .get("after")
                    .and_then(|after| after.get("at_us"))
                    .and_then(serde_json::Value::as_i64);
                if let Some(at) = at.filter(|at| *at >= since_us) {
                    latencies.push(arrived - at);
                }
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {
                if stop.load(Ordering::Relaxed) {
                    let idle = idle_since.get_or_insert_with(Instant::now);
                    if idle.elapsed() > Duration::from_secs(2) {
                        return Ok(latencies);
                    }
                }
            }
        }
    }
}

/// Latencies of the warehouse rows with `at_us` at or after `since_us`, polled every 10 ms
/// until `expected` rows (set once pgbench ended) were seen.
async fn poll_warehouse(
    warehouse: tokio_postgres::Client,
    since_us: i64,
    expected: Arc<AtomicI64>,
    limit: Duration,
) -> anyhow::Result<Vec<i64>> {
    let mut last_id = 0_i64;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while (latencies.len() as i64) < expected.load(Ordering::Relaxed) {
        anyhow::ensure!(
            started.elapsed() < limit,
            "the warehouse has {} of {} rows after {limit:?}",
            latencies.len(),
            expected.load(Ordering::Relaxed)
        );
        let rows = warehouse
            .query(
                "SELECT id, at_us FROM lat WHERE id > $1 ORDER BY id",
                &[&last_id],
            )
            .await?;
        let seen = now_us();
        for row in rows {
            let (id, at): (i64, i64) = (row.get(0), row.get(1));
            last_id = last_id.max(id);
            if at >= since_us {
                latencies.push(seen - at);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(latencies)
}

async fn wait_for_table(warehouse: &tokio_postgres::Client, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let found = warehouse
            .query_opt("SELECT 1 FROM lat LIMIT 1", &[])
            .await
            .ok()
            .flatten()
            .is_some();
        if found {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "tidemark did not create and fill the warehouse table within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Latencies (µs) into Kafka and into the warehouse, at `rate` transactions/s for
/// `seconds`, with `delivery` and the sink's `batch_ms`.
async fn measure(
    cluster: &'static PgCluster,
    brokers: &str,
    (delivery, batch_ms): (&'static str, u64),
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Measured> {
    let label = format!("latency_{delivery}_{batch_ms}");
    let source: TestDatabase = cluster.create_database(&format!("{label}_src")).await?;
    let warehouse_db = cluster.create_database(&format!("{label}_wh")).await?;
    let client = source.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE lat (id bigserial PRIMARY KEY, \
               at_us bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, \
               pad text)",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("latency.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{label}\"\n[source]\nurl = \"{}\"\ntables = [\"public.lat\"]\n\
             [kafka]\nbrokers = \"{brokers}\"\nformat = \"json\"\ndelivery = \"{delivery}\"\n\
             [sink]\nkind = \"postgres\"\nurl = \"{}\"\nbatch_ms = {batch_ms}\n",
            source.url(),
            warehouse_db.url()
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("tidemark.log"))?;
    let _tidemark = Tidemark(
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["run", "--config"])
            .arg(&config)
            .env("TIDEMARK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let warehouse = warehouse_db.connect().await?;
    client
        .batch_execute("INSERT INTO lat (pad) VALUES ('warm-up')")
        .await?;
    if let Err(e) = wait_for_table(&warehouse, Duration::from_secs(120)).await {
        let log = std::fs::read_to_string(dir.path().join("tidemark.log")).unwrap_or_default();
        anyhow::bail!("{e}; tidemark's log:\n{log}");
    }

    let since_us = now_us();
    let stop = Arc::new(AtomicBool::new(false));
    let topic = format!("{label}.public.lat");
    let consumer = {
        let (brokers, stop) = (brokers.to_owned(), stop.clone());
        let read_committed = delivery == "exactly_once";
        std::thread::spawn(move || consume(&brokers, &topic, since_us, read_committed, stop))
    };
    let expected = Arc::new(AtomicI64::new(i64::MAX));
    let poller = tokio::spawn(poll_warehouse(
        warehouse,
        since_us,
        expected.clone(),
        Duration::from_secs(seconds + 120),
    ));
    let script = dir.path().join("insert.sql");
    std::fs::write(&script, "INSERT INTO lat (pad) VALUES (repeat('x', 80));\n")?;
    let pgbench = client_command(cluster, "pgbench")
        .arg("-n")
        .args([
            "-c",
            "1",
            "-j",
            "1",
            "-R",
            &rate.to_string(),
            "-T",
            &seconds.to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .arg(&source.name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let output = tokio::task::spawn_blocking(move || pgbench.wait_with_output()).await??;
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let count: i64 = client
        .query_one("SELECT count(*) FROM lat WHERE at_us >= $1", &[&since_us])
        .await?
        .get(0);
    expected.store(count, Ordering::Relaxed);
    let merged = poller.await??;
    stop.store(true, Ordering::Relaxed);
    let kafka = tokio::task::spawn_blocking(move || consumer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    anyhow::ensure!(
        kafka.len() as i64 >= count,
        "the consumer read {} of {count} records",
        kafka.len()
    );
    Ok(Measured {
        delivery,
        batch_ms,
        rows: count,
        kafka,
        merged,
    })
}

/// One setting's latencies, in µs.
struct Measured {
    delivery: &'static str,
    batch_ms: u64,
    rows: i64,
    kafka: Vec<i64>,
    merged: Vec<i64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rate = env_number("LATENCY_RATE", 2000);
    let seconds = env_number("LATENCY_SECONDS", 30);
    let cluster = PgCluster::shared()?;
    let brokers = common::warm_broker().await?;
    let mut results = Vec::new();
    for setting in [
        ("at_least_once", 1000),
        ("at_least_once", 100),
        ("exactly_once", 100),
    ] {
        let m = measure(cluster, &brokers, setting, rate, seconds).await?;
        eprintln!(
            "{setting:?}: {} rows, Kafka p50 {:.1} ms, warehouse p50 {:.1} ms",
            m.rows,
            quantile(&sorted(&m.kafka), 0.5),
            quantile(&sorted(&m.merged), 0.5)
        );
        results.push(m);
    }
    println!(
        "Offered load: pgbench, one client, {rate} transactions/s (one ~100 B insert each) for {seconds} s per setting; latency from the row's insert (just before its commit) in ms.\n"
    );
    println!(
        "| delivery | sink batch_ms | rows | commit → readable in Kafka p50 | p99 | max | commit → merged in the warehouse p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in &results {
        let (kafka, merged) = (sorted(&m.kafka), sorted(&m.merged));
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m.delivery,
            m.batch_ms,
            m.rows,
            quantile(&kafka, 0.5),
            quantile(&kafka, 0.99),
            quantile(&kafka, 1.0),
            quantile(&merged, 0.5),
            quantile(&merged, 0.99),
            quantile(&merged, 1.0),
        );
    }
    Ok(())
}

fn sorted(values: &[i64]) -> Vec<i64> {
    let mut values = values.to_vec();
    values.sort_unstable();
    values
}
