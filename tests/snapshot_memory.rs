//! Memory stays bounded while a table of millions of rows is snapshotted: rows flow through
//! a bounded channel to the output, whatever the table's size. Each nextest test is its own
//! process, so the process's peak RSS (`VmHWM`) measures the connector alone; PostgreSQL runs
//! in its own processes.

use crate::common;

use std::time::Duration;

use common::{database, exec};
use tidemark::capture::reader::run_reader;
use tidemark::config::Config;
use tidemark::domain::event::ChangeEvent;
use tidemark::domain::lsn::Lsn;
use tidemark::output::{EventOutput, OffsetStore, OutputError};
use tokio::sync::watch;

/// Counts rows and checks each one, keeping nothing.
#[derive(Default)]
struct Counting {
    rows: u64,
    id_sum: i128,
    acknowledged: Lsn,
}

impl OffsetStore for Counting {}

impl EventOutput for Counting {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        self.rows += 1;
        if let Some(tidemark::domain::value::Value::Int64(id)) =
            event.after.as_ref().and_then(|r| r.first())
        {
            self.id_sum += i128::from(*id);
        }
        Ok(())
    }
    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.acknowledged = self.acknowledged.max(end_lsn);
        Ok(())
    }
    fn abort(&mut self) {}
    fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }
    async fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_rows_in_bounded_memory() {
    const ROWS: i64 = 2_000_000;
    let (db, client) = database("snap_memory").await;
    exec(
        &client,
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz); \
             INSERT INTO big SELECT g, 'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now() \
             FROM generate_series(1, {ROWS}) g;"
        ),
    )
    .await;
    let heap_mb: i64 = client
        .query_one("SELECT pg_relation_size('big') / 1048576", &[])
        .await
        .expect("size")
        .get(0);
    let text = format!(
        "name = \"memory\"\n[source]\nurl = \"{}\"\nsnapshot = \"initial_only\"\nsnapshot_workers = 2\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty()).expect("config");
    let before = tidemark::testing::peak_rss_mib();
    let mut output = Counting::default();
    let (_stop, rx) = watch::channel(false);
    let stats = tokio::time::timeout(
        Duration::from_secs(240),
        run_reader(&config, &mut output, rx),
    )
    .await
    .expect("the snapshot finished in time")
    .expect("the snapshot succeeded");
    let grown = tidemark::testing::peak_rss_mib().saturating_sub(before);
    assert_eq!(stats.snapshot_rows, ROWS as u64);
    assert_eq!(output.rows, ROWS as u64);
    assert_eq!(
        output.id_sum,
        i128::from(ROWS) * i128::from(ROWS + 1) / 2,
        "every row once"
    );
    // The table's heap alone is larger than this bound; holding its events would be several
    // times larger still.
    assert!(heap_mb >= 150, "the table is {heap_mb} MB");
    assert!(
        grown < 100,
        "peak RSS grew by {grown} MB while {ROWS} rows ({heap_mb} MB of heap) were read"
    );
    eprintln!("peak RSS grew by {grown} MB for {ROWS} rows ({heap_mb} MB of heap)");
}
