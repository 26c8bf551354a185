//! Debezium through an Avro converter as the oracle of tidemark's Avro output: one workload
//! captured by Debezium's PostgreSQL connector (its records turned into what a Kafka Connect
//! worker with an Avro converter registers and writes, through Kafka Connect's Avro
//! translation: Apicurio Registry's `AvroData`, forked from Confluent's, whose converter
//! Maven Central does not serve; `tidemark::testing::avro_with_connect`) and by tidemark
//! (Apache Kafka, Avro, the embedded registry), two slots side by side. Each record's key and
//! value schemas (as registered) and data (decoded with its own schema) are compared, and
//! every difference, reduced to its path, must be one of [`KNOWN`] with its reason; a new
//! difference fails the test, and so does a listed one that no longer occurs. tidemark's
//! records are then read back as a Kafka Connect sink with an Avro converter reads them
//! (`tidemark::testing::connect_from_avro`): every one must be accepted, with Debezium's op,
//! key and row columns.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::debezium::{debezium_records, diff};
use common::kafka::{consume, drain};
use common::sink::avro_output;
use common::{database, exec, spawn_reader};
use serde_json::Value as Json;
use tidemark::config::Config;
use tidemark::schema::registry_client::RegistryClient;
use tidemark::testing::{ConnectAvro, KafkaBroker, avro_with_connect, connect_from_avro};

const TABLE: &str = "CREATE TYPE av_mood AS ENUM ('sad', 'happy');
    CREATE TABLE av (id int PRIMARY KEY, i2 int2, i8 int8 NOT NULL DEFAULT 7, b bool, f4 real, f8 float8,
      n numeric(10,2), nu numeric, txt text, vc varchar(10), d date, tm time, tm3 time(3),
      ts timestamp, ts3 timestamp(3), tstz timestamptz, ttz timetz, iv interval, u uuid, j jsonb,
      by bytea, arr int[], tarr text[], m money, b3 bit(3), mo av_mood, dn int DEFAULT 5);
    INSERT INTO av VALUES (1, 1, 10, true, 1.5, 2.25, 12.34, 123.456, 'one', 'v1', '2024-01-02',
      '03:04:05.25', '03:04:05.678', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.678',
      '2024-01-02 03:04:05.5+02', '01:02:03.5+02', '1 day 02:00:00', '6f1c1c1e-0000-4000-8000-000000000001',
      '{\"a\": 1}', '\\x0102', '{1,NULL,3}', '{a,NULL}', 12.5, B'101', 'happy', 1),
      (2, NULL, 20, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

/// An insert, an update, a delete and a primary-key change; a transactional and a
/// non-transactional logical message.
const STREAM: &[&str] = &[
    "INSERT INTO av (id, i8, txt, tstz) VALUES (3, 30, 'three', '2025-06-01 12:00:00.000001+00')",
    "SELECT pg_logical_emit_message(true, 'orders', 'paid')",
    "SELECT pg_logical_emit_message(false, 'audit', 'login')",
    "UPDATE av SET txt = 'uno', n = 99.99 WHERE id = 1",
    "DELETE FROM av WHERE id = 2",
    "UPDATE av SET id = 4 WHERE id = 3",
];

/// Paths that differ between two runs by nature: the connectors' processing times (and a
/// non-transactional message's, which has no commit time: each connector stamps its own).
const RUN_SPECIFIC: &[&str] = &[
    "value.data.ts_ms",
    "value.data.ts_us",
    "value.data.ts_ns",
    "value.data.source.ts_ms",
    "value.data.source.ts_us",
    "value.data.source.ts_ns",
    "message:value.data.ts_ms",
    "message:value.data.source.ts_ms",
    "message:value.data.source.ts_us",
    "message:value.data.source.ts_ns",
    "transaction:value.data.ts_ms",
];

const OPTIONAL_IN_AVRO: &str = "Avro keeps NOT NULL columns optional, defaults kept ([T, \"null\"] with the default; connect_schema::avro_value_schema): a registry refuses a field turning required as incompatible, so with Debezium's required fields an ALTER COLUMN ... SET NOT NULL stops the pipeline; the values are equal";
const SNAPSHOT_POSITION: &str = "snapshot rows only: each connector's own slot's consistent point and snapshot transaction (two slots; streamed rows are equal)";
const ADDITIVE: &str = "tidemark's additions, which a Debezium reader ignores";
const END_ID: &str = "END records: Debezium writes END when the next transaction begins, with that position (the next transaction's first change) in its id; tidemark's END has the id of its BEGIN and its events (as in JSON)";
const MESSAGE_COUNT: &str = "a transactional logical message: Debezium counts it under an internal collection (LogicalDecodingMessageMonitor), tidemark counts table events only (as in JSON)";

/// The differences that remain, as patterns of paths (`*` matches anything) with why:
/// every difference found must match one, and every one must match a difference found, so
/// the list shrinks as the Avro output follows Debezium's. `schema` paths are in the
/// registered Avro schemas (`value.schema.fields.row`: the `before`/`after` row record),
/// `data` paths in the decoded records.
const KNOWN: &[(&str, &str)] = &[
    (
        "value.data.row.dn",
        "an explicit NULL in a column with a default (dn, snapshot row 2): Debezium's JSON, which the oracle starts from, already holds the default (JsonConverter's replace.null.with.default); tidemark writes the NULL, the same deliberate difference as in JSON (what an Avro converter fed Debezium's records directly writes is not observed here)",
    ),
    // i8 is the table's one NOT NULL value column (the key is required on both sides).
    (
        "value.schema.fields.row.type[1].fields.i8.type",
        OPTIONAL_IN_AVRO,
    ),
    (
        "value.schema.fields.source.type.fields.commit_lsn",
        ADDITIVE,
    ),
    ("value.schema.fields.source.type.fields.seq", ADDITIVE),
    ("value.data.source.commit_lsn", ADDITIVE),
    ("value.data.source.seq", ADDITIVE),
    ("*.unchanged_toast", ADDITIVE),
    ("*.truncate", ADDITIVE),
    ("value.data.source.lsn", SNAPSHOT_POSITION),
    ("value.data.source.sequence", SNAPSHOT_POSITION),
    ("value.data.source.txId", SNAPSHOT_POSITION),
    (
        "value.data.source.version",
        "source.version is the connector's own version",
    ),
    (
        "message:value.data.source.version",
        "source.version is the connector's own version",
    ),
    (
        "message:*transactional",
        "tidemark's message.transactional: additive",
    ),
    ("message:*commit_lsn", ADDITIVE),
    ("message:*seq", ADDITIVE),
    ("transaction:*.id", END_ID),
    (
        "transaction:value.data.data_collections[len]",
        MESSAGE_COUNT,
    ),
    ("transaction:value.data.event_count", MESSAGE_COUNT),
];

/// Whether `path` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, rest)) => {
            path.starts_with(head)
                && (head.len()..=path.len())
                    .any(|at| path.is_char_boundary(at) && matches(rest, &path[at..]))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidemark_avro_reads_like_debezium_through_an_avro_converter() {
    let (db, client) = database("dbz_avro").await;
    exec(&client, TABLE).await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let prefix = "dbza";
    let text = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\nsnapshot = \"initial\"\nstatus_interval_ms = 200\n\
         heartbeat_interval_ms = 300\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"avro\"\ntransaction_metadata = true\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{}\"\n",
        db.url(),
        broker.bootstrap,
        db.name
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let (output, _registry, registry_url) = avro_output(&config, &db.name).await;
    let registry = RegistryClient::new(&registry_url, &config.registry.clone().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, task) = spawn_reader(config, output, &client).await;
    let debezium = debezium_records(
        &db,
        &client,
        &[
            ("name", prefix),
            ("topic.prefix", prefix),
            ("slot.name", "dbz_avro"),
            ("publication.name", "dbz_avro"),
            ("publication.autocreate.mode", "filtered"),
            ("table.include.list", "public.av"),
            ("provide.transaction.metadata", "true"),
            ("heartbeat.interval.ms", "300"),
            // tidemark's own heartbeats are logical messages in the same database.
            ("message.prefix.exclude.list", "tidemark\\.heartbeat"),
        ],
        STREAM,
    )
    .await;
    let table_topic = format!("{prefix}.public.av");
    let topics = [
        (table_topic.clone(), ""),
        (format!("{prefix}.message"), "message:"),
        (format!("{prefix}.transaction"), "transaction:"),
    ];
    let mut ours_by_topic = Vec::new();
    for (topic, label) in &topics {
        ours_by_topic.push((
            topic.clone(),
            *label,
            drain(&broker.bootstrap, topic, false, Duration::from_secs(3)).await,
        ));
    }
    // Heartbeats keep coming: the first of tidemark's.
    let heartbeat_topic = format!("__debezium-heartbeat.{prefix}");
    let our_beat = consume(&broker.bootstrap, &heartbeat_topic, 1).await;
    let _ = stop.send(true);
    task.await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    same_heartbeat_schemas(&debezium, &heartbeat_topic, &our_beat[0], &registry).await;

    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut column_types = 0;
    let mut ours_avro = Vec::new();
    let mut inputs: Vec<(String, Json, Json)> = Vec::new();
    for (topic, label, ours) in &ours_by_topic {
        let topic_inputs: Vec<(String, Json, Json)> = debezium
            .iter()
            .filter(|r| &r.topic == topic)
            .map(|r| (r.topic.clone(), r.key.clone(), r.value.clone()))
            .collect();
        let theirs = avro_with_connect(&topic_inputs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if theirs.len() != ours.len() || theirs.is_empty() {
            found.insert(
                format!("{label}records"),
                format!(
                    "{topic}: Debezium {}, tidemark {}",
                    theirs.len(),
                    ours.len()
                ),
            );
        }
        // tidemark's records unframed, with the schemas they were registered under.
        let mut topic_avro = Vec::new();
        for record in ours {
            let (key_schema, key) = match record.key.as_deref() {
                Some(framed) => {
                    let (schema, data) = unframe(&registry, framed).await;
                    (schema, Some(data))
                }
                None => (Json::Null, None),
            };
            let (value_schema, value) = match record.raw.as_deref() {
                Some(framed) => {
                    let (schema, data) = unframe(&registry, framed).await;
                    (schema, Some(data))
                }
                None => (Json::Null, None),
            };
            topic_avro.push(ConnectAvro {
                topic: topic.clone(),
                key_schema,
                key,
                value_schema,
                value,
            });
        }
        for (index, (theirs, ours)) in theirs.iter().zip(&topic_avro).enumerate() {
            let mut record = |path: String, detail: String| {
                found
                    .entry(format!("{label}{}", kind_of(&path)))
                    .or_insert(format!("{topic} record {index}: {detail}"));
            };
            for (side, their_schema, their_data, our_schema, our_data) in [
                (
                    "key",
                    &theirs.key_schema,
                    theirs.key.as_deref(),
                    &ours.key_schema,
                    ours.key.as_deref(),
                ),
                (
                    "value",
                    &theirs.value_schema,
                    theirs.value.as_deref(),
                    &ours.value_schema,
                    ours.value.as_deref(),
                ),
            ] {
                // tidemark's column-type parameter is taken out of the value's schema (and
                // counted) before the schemas are compared, so every other difference in a
                // type shows. The key's schema is compared as it is: equal schemas get one
                // id in a registry, so the keys' bytes and partitions are Debezium's.
                let mut ours_without = our_schema.clone();
                if side == "value" {
                    column_types += strip_column_type(&mut ours_without);
                }
                diff(
                    &format!("{side}.schema"),
                    their_schema,
                    &ours_without,
                    "name",
                    &mut record,
                );
                diff(
                    &format!("{side}.data"),
                    &decoded(their_schema, their_data),
                    &decoded(our_schema, our_data),
                    "name",
                    &mut record,
                );
            }
        }
        ours_avro.extend(topic_avro);
        inputs.extend(topic_inputs);
    }
    assert!(
        column_types > 0,
        "tidemark's schemas carry each column's PostgreSQL type (the sink's exact warehouse types)"
    );
    // A Kafka Connect sink with an Avro converter reads every tidemark record (it refuses
    // none), with the op, key and row columns Debezium's records have.
    let read_back = connect_from_avro(&ours_avro)
        .await
        .unwrap_or_else(|e| panic!("a Connect Avro consumer reading tidemark's records: {e}"));
    assert_eq!(read_back.len(), ours_avro.len());
    for (index, ((_, key, value), theirs)) in read_back.iter().zip(&inputs).enumerate() {
        if theirs.0 != table_topic {
            continue;
        }
        assert_eq!(
            key["payload"], theirs.1["payload"],
            "record {index}: the key read back"
        );
        let payload = |v: &Json, row: &str| -> Vec<String> {
            v["payload"][row]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            value["payload"]["op"], theirs.2["payload"]["op"],
            "record {index}: op"
        );
        for row in ["before", "after"] {
            assert_eq!(
                payload(value, row),
                payload(&theirs.2, row),
                "record {index}: the {row} columns read back"
            );
        }
    }
    for path in RUN_SPECIFIC {
        found.remove(*path);
    }
    for (kind, detail) in &found {
        eprintln!("{kind}: {detail}");
    }
    // The first rule a path matches explains it.
    let rule_of = |path: &str| KNOWN.iter().position(|(pattern, _)| matches(pattern, path));
    let new: Vec<String> = found
        .iter()
        .filter(|(path, _)| rule_of(path).is_none())
        .map(|(path, detail)| format!("  (\"{path}\", \"{detail}\"),"))
        .collect();
    let used: BTreeSet<usize> = found.keys().filter_map(|path| rule_of(path)).collect();
    let gone: Vec<&str> = KNOWN
        .iter()
        .enumerate()
        .filter(|(index, _)| !used.contains(index))
        .map(|(_, (pattern, _))| *pattern)
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "differences from Debezium {} through Kafka Connect's Avro translation (Apicurio {}):\n{}\nlisted but no longer found: {gone:?}",
        tidemark::testing::DEBEZIUM_VERSION,
        tidemark::testing::AVRO_DATA_VERSION,
        new.join("\n")
    );
}

/// Debezium's first heartbeat through Kafka Connect's Avro translation against tidemark's
/// `ours` as registered: equal key schemas and keys (the connector's name), equal value
/// schemas but for the position tidemark adds (`lsn`, `["null", "long"]` with a `null`
/// default, so a registry holding Debezium's schema for the subject accepts tidemark's as a
/// compatible evolution), and a `ts_ms` on both.
async fn same_heartbeat_schemas(
    debezium: &[tidemark::testing::DebeziumRecord],
    topic: &str,
    ours: &common::kafka::Record,
    registry: &RegistryClient,
) {
    let first: Vec<(String, Json, Json)> = debezium
        .iter()
        .filter(|r| r.topic == topic)
        .take(1)
        .map(|r| (r.topic.clone(), r.key.clone(), r.value.clone()))
        .collect();
    assert!(!first.is_empty(), "Debezium wrote no heartbeat to {topic}");
    let theirs = avro_with_connect(&first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let theirs = &theirs[0];
    let framed_key = ours
        .key
        .as_deref()
        .unwrap_or_else(|| panic!("a heartbeat without a key"));
    let (key_schema, key) = unframe(registry, framed_key).await;
    assert_eq!(key_schema, theirs.key_schema, "the heartbeat key's schema");
    assert_eq!(
        decoded(&key_schema, Some(&key)),
        decoded(&theirs.key_schema, theirs.key.as_deref()),
        "the heartbeat's key"
    );
    let framed = ours
        .raw
        .as_deref()
        .unwrap_or_else(|| panic!("a heartbeat without a value"));
    let (value_schema, value) = unframe(registry, framed).await;
    let data = decoded(&value_schema, Some(&value));
    let mut schema = value_schema.clone();
    let fields = schema["fields"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no fields: {value_schema}"));
    let lsn = fields
        .iter()
        .position(|f| f["name"] == "lsn")
        .unwrap_or_else(|| panic!("no lsn: {value_schema}"));
    assert_eq!(
        fields[lsn],
        serde_json::json!({"name": "lsn", "type": ["null", "long"], "default": null}),
        "the added position is optional"
    );
    fields.remove(lsn);
    assert_eq!(schema, theirs.value_schema, "the heartbeat value's schema");
    assert!(data["ts_ms"].as_i64().is_some_and(|ts| ts > 0), "{data}");
    assert!(data["lsn"].as_i64().is_some_and(|lsn| lsn > 0), "{data}");
}

/// Takes tidemark's `__debezium.source.column.type` Connect parameter out of an Avro schema
/// (dropping `connect.parameters` when it was the only one, and writing a type left with no
/// property as its bare name, as Avro does); returns how many it took.
fn strip_column_type(schema: &mut Json) -> usize {
    let mut taken = 0;
    match schema {
        Json::Array(items) => {
            for item in items {
                taken += strip_column_type(item);
            }
        }
        Json::Object(object) => {
            if let Some(Json::Object(parameters)) = object.get_mut("connect.parameters") {
                if parameters.remove("__debezium.source.column.type").is_some() {
                    taken += 1;
                }
                if parameters.is_empty() {
                    object.remove("connect.parameters");
                }
            }
            for value in object.values_mut() {
                taken += strip_column_type(value);
            }
            if object.len() == 1 && object.get("type").is_some_and(Json::is_string) {
                let bare = object.remove("type").unwrap_or(Json::Null);
                *schema = bare;
            }
        }
        _ => {}
    }
    taken
}

/// A Confluent-framed record's registered schema (JSON) and its Avro binary.
async fn unframe(registry: &RegistryClient, framed: &[u8]) -> (Json, Vec<u8>) {
    assert!(
        framed.len() >= 5 && framed[0] == 0,
        "not Confluent-framed: {framed:?}"
    );
    let id = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]);
    let schema = registry
        .schema(id)
        .await
        .unwrap_or_else(|e| panic!("schema {id}: {e}"));
    let schema: Json = serde_json::from_str(&schema).unwrap_or_else(|e| panic!("{e}"));
    (schema, framed[5..].to_vec())
}

/// Avro binary decoded with its schema, as JSON (`tidemark::schema::avro::connect_json_value`:
/// unions by their branch's value, bytes and decimals as base64, logical types as their
/// underlying numbers).
fn decoded(schema: &Json, data: Option<&[u8]>) -> Json {
    let Some(data) = data else {
        return Json::Null;
    };
    let schema = apache_avro::Schema::parse(schema).unwrap_or_else(|e| panic!("{e}: {schema}"));
    let value = tidemark::schema::avro::read_datum(&schema, &mut &data[..])
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::schema::avro::connect_json_value(&value)
}

/// The kind of a difference: `before` and `after` (their fields, schemas alike) are one
/// `row`.
fn kind_of(path: &str) -> String {
    path.replace(".before.", ".row.")
        .replace(".after.", ".row.")
        .replace(".fields.before", ".fields.row")
        .replace(".fields.after", ".fields.row")
}
