//! Helpers of the warehouse sink's end-to-end tests: the source's Kafka output with the
//! embedded registry, a sink running in the background, and rows read from a DuckDB file.

use tokio::sync::watch;
use tokio::task::JoinHandle;

use tidemark::config::Config;
use tidemark::kafka::KafkaOutput;
use tidemark::schema::registry_http::EmbeddedRegistry;
use tidemark::sink::{SinkError, SinkOptions, SinkStats, run_sink};

/// Rows as text.
pub type Rows = Vec<Vec<Option<String>>>;

/// The Kafka output of `config`'s connector for database `database`, with the embedded
/// registry it started (kept alive by the caller) and that registry's URL.
pub async fn avro_output(
    config: &Config,
    database: &str,
) -> (KafkaOutput, Option<EmbeddedRegistry>, String) {
    let mut context = config.envelope_context().unwrap_or_else(|e| panic!("{e}"));
    context.database = database.to_owned();
    let (output, registry) = KafkaOutput::from_config(config, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = registry
        .as_ref()
        .map(|r| r.url())
        .unwrap_or_else(|| panic!("the test config starts the embedded registry"));
    (output, registry, url)
}

/// A running sink: send `true` to stop it.
pub type RunningSink = (
    watch::Sender<bool>,
    JoinHandle<Result<SinkStats, SinkError>>,
);

/// Runs the sink of `config` in the background, reading schemas from `registry_url`.
pub fn spawn_sink(config: Config, registry_url: &str) -> RunningSink {
    let options = SinkOptions {
        registry_url: Some(registry_url.to_owned()),
        ..SinkOptions::default()
    };
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { run_sink(&config, options, rx).await });
    (stop, task)
}

/// Stops a sink and returns what it did; panics if it failed.
pub async fn stop_sink((stop, task): RunningSink) -> SinkStats {
    let _ = stop.send(true);
    task.await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("sink: {e}"))
}

/// The rows of `sql` in the DuckDB file at `path`, every column read as text.
#[cfg(feature = "duckdb")]
pub fn duck_rows(path: &str, sql: &str) -> Rows {
    let connection = duckdb::Connection::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut statement = connection
        .prepare(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = statement
        .query_map([], |row| {
            (0..row.as_ref().column_count())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Whether the DuckDB file at `path` has a table `name` (in any schema).
#[cfg(feature = "duckdb")]
pub fn duck_has_table(path: &str, name: &str) -> bool {
    let count = duck_rows(
        path,
        &format!(
            "SELECT CAST(count(*) AS VARCHAR) FROM information_schema.tables WHERE table_name = '{name}'"
        ),
    );
    count != vec![vec![Some("0".to_string())]]
}

/// A pipeline's configuration for the end-to-end sink tests: the source `db` (named after
/// it, unique per run: the broker and its topics outlive a run), Apache Kafka with Avro and
/// the embedded registry, and a PostgreSQL warehouse `warehouse`; `source_extra` and
/// `sink_extra` are more lines of those sections.
pub fn avro_to_postgres_config(
    db: &tidemark::testing::TestDatabase,
    warehouse: &tidemark::testing::TestDatabase,
    source_extra: &str,
    sink_extra: &str,
) -> Config {
    let broker = tidemark::testing::KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let name = &db.name;
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n{source_extra}\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 2\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\n\
         [sink]\nkind = \"postgres\"\nurl = \"{}\"\ngroup = \"{name}-sink\"\nbatch_rows = 500\nbatch_ms = 200\n{sink_extra}\n",
        db.url(),
        broker.bootstrap,
        warehouse.url()
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}
