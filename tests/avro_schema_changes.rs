//! Avro through the schema registry, end to end on a real PostgreSQL, a real broker (Apache Kafka)
//! and the embedded registry: a drill of DDL changes with rows written before and after
//! each, every record decoded with the schema its id names (by apache-avro, by
//! `schema_registry_converter`, and by Confluent's Python client with fastavro, which
//! `scripts/ensure-deps.sh` installs), and the schema-change records checked.

use crate::common;

use std::time::Duration;

use apache_avro::types::Value as Avro;
use common::kafka::{Record, consume_until, drain};
use common::*;
use tidemark::capture::reader::{ReaderError, ReaderStats};
use tidemark::config::{AvroMapping, Config};
use tidemark::schema::registry_client::RegistryClient;
use tidemark::testing::{KafkaBroker, TestDatabase};
use tokio::sync::watch;

fn avro_config(db: &TestDatabase, name: &str, policy: &str, ddl_capture: bool) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\nddl_capture = {ddl_capture}\n\
         [kafka]\nbrokers = \"{}\"\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\non_incompatible = \"{policy}\"\n",
        db.url(),
        broker.bootstrap
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

struct AvroRun {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<ReaderStats, ReaderError>>,
    registry_url: String,
    _registry: Option<tidemark::schema::registry_http::EmbeddedRegistry>,
}

impl AvroRun {
    /// Stops the reader and fails the test if it ended with an error.
    async fn stop(self) -> ReaderStats {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The error a run stops with (within a minute); the test fails if it goes on or ends well.
async fn stopped_with(run: AvroRun) -> String {
    tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .unwrap_or_else(|_| panic!("the connector did not stop"))
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("the connector accepted an incompatible schema"))
}

async fn start(config: Config, client: &tokio_postgres::Client) -> AvroRun {
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"));
    let (output, registry, registry_url) = common::sink::avro_output(&config, "test").await;
    let (stop, task) = spawn_reader(config, output, client).await;
    AvroRun {
        stop,
        task,
        registry_url,
        _registry: registry,
    }
}

/// Decodes a Confluent-framed record with the schema its id names, fetched from the registry.
async fn decode(registry: &RegistryClient, bytes: &[u8]) -> (u32, Avro) {
    assert_eq!(bytes.first(), Some(&0), "magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap_or_else(|e| panic!("{e}")));
    let text = registry
        .schema(id)
        .await
        .unwrap_or_else(|e| panic!("schema {id}: {e}"));
    let schema = apache_avro::Schema::parse_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let value = tidemark::schema::avro::read_datum(&schema, &mut &bytes[5..])
        .unwrap_or_else(|e| panic!("record with schema {id} does not decode: {e}"));
    (id, value)
}

fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    let value = fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {record:?}"));
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

fn string(value: &Avro) -> String {
    match value {
        Avro::String(s) => s.clone(),
        Avro::Int(n) => n.to_string(),
        Avro::Long(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// One line per schema-change record, decoded with its schema:
/// `<kind> <table> <change:column,…> <ids> <policy note>`.
async fn summarize_schema_changes(registry: &RegistryClient, records: &[Record]) -> String {
    let mut summary = Vec::new();
    for record in records {
        let raw = record.raw.as_ref().unwrap_or_else(|| panic!("no value"));
        let (_, value) = decode(registry, raw).await;
        let optional = |name: &str| match field(&value, name) {
            Avro::Null => String::new(),
            other => string(other),
        };
        let Avro::Array(list) = field(&value, "changes") else {
            panic!("changes")
        };
        let list: Vec<String> = list
            .iter()
            .map(|c| {
                let column = match field(c, "column") {
                    Avro::Null => String::new(),
                    other => string(other),
                };
                format!("{}:{column}", string(field(c, "kind")))
            })
            .collect();
        summary.push(format!(
            "{} {} {} ids:{}->{} {}",
            string(field(&value, "kind")),
            string(field(&value, "table")),
            list.join(","),
            optional("old_value_schema_id"),
            optional("new_value_schema_id"),
            optional("compatibility"),
        ));
    }
    summary.join("\n")
}

/// Every record's value (tombstones skipped) decoded with the schema its id names.
async fn decode_values(registry: &RegistryClient, records: &[Record]) -> Vec<(u32, Avro)> {
    let mut values = Vec::new();
    for raw in records.iter().filter_map(|r| r.raw.as_ref()) {
        values.push(decode(registry, raw).await);
    }
    values
}

const DRILL: &[&str] = &[
    "INSERT INTO items VALUES (1, 1, 'a', 'x')",
    "ALTER TABLE items ADD COLUMN extra int; INSERT INTO items (id, qty, code, extra) VALUES (2, 2, 'b', 20)",
    "ALTER TABLE items ADD COLUMN flag bool NOT NULL DEFAULT true; INSERT INTO items (id, qty, code) VALUES (3, 3, 'c')",
    "ALTER TABLE items DROP COLUMN note; INSERT INTO items (id, qty, code) VALUES (4, 4, 'd')",
    "ALTER TABLE items RENAME COLUMN extra TO bonus; INSERT INTO items (id, qty, code, bonus) VALUES (5, 5, 'e', 50)",
    "ALTER TABLE items ALTER COLUMN qty TYPE bigint; INSERT INTO items (id, qty, code) VALUES (6, 6000000000, 'f')",
    "ALTER TABLE items ALTER COLUMN code TYPE text; INSERT INTO items (id, qty, code) VALUES (7, 7, 'a longer code than ten')",
    "ALTER TABLE items ALTER COLUMN bonus TYPE text; INSERT INTO items (id, qty, code, bonus) VALUES (8, 8, 'h', 'eighty')",
    "ALTER TABLE items ALTER COLUMN code SET NOT NULL; INSERT INTO items (id, qty, code) VALUES (9, 9, 'i')",
    "ALTER TABLE items ALTER COLUMN code DROP NOT NULL; INSERT INTO items (id, qty) VALUES (10, 10)",
    "UPDATE items SET code = coalesce(code, 'j'); ALTER TABLE items DROP CONSTRAINT items_pkey, ADD PRIMARY KEY (id, code); INSERT INTO items (id, qty, code) VALUES (11, 11, 'k')",
    "CREATE TABLE fresh (id int PRIMARY KEY, v text); INSERT INTO fresh VALUES (1, 'a')",
    "DROP TABLE fresh",
    "UPDATE items SET qty = qty + 1 WHERE id = 1; DELETE FROM items WHERE id = 2",
];

#[tokio::test]
async fn a_ddl_drill_flows_through_as_schema_versions_and_every_record_decodes() {
    let (db, client) = database("avro_drill").await;
    exec(
        &client,
        "CREATE TABLE items (id int PRIMARY KEY, qty int, code varchar(10), note text); \
         COMMENT ON COLUMN items.qty IS 'units in stock'",
    )
    .await;
    let config = avro_config(&db, "avdrill", "relax", true);
    let bootstrap = config
        .kafka
        .as_ref()
        .map(|k| k.brokers.clone())
        .unwrap_or_default();
    let run = start(config, &client).await;
    for step in DRILL {
        exec(&client, step).await;
    }
    // 11 inserts; the UPDATE before the key change touches 11..=10 rows (10 updates: every
    // row then present); the final update, delete and tombstone.
    let items: Vec<Record> = consume_until(
        &bootstrap,
        "avdrill.public.items",
        Duration::from_secs(60),
        |records| records.len() >= 11 + 10 + 3,
    )
    .await;
    let registry = RegistryClient::new(&run.registry_url, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut value_ids = Vec::new();
    let mut inserted = Vec::new();
    let mut tombstones = 0;
    for record in &items {
        let Some(raw) = &record.raw else {
            tombstones += 1;
            continue;
        };
        let (id, value) = decode(&registry, raw).await;
        if let Some(key) = &record.key {
            decode(&registry, key).await;
        }
        if !value_ids.contains(&id) {
            value_ids.push(id);
        }
        if string(field(&value, "op")) == "c" {
            let after = field(&value, "after");
            inserted.push(field(after, "id").clone());
            if matches!(field(after, "id"), Avro::Int(8)) {
                assert_eq!(
                    field(after, "bonus"),
                    &Avro::String("eighty".into()),
                    "int became text"
                );
            }
            if matches!(field(after, "id"), Avro::Int(6)) {
                assert_eq!(
                    field(after, "qty"),
                    &Avro::Long(6_000_000_000),
                    "int became bigint"
                );
            }
        }
    }
    assert_eq!(
        inserted,
        (1..=11).map(Avro::Int).collect::<Vec<_>>(),
        "every insert, in order"
    );
    assert_eq!(tombstones, 1);
    assert!(
        value_ids.len() >= 8,
        "a new value schema per shape change: {value_ids:?}"
    );
    let latest = registry
        .latest("avdrill.public.items-value")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no value subject"));
    assert!(
        latest.schema.contains("\"doc\":\"units in stock\""),
        "the column comment is the field's doc: {}",
        latest.schema
    );

    // The same records through schema_registry_converter.
    let settings = schema_registry_converter::async_impl::schema_registry::SrSettings::new(
        run.registry_url.clone(),
    );
    let decoder = schema_registry_converter::async_impl::avro::AvroDecoder::new(settings);
    for record in items.iter().filter(|r| r.raw.is_some()) {
        decoder
            .decode(record.raw.as_deref())
            .await
            .unwrap_or_else(|e| panic!("schema_registry_converter: {e}"));
    }

    // Schema changes: decoded the same way, with the rename told apart and the policy noted.
    let changes = consume_until(
        &bootstrap,
        "__tidemark-schema-changes.avdrill",
        Duration::from_secs(60),
        |records| records.len() >= 20,
    )
    .await;
    let text = summarize_schema_changes(&registry, &changes).await;
    assert!(text.contains("ddl items add:extra"), "{text}");
    assert!(text.contains("schema items add:extra"), "{text}");
    assert!(text.contains("drop:note"), "{text}");
    assert!(
        text.contains("schema items rename:bonus"),
        "rename told apart:\n{text}"
    );
    assert!(text.contains("type:qty"), "{text}");
    assert!(text.contains("nullability:code"), "{text}");
    assert!(text.contains("key:"), "{text}");
    assert!(text.contains("compatibility set to NONE"), "{text}");
    assert!(text.contains("ddl fresh create_table:"), "{text}");
    assert!(text.contains("ddl fresh drop_table:"), "{text}");

    // And through Confluent's own Python client. It runs as a child process awaited
    // asynchronously: the embedded registry answering it is served by this test's runtime.
    let python = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/decode_avro_topics.py"
        ))
        .arg(&bootstrap)
        .arg(&run.registry_url)
        .arg(format!("avdrill.public.items={}", items.len()))
        .arg(format!(
            "__tidemark-schema-changes.avdrill={}",
            changes.len()
        ))
        .output()
        .await
        .unwrap_or_else(|e| panic!("python3 (scripts/ensure-deps.sh installs what it needs): {e}"));
    let stderr = String::from_utf8_lossy(&python.stderr);
    assert!(
        python.status.success(),
        "Confluent's Python client could not decode our records (scripts/ensure-deps.sh installs confluent-kafka[avro,schemaregistry] and fastavro): {stderr}"
    );
    let stdout = String::from_utf8_lossy(&python.stdout);
    let topics: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(topics.len(), 2, "{stdout}");
    assert_eq!(topics[0]["records"], items.len());
    assert_eq!(topics[0]["tombstones"], 1);
    let bonus_eighty = topics[0]["values"]
        .as_array()
        .is_some_and(|values| values.iter().any(|v| v["after"]["bonus"] == "eighty"));
    assert!(
        bonus_eighty,
        "the int→text value as Python reads it: {stdout}"
    );
    assert_eq!(topics[1]["records"], changes.len());
    run.stop().await;
}

#[tokio::test]
async fn an_incompatible_change_under_fail_stops_before_the_row_and_names_the_subject() {
    let (db, client) = database("avro_fail").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, n int)").await;
    let config = avro_config(&db, "avfail", "fail", true);
    let run = start(config, &client).await;
    exec(&client, "INSERT INTO t VALUES (1, 1)").await;
    // Everything before the refused transaction may be confirmed, nothing after this point.
    let before_refused = current_wal(&client).await;
    exec(
        &client,
        "ALTER TABLE t ALTER COLUMN n TYPE text; INSERT INTO t VALUES (2, 'two')",
    )
    .await;
    let error = stopped_with(run).await;
    assert!(
        error.contains("avfail.public.t-value") && error.contains("on_incompatible"),
        "{error}"
    );
    let confirmed = confirmed(&client, "tidemark_avfail").await;
    assert!(
        confirmed <= before_refused,
        "the refused row's transaction must not be confirmed: {confirmed} > {before_refused}"
    );
}

/// Upgrading: subjects registered in tidemark's own Avro mapping refuse the Connect
/// mapping's schemas (a `timestamptz` from `long` to `string`); under `fail` the source
/// stops before the row, naming the subject and the setting that keeps the old mapping, and
/// with that setting it goes on from where it stopped.
#[tokio::test]
async fn subjects_of_the_old_mapping_stop_the_new_one_naming_the_way_back() {
    let (db, client) = database("avro_upgrade").await;
    exec(
        &client,
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz)",
    )
    .await;
    let new = avro_config(&db, "avupg", "fail", false);
    let mut old = new.clone();
    old.events.avro_mapping = Some(AvroMapping::Tidemark);
    let bootstrap = new
        .kafka
        .as_ref()
        .map(|k| k.brokers.clone())
        .unwrap_or_default();
    let run = start(old.clone(), &client).await;
    exec(&client, "INSERT INTO t VALUES (1, now())").await;
    consume_until(&bootstrap, "avupg.public.t", Duration::from_secs(60), |r| {
        !r.is_empty()
    })
    .await;
    run.stop().await;

    let run = start(new, &client).await;
    exec(&client, "INSERT INTO t VALUES (2, now())").await;
    let error = stopped_with(run).await;
    assert!(
        error.contains("avupg.public.t-value") && error.contains("avro_mapping = \"tidemark\""),
        "{error}"
    );

    let run = start(old, &client).await;
    let rows = consume_until(&bootstrap, "avupg.public.t", Duration::from_secs(60), |r| {
        r.len() >= 2
    })
    .await;
    run.stop().await;
    assert_eq!(rows.len(), 2, "the second row, once, after the way back");
}

#[tokio::test]
async fn a_table_altered_while_tidemark_was_stopped_is_reported_against_the_registry() {
    let (db, client) = database("avro_restart").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, a int)").await;
    // No DDL capture: only the registry can tell what the table looked like before.
    let config = avro_config(&db, "avstop", "fail", false);
    let bootstrap = config
        .kafka
        .as_ref()
        .map(|k| k.brokers.clone())
        .unwrap_or_default();
    let run = start(config.clone(), &client).await;
    exec(&client, "INSERT INTO t VALUES (1, 1)").await;
    consume_until(
        &bootstrap,
        "avstop.public.t",
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    run.stop().await;

    exec(
        &client,
        "ALTER TABLE t ADD COLUMN b text; INSERT INTO t VALUES (2, 2, 'two')",
    )
    .await;
    let run = start(config, &client).await;
    let rows = consume_until(
        &bootstrap,
        "avstop.public.t",
        Duration::from_secs(60),
        |r| r.len() >= 2,
    )
    .await;
    let registry = RegistryClient::new(&run.registry_url, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let values = decode_values(&registry, &rows).await;
    let (first_id, second_id) = (values[0].0, values[1].0);
    assert_ne!(
        first_id, second_id,
        "the new shape has a new schema version"
    );
    assert_eq!(
        field(field(&values[1].1, "after"), "b"),
        &Avro::String("two".into())
    );
    let changes = consume_until(
        &bootstrap,
        "__tidemark-schema-changes.avstop",
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    let text = summarize_schema_changes(&registry, &changes).await;
    assert_eq!(
        text,
        format!("schema t add:b ids:{first_id}->{second_id} "),
        "one schema record, against the version registered before the stop"
    );
    run.stop().await;
}

#[tokio::test]
async fn an_incompatible_change_under_new_topic_moves_the_table_to_a_versioned_topic() {
    let (db, client) = database("avro_new_topic").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, n int)").await;
    let config = avro_config(&db, "avnew", "new-topic", false);
    let bootstrap = config
        .kafka
        .as_ref()
        .map(|k| k.brokers.clone())
        .unwrap_or_default();
    let run = start(config, &client).await;
    exec(&client, "INSERT INTO t VALUES (1, 1)").await;
    exec(
        &client,
        "ALTER TABLE t ALTER COLUMN n TYPE text; INSERT INTO t VALUES (2, 'two')",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (3, 'three')").await;
    let registry = RegistryClient::new(&run.registry_url, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let moved = consume_until(
        &bootstrap,
        "avnew.public.t-v2",
        Duration::from_secs(60),
        |r| r.len() >= 2,
    )
    .await;
    // Everything on the old topic was written before the moved records were.
    let old = drain(&bootstrap, "avnew.public.t", false, Duration::from_secs(2)).await;
    assert_eq!(old.len(), 1, "nothing after the change on the old topic");
    let ids: Vec<Avro> = decode_values(&registry, &moved)
        .await
        .iter()
        .map(|(_, value)| field(field(value, "after"), "id").clone())
        .collect();
    assert_eq!(ids, vec![Avro::Int(2), Avro::Int(3)]);
    let changes = consume_until(
        &bootstrap,
        "__tidemark-schema-changes.avnew",
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    let text = summarize_schema_changes(&registry, &changes).await;
    assert!(
        text.starts_with("schema t type:n") && text.contains("moves to topic avnew.public.t-v2"),
        "{text}"
    );
    run.stop().await;
}

/// An array of more than one dimension in a column whose Avro type is a one-dimensional
/// array (PostgreSQL's `int[][]` is `int[]`): written as null with a warning, the rest of
/// the row and the stream intact (it used to stop the source at that row for good).
#[tokio::test]
async fn a_multidimensional_array_is_null_in_avro_and_the_stream_goes_on() {
    let (db, client) = database("avro_matrix").await;
    exec(
        &client,
        "CREATE TABLE grid (id int PRIMARY KEY, cells int[], note text)",
    )
    .await;
    let name = db.name.clone();
    let run = start(avro_config(&db, &name, "fail", false), &client).await;
    exec(
        &client,
        "INSERT INTO grid VALUES (1, '{{1,2},{3,4}}', 'matrix'), (2, '{5,NULL}', 'flat')",
    )
    .await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let topic = format!("{name}.public.grid");
    let records = consume_until(&broker.bootstrap, &topic, Duration::from_secs(30), |r| {
        r.len() >= 2
    })
    .await;
    assert_eq!(records.len(), 2, "both rows arrive");
    let registry = RegistryClient::new(&run.registry_url, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let values = decode_values(&registry, &records).await;
    let cells: Vec<(String, String)> = values
        .iter()
        .map(|(_, v)| {
            let after = field(v, "after");
            (
                string(field(after, "note")),
                format!("{:?}", field(after, "cells")),
            )
        })
        .collect();
    assert_eq!(cells[0], ("matrix".to_owned(), "Null".to_owned()));
    assert_eq!(cells[1].0, "flat");
    assert!(cells[1].1.contains("Int(5)"), "{}", cells[1].1);
    run.stop().await;
}
