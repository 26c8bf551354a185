//! The warehouse sink as a consumer group and through a schema-change drill, end to end on a
//! real PostgreSQL source, Apache Kafka (Avro with the embedded registry) and a PostgreSQL
//! warehouse (which, unlike a DuckDB file, several sink processes can write at once):
//!
//! - two sink instances share the partitions of one group; one leaves mid-stream and comes
//!   back; the warehouse ends equal to the source with nothing doubled;
//! - each DDL of the registry drill in turn (ADD, RENAME with captured DDL, ALTER TYPE,
//!   SET NOT NULL, DROP, a new primary key, CREATE TABLE, DROP TABLE) with rows between
//!   them ends equal, and the renamed column is renamed in the warehouse, not re-added
//!   (`on_incompatible = "relax"`: a new primary key is not backward compatible).

use crate::common;

use std::time::Duration;

use common::sink::{Rows, RunningSink, avro_output, spawn_sink, stop_sink};
use common::{database, exec, spawn_reader};
use tidemark::capture::reader::{ReaderError, ReaderStats};
use tidemark::config::Config;
use tidemark::schema::registry_http::EmbeddedRegistry;
use tidemark::sink::SinkStats;
use tidemark::testing::{KafkaBroker, TestDatabase};
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn config(db: &TestDatabase, name: &str, warehouse: &TestDatabase, extra_source: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n{extra_source}\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 4\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\non_incompatible = \"relax\"\n\
         [sink]\nkind = \"postgres\"\nurl = \"{}\"\ngroup = \"{name}-sink\"\nbatch_rows = 200\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap,
        warehouse.url()
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

/// The source streaming into Kafka with the embedded registry.
struct Source {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<ReaderStats, ReaderError>>,
    registry_url: String,
    _registry: Option<EmbeddedRegistry>,
}

impl Source {
    /// Starts the source; `setup` runs `tidemark setup` first (DDL capture needs it; it
    /// also refuses keyless tables without REPLICA IDENTITY FULL).
    async fn start(config: &Config, client: &tokio_postgres::Client, setup: bool) -> Source {
        if setup {
            tidemark::source::setup::setup(config)
                .await
                .unwrap_or_else(|e| panic!("setup: {e}"));
        }
        let (output, registry, registry_url) = avro_output(config, "test").await;
        let (stop, task) = spawn_reader(config.clone(), output, client).await;
        Source {
            stop,
            task,
            registry_url,
            _registry: registry,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("source: {e}"));
    }
}

/// A sink instance running in the background.
struct Sink(RunningSink);

impl Sink {
    fn start(config: &Config, registry_url: &str) -> Sink {
        Sink(spawn_sink(config.clone(), registry_url))
    }

    async fn stop(self) -> SinkStats {
        stop_sink(self.0).await
    }
}

/// Rows as text, or none while the query fails (a table not created yet).
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    common::text_rows(client, sql).await.unwrap_or_default()
}

/// Waits until `sql` gives the same rows on the warehouse as on the source.
async fn wait_equal(
    source: &tokio_postgres::Client,
    warehouse: &tokio_postgres::Client,
    sql: &str,
) {
    let expected = rows(source, sql).await;
    assert!(!expected.is_empty(), "the source has rows for {sql}");
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        last = rows(warehouse, sql).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing = expected.iter().filter(|r| !last.contains(r)).count();
    let extra = last.iter().filter(|r| !expected.contains(r)).count();
    panic!(
        "{sql}: the warehouse has {} rows, the source {}; {missing} missing, {extra} extra; first source row {:?}, first warehouse row {:?}",
        last.len(),
        expected.len(),
        expected.first(),
        last.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sink_instances_share_the_partitions_and_a_rebalance_loses_and_doubles_nothing() {
    let (db, client) = database("sink_group").await;
    let (warehouse_db, warehouse) = database("sink_group_wh").await;
    exec(
        &client,
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint, owner text);
         CREATE TABLE ledger (n int, amount bigint);",
    )
    .await;
    let config = config(&db, "sinkgroup", &warehouse_db, "");
    let source = Source::start(&config, &client, false).await;
    let first = Sink::start(&config, &source.registry_url);
    let second = Sink::start(&config, &source.registry_url);
    let round = |r: i32| {
        format!(
            "INSERT INTO accounts SELECT {r} * 1000 + g, g, 'o' || g FROM generate_series(1, 250) g;
             UPDATE accounts SET balance = balance + 7 WHERE id % 3 = {r} % 3;
             DELETE FROM accounts WHERE id % 13 = {r} % 13;
             INSERT INTO ledger SELECT g, g * {r} FROM generate_series(1, 100) g;"
        )
    };
    // The topics appear with the first changes; each instance finds them at its next
    // metadata refresh (5 s) and the group rebalances, so both hold partitions after this.
    exec(&client, &round(0)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    for r in 1..4 {
        exec(&client, &round(r)).await;
    }
    let accounts = "SELECT id::text, balance::text, owner FROM public.accounts ORDER BY id";
    let ledger = "SELECT count(*)::text, sum(amount)::text FROM public.ledger";
    wait_equal(&client, &warehouse, accounts).await;
    wait_equal(&client, &warehouse, ledger).await;
    // The second instance leaves: the first takes its partitions from the warehouse's
    // offsets while writes go on; then it comes back and the partitions are shared again.
    let second_stats = second.stop().await;
    for r in 4..8 {
        exec(&client, &round(r)).await;
    }
    let third = Sink::start(&config, &source.registry_url);
    for r in 8..12 {
        exec(&client, &round(r)).await;
    }
    wait_equal(&client, &warehouse, accounts).await;
    wait_equal(&client, &warehouse, ledger).await;
    // Settle, then look again: nothing arrives twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rows(&warehouse, ledger).await, rows(&client, ledger).await);
    let (first_stats, third_stats) = (first.stop().await, third.stop().await);
    assert!(
        first_stats.applied > 0 && second_stats.applied > 0,
        "both instances applied changes: {first_stats:?} {second_stats:?}"
    );
    let offsets = rows(
        &warehouse,
        "SELECT count(*)::text FROM public.__tidemark_offsets WHERE consumer_group = 'sinkgroup-sink' AND topic = 'sinkgroup.public.accounts'",
    )
    .await;
    assert_eq!(
        offsets,
        vec![vec![Some("4".to_string())]],
        "every partition's offset is stored in the warehouse ({third_stats:?})"
    );
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_drill_with_captured_ddl_ends_equal_in_the_warehouse() {
    let (db, client) = database("sink_drill").await;
    let (warehouse_db, warehouse) = database("sink_drill_wh").await;
    exec(
        &client,
        "CREATE TABLE drill (id int PRIMARY KEY, code text NOT NULL, qty int, label text);",
    )
    .await;
    let config = config(&db, "sinkdrill", &warehouse_db, "ddl_capture = true");
    let source = Source::start(&config, &client, true).await;
    let sink = Sink::start(&config, &source.registry_url);
    let mut next = 0;
    let mut write = |extra_columns: &str, extra_values: &str| {
        next += 100;
        format!(
            "INSERT INTO drill (id, code{extra_columns}) SELECT {next} + g, 'c{next}-' || g{extra_values} FROM generate_series(1, 50) g;
             UPDATE drill SET code = code || '+' WHERE id % 7 = 0;
             DELETE FROM drill WHERE id % 11 = 0;"
        )
    };
    let check = |columns: &str| format!("SELECT {columns} FROM public.drill ORDER BY id");
    exec(&client, &write(", qty, label", ", g, 'l' || g")).await;
    wait_equal(
        &client,
        &warehouse,
        &check("id::text, code, qty::text, label"),
    )
    .await;

    // ADD COLUMN
    exec(&client, "ALTER TABLE drill ADD COLUMN note text").await;
    exec(&client, &write(", qty, label, note", ", g, 'l', 'n' || g")).await;
    wait_equal(
        &client,
        &warehouse,
        &check("id::text, code, qty::text, label, note"),
    )
    .await;

    // RENAME COLUMN (captured): the warehouse renames, keeping the values of old rows.
    exec(&client, "ALTER TABLE drill RENAME COLUMN label TO title").await;
    exec(&client, &write(", qty, title", ", g, 't' || g")).await;
    let renamed = check("id::text, code, qty::text, title, note");
    wait_equal(&client, &warehouse, &renamed).await;

    // ALTER TYPE (a widening), then values only the wider type holds.
    exec(&client, "ALTER TABLE drill ALTER COLUMN qty TYPE bigint").await;
    exec(&client, &write(", qty", ", g * 10000000000")).await;
    wait_equal(&client, &warehouse, &renamed).await;

    // SET NOT NULL
    exec(
        &client,
        "UPDATE drill SET note = coalesce(note, '-'); ALTER TABLE drill ALTER COLUMN note SET NOT NULL",
    )
    .await;
    exec(&client, &write(", note", ", 'nn'")).await;
    wait_equal(&client, &warehouse, &renamed).await;

    // DROP COLUMN: kept in the warehouse (nullable) by default.
    exec(&client, "ALTER TABLE drill DROP COLUMN qty").await;
    exec(&client, &write(", note", ", 'after-drop'")).await;
    let after_drop = check("id::text, code, title, note");
    wait_equal(&client, &warehouse, &after_drop).await;

    // A new primary key.
    exec(
        &client,
        "ALTER TABLE drill DROP CONSTRAINT drill_pkey, ADD PRIMARY KEY (code)",
    )
    .await;
    exec(&client, &write(", note", ", 'new-key'")).await;
    wait_equal(&client, &warehouse, &after_drop).await;

    // CREATE TABLE and DROP TABLE.
    exec(
        &client,
        "CREATE TABLE drill_new (k text PRIMARY KEY, v numeric(10,3));
         INSERT INTO drill_new SELECT 'k' || g, g / 7.0 FROM generate_series(1, 40) g;",
    )
    .await;
    let new_table = "SELECT k, v::text FROM public.drill_new ORDER BY k";
    wait_equal(&client, &warehouse, new_table).await;
    let before_drop = rows(&client, new_table).await;
    exec(&client, "DROP TABLE drill_new").await;
    exec(&client, &write(", note", ", 'end'")).await;
    wait_equal(&client, &warehouse, &after_drop).await;
    assert_eq!(
        rows(&warehouse, new_table).await,
        before_drop,
        "a table dropped at the source keeps its rows in the warehouse"
    );

    let columns: Vec<String> = rows(
        &warehouse,
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'drill' ORDER BY ordinal_position",
    )
    .await
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    assert!(
        columns.contains(&"title".to_string()) && !columns.contains(&"label".to_string()),
        "label was renamed to title, not re-added: {columns:?}"
    );
    assert!(
        columns.contains(&"qty".to_string()),
        "the dropped column is kept: {columns:?}"
    );
    let qty_type = rows(
        &warehouse,
        "SELECT data_type::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'drill' AND column_name = 'qty'",
    )
    .await;
    assert_eq!(qty_type, vec![vec![Some("bigint".to_string())]]);
    sink.stop().await;
    source.stop().await;
}
