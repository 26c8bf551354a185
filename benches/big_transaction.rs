//! Memory while one huge transaction streams through: a single transaction inserting
//! several million rows (~100 bytes each), drained by tidemark from its slot into Kafka
//! (Apache Kafka, at least once) and into a null output (JSON lines thrown away).
//!
//! PostgreSQL streams a transaction this large to the reader in chunks before it commits
//! (protocol 2, `streaming = on`; the bench cluster sets `logical_decoding_work_mem` to
//! 64 kB). tidemark must not publish a transaction before its commit, so it holds the
//! chunks: up to `stream_memory_mb` (default 64) in memory, the rest spilled to a file, and
//! emits the transaction at its commit. The bench reports the peak resident set of the
//! process during each drain (`VmHWM`, reset before the drain), next to the resident set
//! before it and the transaction's size in WAL, and the bytes the reader spilled.
//!
//! `cargo bench --bench big_transaction`; `BIG_ROWS` (default 3000000), `BIG_KAFKA=0` to
//! skip the broker.

use std::time::Instant;

use tidemark::capture::reader::{ReaderStats, run_reader};
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::output::{EventOutput, JsonLinesOutput};
use tidemark::testing::{PgCluster, TestDatabase};

mod common;
use common::{CountingOutput, env_number, reset_peak_rss, status_mib};

/// What one drain of the big transaction measured.
struct Measured {
    seconds: f64,
    rss_before: f64,
    peak_rss: f64,
    stats: ReaderStats,
}

async fn drain<O: EventOutput>(config: &Config, inner: O, rows: u64) -> anyhow::Result<Measured> {
    let (mut output, stop) = CountingOutput::new(inner, rows);
    reset_peak_rss()?;
    let rss_before = status_mib("self", "VmRSS")?;
    let started = Instant::now();
    let stats = run_reader(config, &mut output, stop).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss = status_mib("self", "VmHWM")?;
    anyhow::ensure!(
        output.seen >= rows,
        "tidemark delivered {} of the transaction's {rows} rows",
        output.seen
    );
    Ok(Measured {
        seconds,
        rss_before,
        peak_rss,
        stats,
    })
}

fn config(db: &TestDatabase, slot: &str, brokers: Option<&str>) -> anyhow::Result<Config> {
    let kafka = brokers.map_or_else(String::new, |brokers| {
        format!("[kafka]\nbrokers = \"{brokers}\"\nformat = \"json\"\ntopic_prefix = \"{slot}\"\n")
    });
    Ok(Config::from_toml_with_env(
        &format!(
            "name = \"{slot}\"\n[source]\nurl = \"{}\"\nslot = \"{slot}\"\npublication = \"big\"\nsnapshot = \"never\"\n{kafka}",
            db.url()
        ),
        "bench",
        std::iter::empty(),
    )?)
}

fn context(db: &TestDatabase, slot: &str) -> EnvelopeContext {
    EnvelopeContext::new(slot, &db.name)
}

fn report(what: &str, rows: u64, m: &Measured) {
    println!(
        "  {what:<34} {:>8.0} rows/s   RSS before {:>6.0} MiB, peak {:>6.0} MiB   streamed chunks held in memory at most {:>5.1} MiB, spilled {:>6.0} MiB",
        rows as f64 / m.seconds,
        m.rss_before,
        m.peak_rss,
        m.stats.peak_stream_memory as f64 / 1_048_576.0,
        m.stats.spilled_bytes as f64 / 1_048_576.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rows = env_number("BIG_ROWS", 3_000_000);
    let with_kafka = std::env::var("BIG_KAFKA").map_or(true, |v| v != "0");
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("big").await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz); \
             CREATE PUBLICATION big FOR TABLE big;",
        )
        .await?;
    for slot in ["big_null", "big_kafka"] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
    }
    let started = Instant::now();
    let before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "INSERT INTO big SELECT g, 'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now() \
             FROM generate_series(1, {rows}) g"
        ))
        .await?;
    let wal_bytes: i64 = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
            &[&before],
        )
        .await?
        .get(0);
    eprintln!(
        "one transaction of {rows} rows ({:.0} MiB of WAL) written in {:.1?}",
        wal_bytes as f64 / 1_048_576.0,
        started.elapsed()
    );

    let null_config = config(&db, "big_null", None)?;
    let null = drain(
        &null_config,
        JsonLinesOutput::new(tokio::io::sink(), "null", context(&db, "big_null")),
        rows,
    )
    .await?;
    let kafka = if with_kafka {
        let brokers = common::warm_broker().await?;
        let config = config(&db, "big_kafka", Some(&brokers))?;
        let settings = config
            .kafka
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no [kafka]"))?;
        let output = KafkaOutput::connect(&settings, context(&db, "big_kafka")).await?;
        Some(drain(&config, output, rows).await?)
    } else {
        None
    };

    println!(
        "one transaction of {rows} rows (~100 B each, {:.0} MiB of WAL), stream_memory_mb = {}:",
        wal_bytes as f64 / 1_048_576.0,
        null_config.source.stream_memory_mb
    );
    report("tidemark, JSON to null", rows, &null);
    if let Some(kafka) = &kafka {
        report("tidemark → Apache Kafka, at-least-once", rows, kafka);
    }
    Ok(())
}
