//! The quickstart demo: starts a private PostgreSQL, creates `public.accounts`, runs a small
//! workload, and streams every change to stdout as JSON lines, exactly as
//! `tidemark run --output stdout` does. Progress goes to stderr.
//!
//! `cargo run --release --example demo` (`DEMO_SECONDS`, default 10, sets the duration).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use tidemark::capture::reader::run_reader;
use tidemark::config::Config;
use tidemark::output::JsonLinesOutput;
use tidemark::testing::PgCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("starting a private PostgreSQL (wal_level=logical)...");
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("demo").await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL, \
             tags text[], updated_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let config = Config::from_toml_with_env(
        &format!(
            "name = \"demo\"\n[source]\nurl = \"{}\"\ntables = [\"public.*\"]\nsnapshot = \"never\"\nstatus_interval_ms = 1000\n",
            db.url()
        ),
        "demo",
        std::iter::empty(),
    )?;
    let context = config.envelope_context()?;
    let (stop, stopped) = watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut output = JsonLinesOutput::new(tokio::io::stdout(), "stdout", context);
        run_reader(&config, &mut output, stopped).await
    });
    // Wait until the slot streams, so the workload's first change is captured.
    let start = Instant::now();
    while !client
        .query_one("SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = 'tidemark_demo'), false)", &[])
        .await?
        .get::<_, bool>(0)
    {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "the connector did not start streaming");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "streaming changes of public.accounts to stdout for {seconds} s while a workload runs..."
    );
    let workload_end = Instant::now() + Duration::from_secs(seconds);
    let mut step = 0u64;
    while Instant::now() < workload_end {
        step += 1;
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO accounts (owner, balance, tags) VALUES ('owner-{step}', {step}.50, '{{new,demo}}');
                 UPDATE accounts SET balance = balance + 10, updated_at = now() WHERE id = (SELECT max(id) FROM accounts);
                 COMMIT;"
            ))
            .await?;
        if step % 3 == 0 {
            client
                .batch_execute("DELETE FROM accounts WHERE id = (SELECT min(id) FROM accounts)")
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop.send(true);
    let stats = reader.await??;
    eprintln!(
        "done: {} events in {} transactions, position {} confirmed to PostgreSQL",
        stats.events, stats.transactions, stats.confirmed
    );
    Ok(())
}
