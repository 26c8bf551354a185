//! Running both sides of a comparison with Debezium: tidemark writing JSON with schemas to
//! Apache Kafka, and Debezium's embedded engine on the same database.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value as Json;
use tidemark::config::Config;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{DebeziumRecord, KafkaBroker, TestDatabase, run_debezium};

use super::{Background, exec, spawn_reader};

/// tidemark reading `db` (snapshot, then the stream) into Kafka as JSON with schemas under
/// topic prefix `prefix`, with `source` TOML added to `[source]` and `extra` TOML appended
/// (`[events]` settings, or keys of `[kafka]`, which comes last before it).
pub async fn spawn_json_reader(
    db: &TestDatabase,
    client: &tokio_postgres::Client,
    broker: &KafkaBroker,
    prefix: &str,
    source: &str,
    extra: &str,
) -> Background {
    let text = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\nsnapshot = \"initial\"\nstatus_interval_ms = 200\n{source}\
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

/// Every path where `theirs` and `ours` differ, with both values: objects by key; arrays of
/// named fields (objects with a `name_key`: `field` in Connect schemas, `name` in Avro) by
/// name, and their order over the fields both sides have as a `[order]` difference of its
/// own; other arrays by position. A JSON document written as a string
/// (`io.debezium.data.Json`, an hstore's pairs) is compared as the document: the order of an
/// object's keys is no data (Debezium writes an hstore's pairs in Java's HashMap order,
/// tidemark by key).
pub fn diff(
    path: &str,
    theirs: &Json,
    ours: &Json,
    name_key: &str,
    found: &mut impl FnMut(String, String),
) {
    let names = |items: &[Json]| -> Option<Vec<String>> {
        if items.is_empty() {
            return None;
        }
        items
            .iter()
            .map(|f| Some(f.get(name_key)?.as_str()?.to_owned()))
            .collect()
    };
    match (theirs, ours) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&child, x, y, name_key, found),
                    (Some(x), None) => found(child, format!("only Debezium's: {}", short(x))),
                    (None, Some(y)) => found(child, format!("only tidemark's: {}", short(y))),
                    (None, None) => {}
                }
            }
        }
        (Json::Array(a), Json::Array(b)) if names(a).is_some() && names(b).is_some() => {
            let (names_a, names_b) = (names(a).unwrap_or_default(), names(b).unwrap_or_default());
            let common = |mine: &[String], other: &[String]| -> Vec<String> {
                mine.iter().filter(|n| other.contains(n)).cloned().collect()
            };
            if common(&names_a, &names_b) != common(&names_b, &names_a) {
                found(
                    format!("{path}[order]"),
                    format!("Debezium {names_a:?}, tidemark {names_b:?}"),
                );
            }
            let by_name = |names: Vec<String>, items: &[Json]| -> Json {
                Json::Object(names.into_iter().zip(items.iter().cloned()).collect())
            };
            diff(
                path,
                &by_name(names_a, a),
                &by_name(names_b, b),
                name_key,
                found,
            );
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                found(
                    format!("{path}[len]"),
                    format!("Debezium {}, tidemark {}", short(theirs), short(ours)),
                );
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, name_key, found);
            }
        }
        (Json::String(x), Json::String(y)) if x != y && same_document(x, y) => {}
        (x, y) if x != y => found(
            path.to_owned(),
            format!("Debezium {}, tidemark {}", short(x), short(y)),
        ),
        _ => {}
    }
}

/// Whether two strings are the same JSON object, keys in any order.
fn same_document(x: &str, y: &str) -> bool {
    match (
        serde_json::from_str::<Json>(x),
        serde_json::from_str::<Json>(y),
    ) {
        (Ok(a @ Json::Object(_)), Ok(b @ Json::Object(_))) => a == b,
        _ => false,
    }
}

/// A value's JSON cut to 80 characters, for a difference's detail.
pub fn short(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
