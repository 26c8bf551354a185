//! A table without a primary key under `REPLICA IDENTITY FULL`, end to end: its records
//! carry no key (as Debezium's), all on partition 0, and the sink applies its updates and
//! deletes by the whole old row, one warehouse row each, so exact duplicate rows, NULLs
//! and a type without equality (`point`) come out equal to the source, in Avro and in JSON
//! with Connect schemas, into a PostgreSQL warehouse and (Avro) into DuckDB.

use crate::common;

use std::time::Duration;

use common::kafka::drain;
use common::sink::{RunningSink, avro_output, spawn_sink, stop_sink};
use common::{database, exec, spawn_reader, text_rows};
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{KafkaBroker, TestDatabase};

/// Rows before the connector starts (read by the snapshot): two equal rows, and NULLs.
const SEED: &str = "CREATE TABLE log (n int, note text, p point);
     ALTER TABLE log REPLICA IDENTITY FULL;
     INSERT INTO log VALUES (1, 'a', '(1,1)'), (1, 'a', '(1,1)'), (2, NULL, NULL), (3, 'c', '(3,3)')";

/// Streamed changes: one of two equal rows updated, then deleted; a row with NULLs
/// updated; a row inserted, updated and deleted in one transaction (so in one batch).
const STREAM: &[&str] = &[
    "INSERT INTO log VALUES (4, 'd', '(4,4)'), (4, 'd', '(4,4)')",
    "UPDATE log SET note = 'a2' WHERE ctid = (SELECT ctid FROM log WHERE n = 1 LIMIT 1)",
    "UPDATE log SET note = 'b', p = '(2,2)' WHERE n = 2",
    "DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE n = 4 LIMIT 1)",
    "DELETE FROM log WHERE n = 3",
    "BEGIN; INSERT INTO log VALUES (5, 'e', NULL); UPDATE log SET note = 'e2' WHERE n = 5; \
     DELETE FROM log WHERE n = 5; INSERT INTO log VALUES (6, NULL, '(6,6)'); COMMIT",
    "UPDATE log SET n = 7 WHERE n = 6",
];

const ROWS: &str = "SELECT n::text, note, p::text FROM public.log ORDER BY 1, 2, 3";

/// Where the sink writes.
enum Warehouse {
    /// A PostgreSQL database.
    Postgres(TestDatabase, tokio_postgres::Client),
    /// A DuckDB file.
    #[cfg(feature = "duckdb")]
    DuckDb {
        /// Kept for its lifetime: the file's directory.
        _dir: tempfile::TempDir,
        path: String,
    },
}

impl Warehouse {
    fn sink(&self) -> String {
        match self {
            Warehouse::Postgres(db, _) => format!("kind = \"postgres\"\nurl = \"{}\"", db.url()),
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb { path, .. } => format!("kind = \"duckdb\"\nurl = \"{path}\""),
        }
    }

    /// The warehouse's rows as [`ROWS`] reads them; none while the table does not exist.
    async fn rows(&self) -> common::sink::Rows {
        match self {
            Warehouse::Postgres(_, client) => text_rows(client, ROWS).await.unwrap_or_default(),
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb { path, .. } => {
                if !common::sink::duck_has_table(path, "log") {
                    return Vec::new();
                }
                common::sink::duck_rows(
                    path,
                    "SELECT CAST(n AS VARCHAR), note, CAST(p AS VARCHAR) FROM public.log ORDER BY 1, 2, 3",
                )
            }
        }
    }
}

/// The sink under test, restartable.
struct Sink {
    running: Option<RunningSink>,
    config: Config,
    registry_url: String,
}

impl Sink {
    /// Reads the warehouse until `done` holds of its rows (at most 90 s) and returns them.
    /// DuckDB admits one open database per file, so its rows are read with the sink
    /// stopped, which is started again after (resuming from the offsets it stored).
    async fn wait_for(
        &mut self,
        warehouse: &Warehouse,
        done: impl Fn(&common::sink::Rows) -> bool,
    ) -> common::sink::Rows {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let stopped = match warehouse {
                Warehouse::Postgres(..) => false,
                #[cfg(feature = "duckdb")]
                Warehouse::DuckDb { .. } => true,
            };
            if stopped {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if let Some(running) = self.running.take() {
                    stop_sink(running).await;
                }
            } else if self.running.as_ref().is_some_and(|r| r.1.is_finished()) {
                panic!("the sink ended early");
            }
            let rows = warehouse.rows().await;
            if stopped {
                self.running = Some(spawn_sink(self.config.clone(), &self.registry_url));
            }
            if done(&rows) || tokio::time::Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn config(db: &TestDatabase, warehouse: &Warehouse, name: &str, kafka: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 3\n{kafka}\n\
         [sink]\n{}\ngroup = \"{name}-sink\"\nbatch_rows = 500\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap,
        warehouse.sink()
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

async fn keyless_table_lands_equal(label: &str, kafka: &str, duckdb: bool) {
    let (db, client) = database(label).await;
    exec(&client, SEED).await;
    let warehouse = if duckdb {
        duck()
    } else {
        let (db, client) = database(&format!("{label}_wh")).await;
        Warehouse::Postgres(db, client)
    };
    // Unique per run: the broker, and its topics, can outlive a test run.
    let name = db.name.clone();
    let config = config(&db, &warehouse, &name, kafka);
    let (output, _registry, registry_url) = if kafka.contains("json") {
        let context = EnvelopeContext::new(&config.name, &db.name);
        let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no [kafka]"));
        let output = KafkaOutput::connect(&kafka, context)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // JSON needs no registry; the sink is given an address it never calls.
        (output, None, "http://127.0.0.1:9".to_owned())
    } else {
        avro_output(&config, &db.name).await
    };
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    let mut sink = Sink {
        running: Some(spawn_sink(config.clone(), &registry_url)),
        config: config.clone(),
        registry_url,
    };
    let seeded = sink.wait_for(&warehouse, |rows| rows.len() == 4).await;
    assert_eq!(
        seeded.len(),
        4,
        "the snapshot's rows in the warehouse: {seeded:?}"
    );
    for sql in STREAM {
        exec(&client, sql).await;
    }
    let expected = text_rows(&client, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!source.is_finished(), "the source ended early");
    let actual = sink.wait_for(&warehouse, |rows| *rows == expected).await;
    let _ = stop_source.send(true);
    source
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("source: {e}"));
    if let Some(running) = sink.running.take() {
        stop_sink(running).await;
    }
    assert_eq!(
        actual, expected,
        "the warehouse holds the source's rows, duplicates included"
    );

    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let records = drain(
        &broker.bootstrap,
        &format!("{name}.public.log"),
        false,
        Duration::from_secs(2),
    )
    .await;
    assert!(records.len() >= 14, "{} records", records.len());
    for record in &records {
        assert!(record.key.is_none(), "a keyless table's record has no key");
        assert_eq!(record.partition, 0, "keyless records keep one partition");
    }
}

#[cfg(feature = "duckdb")]
fn duck() -> Warehouse {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("wh.duckdb").display().to_string();
    Warehouse::DuckDb { _dir: dir, path }
}

#[cfg(not(feature = "duckdb"))]
fn duck() -> Warehouse {
    panic!("DuckDB is not built in (the duckdb feature)")
}

fn avro(name: &str) -> String {
    format!("[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_full_table_lands_equal_from_avro() {
    keyless_table_lands_equal("keyless_avro", &avro("keylessavro"), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_full_table_lands_equal_from_json_with_schemas() {
    keyless_table_lands_equal(
        "keyless_json",
        "format = \"json\"\njson_schemas = true",
        false,
    )
    .await;
}

#[cfg(feature = "duckdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_full_table_lands_equal_in_duckdb() {
    keyless_table_lands_equal("keyless_duck", &avro("keylessduck"), true).await;
}
