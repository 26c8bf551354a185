//! The quickstart: PostgreSQL → Kafka → DuckDB on this machine, end to end, then the proof
//! that the warehouse matches the source.
//!
//! It starts a private PostgreSQL (`wal_level=logical`), an Apache Kafka broker (KRaft, one node)
//! and tidemark's embedded schema registry; creates `public.accounts` with 1,000 rows; runs
//! tidemark's source and sink in-process ([`tidemark::pipeline::Pipeline`]) into
//! `warehouse/quickstart.duckdb`; runs a workload of inserts, updates and deletes for
//! `QUICKSTART_SECONDS` (default 10); waits until the pipeline has caught up; stops it; and
//! compares the warehouse with the source row by row (count and an md5 of every row).
//! Exits 1 when they differ.
//!
//! `scripts/quickstart.sh` installs what is missing and runs this.

use std::time::{Duration, Instant};

use tidemark::config::Config;
use tidemark::pipeline::Pipeline;
use tidemark::testing::{KafkaBroker, PgCluster};

const SEEDED: i64 = 1_000;

/// Every row as `id|owner|balance|updated µs`, hashed, then all hashed in id order.
const SOURCE_CHECKSUM: &str = "SELECT count(*)::text, md5(coalesce(string_agg(md5(concat_ws('|', a.id, a.owner, a.balance, (extract(epoch FROM a.updated_at) * 1000000)::bigint)), '' ORDER BY a.id), '')) FROM public.accounts a";
const WAREHOUSE_CHECKSUM: &str = "SELECT CAST(count(*) AS VARCHAR), md5(coalesce(string_agg(md5(concat_ws('|', a.id, a.owner, a.balance, epoch_us(a.updated_at))), '' ORDER BY a.id), '')) FROM public.accounts a";

fn step(text: &str, started: Instant) {
    eprintln!("[{:>5.1} s] {text}", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
                .unwrap_or_else(|_| "warn,rdkafka=off,librdkafka=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let seconds: u64 = std::env::var("QUICKSTART_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let started = Instant::now();

    step(
        "starting a private PostgreSQL 15 (wal_level=logical)",
        started,
    );
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("shop").await?;
    let client = db.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigserial PRIMARY KEY, owner text NOT NULL, \
             balance numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO accounts (owner, balance)
             SELECT 'owner-' || g, g * 1.25 FROM generate_series(1, {SEEDED}) g;"
        ))
        .await?;
    step(
        &format!("created public.accounts with {SEEDED} rows"),
        started,
    );

    step("starting an Apache Kafka broker (KRaft, one node)", started);
    let broker = KafkaBroker::shared()?;
    std::fs::create_dir_all("warehouse")?;
    let warehouse = std::path::Path::new("warehouse").join("quickstart.duckdb");
    // A new broker and a new database: offsets stored by an earlier run mean nothing.
    for stale in [warehouse.clone(), warehouse.with_extension("duckdb.wal")] {
        if stale.exists() {
            std::fs::remove_file(&stale)?;
        }
    }
    let config = Config::from_toml_with_env(
        &format!(
            "name = \"shop\"\n\
             [source]\nurl = \"{}\"\ntables = [\"public.*\"]\nsnapshot = \"initial\"\nstatus_interval_ms = 1000\n\
             [kafka]\nbrokers = \"{}\"\npartitions = 2\n\
             [registry]\nlisten = \"127.0.0.1:0\"\n\
             [sink]\nkind = \"duckdb\"\nurl = \"{}\"\nbatch_ms = 500\n",
            db.url(),
            broker.bootstrap,
            warehouse.display()
        ),
        "quickstart",
        std::iter::empty(),
    )?;

    step(
        "starting tidemark: snapshot, stream to Kafka (Avro, embedded registry), sink to DuckDB",
        started,
    );
    let pipeline = Pipeline::start(config).await?;
    if let Some(url) = pipeline.registry_url() {
        step(&format!("schema registry at {url}"), started);
    }

    step(
        &format!("running a workload of inserts, updates and deletes for {seconds} s"),
        started,
    );
    let workload_end = Instant::now() + Duration::from_secs(seconds);
    let mut transactions = 0u64;
    while Instant::now() < workload_end {
        transactions += 1;
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO accounts (owner, balance) VALUES ('new-{transactions}', {transactions}.50);
                 UPDATE accounts SET balance = balance + 10, updated_at = now()
                  WHERE id = (SELECT id FROM accounts ORDER BY random() LIMIT 1);
                 DELETE FROM accounts WHERE id = (SELECT id FROM accounts ORDER BY random() LIMIT 1)
                  AND {transactions} % 3 = 0;
                 COMMIT;"
            ))
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    step(
        &format!("{transactions} transactions written; waiting for the pipeline to catch up"),
        started,
    );
    pipeline.wait_caught_up(Duration::from_secs(180)).await?;
    let stats = pipeline.stop().await?;
    step(
        &format!(
            "caught up and stopped: {} events read, {} records applied to the warehouse",
            stats.source.events,
            stats.sink.map_or(0, |s| s.records)
        ),
        started,
    );

    let source = client.query_one(SOURCE_CHECKSUM, &[]).await?;
    let source: (String, String) = (source.get(0), source.get(1));
    let duck = duckdb::Connection::open(&warehouse)?;
    let warehouse_sum: (String, String) =
        duck.query_row(WAREHOUSE_CHECKSUM, [], |row| Ok((row.get(0)?, row.get(1)?)))?;
    println!();
    println!("| public.accounts | rows | md5 of every row |");
    println!("|---|---|---|");
    println!("| source (PostgreSQL) | {} | {} |", source.0, source.1);
    println!(
        "| warehouse ({}) | {} | {} |",
        warehouse.display(),
        warehouse_sum.0,
        warehouse_sum.1
    );
    println!();
    if source == warehouse_sum {
        println!(
            "warehouse matches source ({:.0} s in all)",
            started.elapsed().as_secs_f64()
        );
        println!(
            "look inside: duckdb {} \"SELECT * FROM public.accounts LIMIT 5\"",
            warehouse.display()
        );
        Ok(())
    } else {
        anyhow::bail!("the warehouse does not match the source")
    }
}
