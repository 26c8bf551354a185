//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod debezium;
pub mod drill;
pub mod kafka;
pub mod sink;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use tidemark::capture::reader::{ReaderError, ReaderStats, run_reader};
use tidemark::config::Config;
use tidemark::domain::event::{ChangeEvent, Op};
use tidemark::domain::value::Value;
use tidemark::output::EventOutput;
use tidemark::testing::{CollectedEvents, MemoryOutput, PgCluster, TestDatabase};

/// A fresh database in the shared cluster and a superuser client to it.
pub async fn database(label: &str) -> (TestDatabase, tokio_postgres::Client) {
    // TIDEMARK_TEST_LOG=debug (an EnvFilter) shows the connector's logs in test output.
    if let Ok(filter) = std::env::var("TIDEMARK_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database(label)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    (db, client)
}

/// A config for `db` with `[source]` lines added.
pub fn config(db: &TestDatabase, name: &str, source_extra: &str) -> Config {
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n{source_extra}\n",
        db.url()
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

/// Rows as text (re-exported for the tests; not every test binary uses it).
#[allow(unused_imports)]
pub use tidemark::pg::text_rows;

/// Runs SQL, panicking with the statement on failure.
pub async fn exec(client: &tokio_postgres::Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", tidemark::pg::describe(&e)));
}

/// A reader running in the background with a memory output.
pub struct Running {
    pub events: CollectedEvents,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<Result<ReaderStats, ReaderError>>,
}

impl Running {
    /// Starts the reader in the background without waiting for anything (a snapshot may
    /// run long before the slot streams).
    pub fn spawn(config: Config) -> Running {
        let (mut output, events) = MemoryOutput::new();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(async move { run_reader(&config, &mut output, rx).await });
        Running {
            events,
            shutdown,
            task,
        }
    }

    /// Starts the reader and waits until its slot is streaming.
    pub async fn start(config: Config, client: &tokio_postgres::Client) -> Running {
        let (output, events) = MemoryOutput::new();
        let (shutdown, task) = spawn_reader(config, output, client).await;
        Running {
            events,
            shutdown,
            task,
        }
    }

    /// Waits until at least `count` events arrived.
    pub async fn wait_for_events(&mut self, count: usize) -> Vec<ChangeEvent> {
        let start = Instant::now();
        while self.events.len() < count {
            if self.task.is_finished() {
                match (&mut self.task).await {
                    Ok(Err(e)) => panic!("reader failed after {} events: {e}", self.events.len()),
                    other => panic!("reader ended after {} events: {other:?}", self.events.len()),
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {} of {count} events after 60 s",
                self.events.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.events.snapshot()
    }

    /// Waits until the snapshot's last row (`source.snapshot = "last"`) arrived.
    pub async fn wait_for_last_snapshot_row(&self) {
        wait_until(
            "the snapshot's last row",
            Duration::from_secs(60),
            || async {
                self.events
                    .lock()
                    .iter()
                    .any(|e| e.source.snapshot == tidemark::domain::event::SnapshotMarker::Last)
            },
        )
        .await;
    }

    /// Panics if the reader has stopped.
    pub fn check_alive(&self) {
        assert!(!self.task.is_finished(), "the reader stopped early");
    }

    /// Waits (up to 120 s) for the reader to end by itself, and returns its result.
    pub async fn finished(self) -> Result<ReaderStats, ReaderError> {
        match tokio::time::timeout(Duration::from_secs(120), self.task).await {
            Ok(Ok(result)) => result,
            other => panic!("reader did not finish: {other:?}"),
        }
    }

    /// Stops gracefully and returns every event it delivered.
    pub async fn stop_and_collect(self) -> Vec<ChangeEvent> {
        let events = self.events.clone();
        self.stop().await;
        events.snapshot()
    }

    /// Stops gracefully and returns the reader's result.
    pub async fn stop(self) -> ReaderStats {
        let _ = self.shutdown.send(true);
        match tokio::time::timeout(Duration::from_secs(60), self.task).await {
            Ok(Ok(Ok(stats))) => stats,
            Ok(Ok(Err(e))) => panic!("reader failed: {e}"),
            Ok(Err(e)) => panic!("reader task: {e}"),
            Err(_) => panic!("reader did not stop within 30 s"),
        }
    }
}

/// A reader running in the background: its stop signal and its task.
pub type Background = (
    watch::Sender<bool>,
    JoinHandle<Result<ReaderStats, ReaderError>>,
);

/// Starts the reader with `output` in the background and waits until its slot is
/// streaming; panics with the reader's error if it ends first, or after 20 s.
pub async fn spawn_reader<O: EventOutput + 'static>(
    config: Config,
    mut output: O,
    client: &tokio_postgres::Client,
) -> Background {
    let slot = config.source.slot.clone();
    let (shutdown, rx) = watch::channel(false);
    let mut task = tokio::spawn(async move { run_reader(&config, &mut output, rx).await });
    let start = Instant::now();
    loop {
        if slot_holds(client, &slot, "active").await {
            return (shutdown, task);
        }
        if task.is_finished() {
            match (&mut task).await {
                Ok(Err(e)) => panic!("reader failed to start: {e}"),
                other => panic!("reader ended before streaming: {other:?}"),
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "slot {slot} not active after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a reader started by [`spawn_reader`] and returns what it did; panics if it failed.
pub async fn stop_background((shutdown, task): Background) -> ReaderStats {
    let _ = shutdown.send(true);
    task.await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("source: {e}"))
}

/// Whether `predicate` (SQL over `pg_replication_slots`' columns) holds for slot `slot` on
/// the server of `client`; false when there is no such slot or the query fails.
pub async fn slot_holds(client: &tokio_postgres::Client, slot: &str, predicate: &str) -> bool {
    client
        .query_one(
            &format!(
                "SELECT coalesce((SELECT ({predicate})::bool FROM pg_replication_slots WHERE slot_name = $1), false)"
            ),
            &[&slot],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
}

/// Polls `check` every 50 ms until it holds, or panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `column` in an event's `after` (or `before` when `after` is absent).
pub fn column<'a>(event: &'a ChangeEvent, column: &str) -> &'a Value {
    let table = event
        .table
        .as_ref()
        .unwrap_or_else(|| panic!("event without table: {event:?}"));
    let index = table
        .columns
        .iter()
        .position(|c| c.name == column)
        .unwrap_or_else(|| panic!("no column {column} in {}", table.name));
    let row = event
        .after
        .as_ref()
        .or(event.before.as_ref())
        .unwrap_or_else(|| panic!("no row in {event:?}"));
    &row[index]
}

/// The ops of a list of events.
pub fn ops(events: &[ChangeEvent]) -> Vec<Op> {
    events.iter().map(|e| e.op).collect()
}

/// A config from TOML text (no environment overrides), its publication and slot set up.
pub async fn set_up(text: &str) -> tidemark::config::Config {
    let config = tidemark::config::Config::from_toml_with_env(text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    config
}

/// The slot's confirmed flush position.
pub async fn confirmed(client: &tokio_postgres::Client, slot: &str) -> tidemark::domain::lsn::Lsn {
    let text: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// The server's current WAL position.
pub async fn current_wal(client: &tokio_postgres::Client) -> tidemark::domain::lsn::Lsn {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// The server's `server_version_num` (e.g. 130023), for tests whose expectations differ by
/// PostgreSQL major.
pub async fn server_version(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0)
}

/// A `tracing` writer into a shared buffer, to read what was logged.
#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// A buffer that receives this process's `tracing` output from `level` up (the test's
    /// own process under nextest).
    pub fn install(level: tracing::Level) -> LogBuffer {
        let log = LogBuffer::default();
        let writer = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .try_init();
        log
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// `id → v` as the events describe the table `acct (id bigint PRIMARY KEY, v bigint)` of
/// the failover and standby tests.
pub fn acct_replay(events: &[ChangeEvent]) -> BTreeMap<i64, i64> {
    let mut state = BTreeMap::new();
    let int = |v: &Value| match v {
        Value::Int64(n) => *n,
        Value::Int32(n) => i64::from(*n),
        other => panic!("unexpected {other:?}"),
    };
    for event in events {
        if event.table.as_ref().is_none_or(|t| t.name != "acct") {
            continue;
        }
        match event.op {
            Op::Read | Op::Create | Op::Update => {
                let row = event.after.as_ref().expect("after");
                state.insert(int(&row[0]), int(&row[1]));
            }
            Op::Delete => {
                let row = event.before.as_ref().expect("before");
                state.remove(&int(&row[0]));
            }
            _ => {}
        }
    }
    state
}

/// `id → v` in the table `acct` as `client` reads it.
pub async fn acct_table(client: &tokio_postgres::Client) -> BTreeMap<i64, i64> {
    try_acct_table(client)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`acct_table`], or the error (a warehouse before its sink created the table).
pub async fn try_acct_table(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<i64, i64>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT id::bigint, v::bigint FROM acct", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
