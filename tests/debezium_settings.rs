//! Debezium's settings that change a column's form, set to other values than their
//! defaults on both sides, with Debezium itself as the oracle: `binary.handling.mode = hex`,
//! `hstore.handling.mode = map` and `unavailable.value.placeholder` (tidemark's `[events]
//! binary_handling_mode`, `hstore_handling_mode`, `unavailable_value_placeholder`), and
//! heartbeats every 300 ms on a topic named by `topic.heartbeat.prefix = beat` (tidemark's
//! `source.heartbeat_interval_ms`, `kafka.heartbeat_topic_prefix`). One
//! table of `bytea`, `bytea[]`, `hstore` and TOASTed `bytea`, `hstore`, `varbit`, `text`
//! and `int[]` (their placeholders when an update leaves them unchanged) is
//! snapshotted and streamed through Debezium's embedded engine and through tidemark (Apache
//! Kafka, JSON with schemas); every record's key, `before` and `after` must be equal, and so
//! must every column's schema but for the column-type parameter tidemark adds (see
//! `debezium_compat`, which covers the defaults).

use crate::common;

use std::time::Duration;

use common::debezium::{debezium_records, spawn_json_reader};
use common::kafka::{consume, drain};
use common::{database, exec};
use serde_json::Value as Json;
use tidemark::testing::KafkaBroker;

const TABLE: &str = "CREATE EXTENSION IF NOT EXISTS hstore;
    CREATE TABLE bs (id int PRIMARY KEY, b bytea, ba bytea[], hs hstore, t text,
      big_b bytea, big_hs hstore, big_vb varbit, big_t text, big_ia int[]);
    INSERT INTO bs VALUES (1, '\\x00ff10', '{\"\\\\x01\",NULL}', 'a=>1, b=>NULL', 'one',
      (SELECT decode(string_agg(md5(i::text), ''), 'hex') FROM generate_series(1, 600) i),
      (SELECT string_agg(format('%s=>%s', md5(i::text), md5((i + 1)::text)), ',')::hstore
         FROM generate_series(1, 300) i),
      (SELECT string_agg(('x' || md5(i::text))::bit(128)::text, '')::varbit FROM generate_series(1, 400) i),
      (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 600) i),
      (SELECT array_agg(('x' || substr(md5(i::text), 1, 7))::bit(28)::int) FROM generate_series(1, 2000) i))";

/// An update leaving the TOASTed columns unchanged, an insert with NULLs, a delete.
const STREAM: &[&str] = &[
    "UPDATE bs SET t = 'uno', b = '\\x' WHERE id = 1",
    "INSERT INTO bs (id, b, hs) VALUES (2, '\\xdeadbeef', '')",
    "DELETE FROM bs WHERE id = 2",
];

/// A Connect schema without tidemark's column-type parameter (Debezium writes none).
fn without_type_parameter(mut schema: Json) -> Json {
    if let Some(fields) = schema.get_mut("fields").and_then(Json::as_array_mut) {
        for field in fields {
            if let Some(object) = field.as_object_mut() {
                object.remove("parameters");
            }
        }
    }
    schema
}

#[tokio::test]
async fn binary_hstore_and_placeholder_settings_read_like_debeziums() {
    let (db, client) = database("dbz_settings").await;
    exec(&client, TABLE).await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let prefix = "dbzs";
    let (stop, task) = spawn_json_reader(
        &db,
        &client,
        broker,
        prefix,
        "heartbeat_interval_ms = 300\n",
        "heartbeat_topic_prefix = \"beat\"\n[events]\nbinary_handling_mode = \"hex\"\nhstore_handling_mode = \"map\"\n\
         unavailable_value_placeholder = \"N/A-toast\"\n",
    )
    .await;
    let debezium = debezium_records(
        &db,
        &client,
        &[
            ("name", prefix),
            ("topic.prefix", prefix),
            ("slot.name", "dbz_settings"),
            ("publication.name", "dbz_settings"),
            ("publication.autocreate.mode", "filtered"),
            ("table.include.list", "public.bs"),
            ("binary.handling.mode", "hex"),
            ("hstore.handling.mode", "map"),
            ("unavailable.value.placeholder", "N/A-toast"),
            ("heartbeat.interval.ms", "300"),
            ("topic.heartbeat.prefix", "beat"),
            // tidemark's own heartbeats are logical messages in the same database.
            ("message.prefix.exclude.list", "tidemark\\.heartbeat"),
        ],
        STREAM,
    )
    .await;
    let topic = format!("{prefix}.public.bs");
    let ours = drain(&broker.bootstrap, &topic, false, Duration::from_secs(3)).await;
    let heartbeat_topic = format!("beat.{prefix}");
    // Heartbeats keep coming: read the first few.
    let our_beats = consume(&broker.bootstrap, &heartbeat_topic, 3).await;
    let _ = stop.send(true);
    task.await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));

    let theirs: Vec<&tidemark::testing::DebeziumRecord> =
        debezium.iter().filter(|r| r.topic == topic).collect();
    // The snapshot row, the update, the insert, the delete and its tombstone.
    assert_eq!(theirs.len(), 5, "Debezium's records: {theirs:?}");
    assert_eq!(ours.len(), theirs.len(), "tidemark's records");
    for (index, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
        let ours_value = ours.value.clone().unwrap_or(Json::Null);
        let ours_key: Json = ours
            .key
            .as_deref()
            .map(|k| serde_json::from_slice(k).unwrap_or_else(|e| panic!("key: {e}")))
            .unwrap_or(Json::Null);
        assert_eq!(
            ours_key["payload"], theirs.key["payload"],
            "record {index}: key"
        );
        if theirs.value.is_null() {
            assert!(ours_value.is_null(), "record {index}: a tombstone");
            continue;
        }
        for row in ["before", "after"] {
            assert_eq!(
                ours_value["payload"][row], theirs.value["payload"][row],
                "record {index}: {row}"
            );
        }
        let row_schema =
            |value: &Json| without_type_parameter(value["schema"]["fields"][1].clone());
        assert_eq!(
            row_schema(&ours_value),
            row_schema(&theirs.value),
            "record {index}: the row's schema"
        );
    }
    same_heartbeats(&debezium, &heartbeat_topic, &our_beats);
    // The update left the TOASTed columns unchanged: each holds the placeholder in its
    // form, and hex, map and the placeholder forms were all exercised.
    let update = &theirs[1].value["payload"]["after"];
    assert_eq!(update["b"], "");
    assert!(update["big_hs"].is_object(), "{update}");
    assert_eq!(update["big_t"], "N/A-toast");
    assert_eq!(theirs[0].value["payload"]["after"]["b"], "00ff10");
}

/// Heartbeats on the topic both name from `topic.heartbeat.prefix`: each side wrote some,
/// with equal keys (schema and payload: the connector's name), and equal value schemas but
/// for the position tidemark adds (`lsn`, an optional field a Debezium reader ignores); the
/// values' `ts_ms` is the time each connector wrote it (run-specific).
fn same_heartbeats(
    debezium: &[tidemark::testing::DebeziumRecord],
    topic: &str,
    ours: &[common::kafka::Record],
) {
    let theirs: Vec<_> = debezium.iter().filter(|r| r.topic == topic).collect();
    assert!(!theirs.is_empty(), "Debezium wrote no heartbeat to {topic}");
    assert!(!ours.is_empty(), "tidemark wrote no heartbeat to {topic}");
    let their_key = &theirs[0].key;
    let their_schema = &theirs[0].value["schema"];
    for (index, beat) in ours.iter().enumerate() {
        let key: Json = beat
            .key
            .as_deref()
            .map(|k| serde_json::from_slice(k).unwrap_or_else(|e| panic!("key: {e}")))
            .unwrap_or(Json::Null);
        assert_eq!(&key, their_key, "heartbeat {index}: the key");
        let value = beat.value.clone().unwrap_or(Json::Null);
        let mut schema = value["schema"].clone();
        let fields = schema["fields"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("heartbeat {index}: no fields in {value}"));
        let lsn = fields
            .iter()
            .position(|f| f["field"] == "lsn")
            .unwrap_or_else(|| panic!("heartbeat {index}: no lsn in {value}"));
        assert_eq!(fields[lsn]["optional"], true, "the added lsn is optional");
        fields.remove(lsn);
        assert_eq!(
            &schema, their_schema,
            "heartbeat {index}: the value's schema"
        );
        assert!(
            value["payload"]["ts_ms"].as_i64().is_some_and(|ts| ts > 0),
            "heartbeat {index}: {value}"
        );
    }
    for beat in &theirs {
        assert_eq!(&beat.key, their_key, "Debezium's heartbeat keys differ");
        assert!(
            beat.value["payload"]["ts_ms"].as_i64().is_some(),
            "{beat:?}"
        );
    }
}
