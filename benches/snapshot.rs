//! Snapshot speed against its ceilings, side by side in one run:
//!
//! - PostgreSQL's own export rate: `psql -c "\copy (SELECT * FROM t) to '/dev/null'"`;
//! - tidemark's snapshot of the same table (`snapshot = "initial_only"`, a fresh slot with an
//!   exported snapshot each time), every row decoded into an event and encoded, into the null
//!   output `tidemark run --output null` / `null:avro` uses: Debezium JSON, and Avro (key and
//!   envelope, as the Kafka output writes them, batches encoded on several threads);
//! - into Kafka (Apache Kafka, Avro with the embedded registry), against a bare rdkafka producer
//!   sending the same number of records of the same sizes (the broker's ingest ceiling).
//!
//! For a narrow table (~100-byte rows) and a wide one (~1 KB rows), with the CPU time per row
//! of each stage (this process or psql, the PostgreSQL server, the broker). Also prints the peak RSS
//! of the bench process, to show memory stays bounded while millions of rows pass.
//!
//! - Debezium's own PostgreSQL connector (its embedded engine, default settings,
//!   `snapshot.mode=initial`) snapshotting the same table, each record serialised by Kafka
//!   Connect's `JsonConverter` without schemas and discarded; its rate from its first record
//!   to its last and its CPU over the same span (JVM start-up, connecting and creating the
//!   slot left out, which favours Debezium).
//!
//! `cargo bench --bench snapshot`; `SNAPSHOT_ROWS` (default 2000000 narrow rows),
//! `SNAPSHOT_WIDE_ROWS` (default 200000), `SNAPSHOT_ROUNDS` (default 3), `SNAPSHOT_KAFKA=0`
//! to skip the broker, `SNAPSHOT_DEBEZIUM=0` to skip Debezium.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use tidemark::capture::reader::run_reader;
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::output::EventOutput;
use tidemark::output::null::{NullFormat, NullOutput};
use tidemark::testing::{DEBEZIUM_VERSION, PgCluster, TestDatabase, drain_debezium};

mod common;
use common::{
    bare_producer, cpu_seconds, create_topic, env_number, median, process_cpu_seconds, record_size,
};

/// CPU seconds used so far per stage: this process (tidemark: COPY decoding, encoding,
/// producing; the psql client's time is counted separately), the PostgreSQL server, the broker.
#[derive(Clone, Copy)]
struct Cpu {
    tidemark: f64,
    client: f64,
    postgres: f64,
    broker: f64,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            tidemark: cpu_seconds(false),
            client: cpu_seconds(true),
            postgres: process_cpu_seconds("postgres"),
            broker: process_cpu_seconds("java"),
        }
    }

    /// µs per row of each stage since `self`: (tidemark or psql, PostgreSQL, broker).
    fn per_row_since(self, rows: u64) -> [f64; 3] {
        let now = Cpu::now();
        let per_row = |seconds: f64| seconds * 1e6 / rows.max(1) as f64;
        [
            per_row(now.tidemark - self.tidemark + now.client - self.client),
            per_row(now.postgres - self.postgres),
            per_row(now.broker - self.broker),
        ]
    }
}

fn config(
    db: &TestDatabase,
    name: &str,
    table: &str,
    kafka: Option<&str>,
) -> anyhow::Result<Config> {
    let mut text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\ntables = [\"public.{table}\"]\nsnapshot = \"initial_only\"\n",
        db.url()
    );
    if let Some(brokers) = kafka {
        text.push_str(&format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\n"
        ));
    }
    Ok(Config::from_toml_with_env(
        &text,
        "bench",
        std::iter::empty(),
    )?)
}

/// The envelope names `run` would use for `config`.
fn context(db: &TestDatabase, config: &Config) -> EnvelopeContext {
    EnvelopeContext::new(&config.name, &db.name)
}

/// Runs an `initial_only` snapshot into `output`; returns its duration and row count.
async fn snapshot_into<O: EventOutput>(
    config: &Config,
    output: &mut O,
) -> anyhow::Result<(Duration, u64)> {
    let (_stop, rx) = watch::channel(false);
    let start = Instant::now();
    let stats = run_reader(config, output, rx).await?;
    Ok((start.elapsed(), stats.snapshot_rows))
}

async fn drop_slot(client: &tokio_postgres::Client, config: &Config) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_drop_replication_slot($1)",
            &[&config.source.slot],
        )
        .await?;
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            config.source.publication
        ))
        .await?;
    Ok(())
}

fn psql_copy(cluster: &PgCluster, db: &TestDatabase, table: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new(cluster.binary("psql"))
        .arg(db.url())
        .arg("-c")
        .arg(format!("\\copy (SELECT * FROM {table}) to '/dev/null'"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let narrow_rows = env_number("SNAPSHOT_ROWS", 2_000_000);
    let wide_rows = env_number("SNAPSHOT_WIDE_ROWS", 200_000);
    let rounds = env_number("SNAPSHOT_ROUNDS", 3);
    let with_kafka = std::env::var("SNAPSHOT_KAFKA").map_or(true, |v| v != "0");
    let with_debezium = std::env::var("SNAPSHOT_DEBEZIUM").map_or(true, |v| v != "0");
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("snapbench").await?;
    let client = db.connect().await?;
    let load = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE TABLE narrow (id bigint PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz); \
             INSERT INTO narrow SELECT g, 'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now() \
             FROM generate_series(1, {narrow_rows}) g; \
             CREATE TABLE wide (id bigint PRIMARY KEY, c1 text, c2 text, c3 text, c4 text, c5 text, \
               c6 text, c7 text, c8 text, c9 text, c10 text, n int, at timestamptz); \
             INSERT INTO wide SELECT g, {cols}, g, now() FROM generate_series(1, {wide_rows}) g;",
            cols = (1..=10)
                .map(|i| format!("repeat(md5((g * {i})::text), 3)"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE narrow").await?;
    client.batch_execute("VACUUM ANALYZE wide").await?;
    let sizes = client
        .query_one(
            "SELECT pg_relation_size('narrow') / greatest(count(*), 1) FROM narrow",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    eprintln!(
        "tables: narrow {narrow_rows} rows (~{sizes} bytes of heap each), wide {wide_rows} rows (~1 KB), written in {:.1?}",
        load.elapsed()
    );
    let brokers = if with_kafka {
        Some(common::warm_broker().await?)
    } else {
        None
    };
    let mut rates: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpu_per_row: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
    let mut record: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for round in 0..rounds {
        for (table, rows) in [("narrow", narrow_rows), ("wide", wide_rows)] {
            let rate = |d: Duration| rows as f64 / d.as_secs_f64();
            let cpu = Cpu::now();
            let copy = psql_copy(cluster, &db, table)?;
            cpu_per_row
                .entry(format!("{table} psql_copy"))
                .or_default()
                .push(cpu.per_row_since(rows));
            rates
                .entry(format!("{table} psql_copy"))
                .or_default()
                .push(rate(copy));

            let mut took = Duration::ZERO;
            for (key, format) in [
                ("json_null", NullFormat::Json),
                ("avro_null", NullFormat::Avro),
            ] {
                let cfg = config(&db, &format!("{key}_{table}_{round}"), table, None)?;
                let mut out = NullOutput::new(format, context(&db, &cfg));
                let cpu = Cpu::now();
                let seen;
                (took, seen) = snapshot_into(&cfg, &mut out).await?;
                cpu_per_row
                    .entry(format!("{table} {key}"))
                    .or_default()
                    .push(cpu.per_row_since(rows));
                anyhow::ensure!(
                    seen == rows,
                    "{format:?} snapshot emitted {seen} of {rows} rows"
                );
                anyhow::ensure!(
                    out.totals().0 == rows,
                    "{format:?}: {} records encoded for {rows} rows",
                    out.totals().0
                );
                drop_slot(&client, &cfg).await?;
                rates
                    .entry(format!("{table} {key}"))
                    .or_default()
                    .push(rate(took));
            }

            let mut line = format!(
                "round {round} {table}: psql \\copy {:.0}/s, JSON→null {:.0}/s, Avro→null {:.0}/s",
                rate(copy),
                rates[&format!("{table} json_null")][round as usize],
                rate(took)
            );
            if with_debezium {
                let name = format!("dbz_{table}_{round}");
                let settings = [
                    ("topic.prefix", name.as_str()),
                    ("slot.name", name.as_str()),
                    ("publication.name", name.as_str()),
                    ("publication.autocreate.mode", "filtered"),
                    ("table.include.list", &format!("public.{table}")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
                let cpu = Cpu::now();
                let drained =
                    drain_debezium(&db, &settings, rows, Duration::from_secs(3600)).await?;
                let [_, postgres, _] = cpu.per_row_since(rows);
                let jvm = drained.cpu_first_to_last.as_secs_f64() * 1e6 / rows as f64;
                cpu_per_row
                    .entry(format!("{table} debezium"))
                    .or_default()
                    .push([jvm, postgres, 0.0]);
                rates
                    .entry(format!("{table} debezium"))
                    .or_default()
                    .push(rate(drained.first_to_last));
                client
                    .execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                        &[&name],
                    )
                    .await?;
                client
                    .batch_execute(&format!("DROP PUBLICATION IF EXISTS {name}"))
                    .await?;
                line.push_str(&format!(
                    ", Debezium→discard {:.0}/s",
                    rate(drained.first_to_last)
                ));
            }
            if let Some(brokers) = &brokers {
                let name = format!("kafka_{table}_{round}");
                let cfg = config(&db, &name, table, Some(brokers))?;
                let (mut out, registry) =
                    KafkaOutput::from_config(&cfg, context(&db, &cfg)).await?;
                let cpu = Cpu::now();
                let (took, seen) = snapshot_into(&cfg, &mut out).await?;
                cpu_per_row
                    .entry(format!("{table} kafka"))
                    .or_default()
                    .push(cpu.per_row_since(rows));
                anyhow::ensure!(seen == rows, "Kafka snapshot emitted {seen} of {rows} rows");
                drop(out);
                drop(registry);
                drop_slot(&client, &cfg).await?;
                rates
                    .entry(format!("{table} kafka"))
                    .or_default()
                    .push(rate(took));
                let (key_bytes, value_bytes) = match record.get(table) {
                    Some(sizes) => *sizes,
                    None => {
                        let topic = format!("{name}.public.{table}");
                        let b = brokers.clone();
                        let sizes =
                            tokio::task::spawn_blocking(move || record_size(&b, &topic)).await??;
                        record.insert(table, sizes);
                        sizes
                    }
                };
                let bare_topic = format!("bare_{table}_{round}");
                create_topic(brokers, &bare_topic).await?;
                let b = brokers.clone();
                let cpu = Cpu::now();
                let bare = tokio::task::spawn_blocking(move || {
                    bare_producer(&b, &bare_topic, rows, key_bytes, value_bytes)
                })
                .await??;
                cpu_per_row
                    .entry(format!("{table} bare_producer"))
                    .or_default()
                    .push(cpu.per_row_since(rows));
                rates
                    .entry(format!("{table} bare_producer"))
                    .or_default()
                    .push(rate(bare));
                line.push_str(&format!(
                    ", bare producer→Apache Kafka {:.0}/s, tidemark→Apache Kafka {:.0}/s (records {key_bytes}+{value_bytes} bytes)",
                    rate(bare),
                    rate(took)
                ));
            }
            eprintln!("{line}");
        }
    }
    let m = |k: &str| median(rates.get(k).cloned().unwrap_or_default());
    // Per stage, the median over rounds of each stage's µs per row.
    let cpu = |k: &str| -> String {
        let runs = cpu_per_row.get(k).cloned().unwrap_or_default();
        let stage = |i: usize| median(runs.iter().map(|r| r[i]).collect());
        format!(
            "CPU µs/row: client {:.2}, PostgreSQL {:.2}, broker {:.2}",
            stage(0),
            stage(1),
            stage(2)
        )
    };
    println!(
        "\nsnapshot, median of {rounds} rounds (rows/s; CPU per stage, client = tidemark's process or psql):"
    );
    for table in ["narrow", "wide"] {
        let copy = m(&format!("{table} psql_copy"));
        println!(
            "  {table}: psql \\copy to /dev/null              {copy:>10.0}               {}",
            cpu(&format!("{table} psql_copy"))
        );
        for (label, key) in [("JSON to null", "json_null"), ("Avro to null", "avro_null")] {
            let value = m(&format!("{table} {key}"));
            println!(
                "  {table}: tidemark, {label:<24} {value:>10.0}  ratio to COPY {:.2}  {}",
                value / copy,
                cpu(&format!("{table} {key}"))
            );
        }
        if with_debezium {
            let debezium = m(&format!("{table} debezium"));
            let json = m(&format!("{table} json_null"));
            let runs = |k: &str| cpu_per_row.get(k).cloned().unwrap_or_default();
            let client_cpu = |k: &str| median(runs(k).iter().map(|r| r[0]).collect());
            println!(
                "  {table}: Debezium {DEBEZIUM_VERSION}, JSON to a discarding consumer {debezium:>10.0}  tidemark JSON→null ×{:.2}, per core ×{:.2}  {}",
                json / debezium,
                client_cpu(&format!("{table} debezium"))
                    / client_cpu(&format!("{table} json_null")),
                cpu(&format!("{table} debezium"))
            );
        }
        if brokers.is_some() {
            let bare = m(&format!("{table} bare_producer"));
            let kafka = m(&format!("{table} kafka"));
            println!(
                "  {table}: bare producer → Apache Kafka              {bare:>10.0}               {}",
                cpu(&format!("{table} bare_producer"))
            );
            println!(
                "  {table}: tidemark → Apache Kafka (Avro)           {kafka:>10.0}  ratio to bare producer {:.2}  {}",
                kafka / bare,
                cpu(&format!("{table} kafka"))
            );
        }
    }
    println!(
        "  peak RSS of the bench process: {:.0} MB",
        tidemark::testing::peak_rss_mib() as f64
    );
    Ok(())
}
