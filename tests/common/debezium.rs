//! Running both sides of a comparison with Debezium: tidemark writing JSON with schemas to
//! Apache Kafka, and Debezium's embedded engine on the same database.

use std::collections::BTreeMap;
use std::time::Duration;

use tidemark::config::Config;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{DebeziumRecord, KafkaBroker, TestDatabase, run_debezium};

use super::{Background, exec, spawn_reader};

/// tidemark reading `db` (snapshot, then the stream) into Kafka as JSON with schemas under
/// topic prefix `prefix`, with `extra` TOML appended (`[events]` settings, or keys of
/// `[kafka]`, which comes last before it).
pub async fn spawn_json_reader(
    db: &TestDatabase,
    client: &tokio_postgres::Client,
    broker: &KafkaBroker,
    prefix: &str,
    extra: &str,
) -> Background {
    let text = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\nsnapshot = \"initial\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"json\"\njson_schemas = true\n{extra}",
        db.url(),
        broker.bootstrap
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let context = config.envelope_context().unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no [kafka]"));
    let output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spawn_reader(config, output, client).await
}

/// Debezium's records of `db` with `settings` (Debezium's own keys): its snapshot, then
/// `stream` executed once it streams, until it has been idle for 5 s.
pub async fn debezium_records(
    db: &TestDatabase,
    client: &tokio_postgres::Client,
    settings: &[(&str, &str)],
    stream: &[&str],
) -> Vec<DebeziumRecord> {
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    run_debezium(
        db,
        &settings,
        Duration::from_secs(5),
        Duration::from_secs(180),
        || async {
            for sql in stream {
                exec(client, sql).await;
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}
