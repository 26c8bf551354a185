//! End-to-end drain: the same backlog of row changes in identical slots, drained by
//! tidemark (decoded, assembled, serialized to JSON, discarded) and by `pg_recvlogical`
//! (pgoutput with the same options, raw bytes to /dev/null), alternating, in one run.
//! Reports rows/s of each and the ratio. `pg_recvlogical` is the walsender's own ceiling: the
//! server decodes WAL single-threaded, and that is the rate no client can beat.
//!
//! `cargo bench --bench drain`; `DRAIN_ROWS` (default 500000) and `DRAIN_ROUNDS` (default 3)
//! change the size. Rows are ~100 bytes, 100 per transaction.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use tidemark::config::Config;
use tidemark::event::{ChangeEvent, EnvelopeContext};
use tidemark::lsn::Lsn;
use tidemark::output::{EventOutput, JsonLinesOutput, OutputError};
use tidemark::source::reader::run_reader;
use tidemark::testing::PgCluster;

/// JSON lines into nothing, stopping the reader once `target` events are acknowledged.
struct CountingOutput {
    inner: JsonLinesOutput<tokio::io::Sink>,
    target: u64,
    seen: u64,
    done: watch::Sender<bool>,
}

impl EventOutput for CountingOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        self.seen += 1;
        self.inner.send(event).await
    }
    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.inner.commit(end_lsn).await?;
        if self.seen >= self.target {
            self.inner.flush().await?;
            let _ = self.done.send(true);
        }
        Ok(())
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
    fn acknowledged(&self) -> Lsn {
        self.inner.acknowledged()
    }
    async fn flush(&mut self) -> Result<(), OutputError> {
        self.inner.flush().await
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn drain_with_tidemark(
    cluster: &PgCluster,
    db: &str,
    slot: &str,
    rows: u64,
) -> anyhow::Result<Duration> {
    let text = format!(
        "name = \"bench\"\n[source]\nurl = \"{}\"\nslot = \"{slot}\"\npublication = \"bench\"\nsnapshot = \"never\"\n",
        cluster.url("postgres", db)
    );
    let config = Config::from_toml_with_env(&text, "bench", std::iter::empty())?;
    let context = EnvelopeContext {
        prefix: "bench".into(),
        connector_name: "bench".into(),
        database: db.into(),
    };
    let (done, stop) = watch::channel(false);
    let mut output = CountingOutput {
        inner: JsonLinesOutput::new(tokio::io::sink(), "null", context),
        target: rows,
        seen: 0,
        done,
    };
    let start = Instant::now();
    let stats = run_reader(&config, &mut output, stop).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        output.seen >= rows,
        "tidemark saw {} of {rows} rows ({stats:?})",
        output.seen
    );
    Ok(elapsed)
}

fn drain_with_pg_recvlogical(
    cluster: &PgCluster,
    db: &str,
    slot: &str,
    end: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new(cluster.binary("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args([
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
            "--endpos",
            end,
        ])
        .args([
            "-o",
            "proto_version=2",
            "-o",
            "publication_names=bench",
            "-o",
            "messages=true",
            "-o",
            "streaming=on",
        ])
        .output()?;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "pg_recvlogical failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = env_number("DRAIN_ROWS", 500_000);
    let rounds = env_number("DRAIN_ROUNDS", 3);
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("drain").await?;
    let client = db.connect().await?;
    client
        .batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz); CREATE PUBLICATION bench FOR TABLE orders;")
        .await?;
    let slots: Vec<(String, String)> = (0..rounds)
        .map(|i| (format!("tm_{i}"), format!("recv_{i}")))
        .collect();
    for (a, b) in &slots {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[a],
            )
            .await?;
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[b],
            )
            .await?;
    }
    let transactions = rows / 100;
    let load_start = Instant::now();
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP \
               INSERT INTO orders SELECT g, 'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now() \
               FROM generate_series(i * 100, i * 100 + 99) g; COMMIT; END LOOP; END $$;",
            transactions - 1
        ))
        .await?;
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    eprintln!(
        "backlog: {rows} rows in {transactions} transactions, written in {:.1?}",
        load_start.elapsed()
    );

    let mut tidemark_rates = Vec::new();
    let mut recv_rates = Vec::new();
    for (tm_slot, recv_slot) in &slots {
        let recv = drain_with_pg_recvlogical(cluster, &db.name, recv_slot, &end)?;
        let tm = drain_with_tidemark(cluster, &db.name, tm_slot, rows).await?;
        let (tm_rate, recv_rate) = (
            rows as f64 / tm.as_secs_f64(),
            rows as f64 / recv.as_secs_f64(),
        );
        eprintln!(
            "round: tidemark {tm:.2?} ({tm_rate:.0} rows/s), pg_recvlogical {recv:.2?} ({recv_rate:.0} rows/s), ratio {:.2}",
            tm_rate / recv_rate
        );
        tidemark_rates.push(tm_rate);
        recv_rates.push(recv_rate);
    }
    let (tm, recv) = (median(tidemark_rates), median(recv_rates));
    println!(
        "drain bench: {rows} rows of ~100 B, 100 rows per transaction, {rounds} rounds (median)"
    );
    println!("  pg_recvlogical (walsender ceiling): {recv:>10.0} rows/s");
    println!("  tidemark, JSON to null:             {tm:>10.0} rows/s");
    println!("  ratio tidemark / pg_recvlogical:    {:>10.2}", tm / recv);
    Ok(())
}
