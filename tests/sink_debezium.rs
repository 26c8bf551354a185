//! tidemark's sink on Debezium's own topics: Debezium's PostgreSQL connector (its embedded
//! engine) captures a snapshot and a streamed workload; its records, as Kafka Connect's
//! `JsonConverter` wrote them (schemas on), are written to Apache Kafka as a Connect worker
//! would (three partitions, keys hashed with murmur2, tombstones after deletes); then
//! `tidemark sink`, configured with Debezium's topic prefix, applies them to a PostgreSQL
//! warehouse, which must equal the source row for row. Positions come from Debezium's
//! `source.sequence`, so a second pass over the same records changes nothing. Intervals
//! (Debezium's `MicroDuration`, months folded into days) are compared by their length in
//! seconds and times with a zone at UTC, the forms Debezium keeps.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::debezium::debezium_records;
use common::sink::{avro_output, spawn_sink, stop_sink};
use common::{database, exec, text_rows};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tidemark::config::Config;
use tidemark::testing::{DebeziumRecord, KafkaBroker, avro_with_connect};

const TABLE: &str = "CREATE TABLE t (
    id int PRIMARY KEY, i8 int8, b bool, f8 float8, n numeric(10,2), nu numeric,
    txt text, ts timestamp, tstz timestamptz, d date, u uuid, j jsonb, by bytea, arr int[],
    ts3 timestamp(3), tm3 time(3), tm time, iv interval, tz timetz, m money, b3 bit(3), vb varbit(8), pt point,
    big text, big_ia int[], big_ta text[]);
    INSERT INTO t VALUES
      (1, 10, true, 1.5, 12.34, 123.456, 'one', '2024-01-02 03:04:05.123456',
       '2024-01-02 03:04:05.5+02', '2024-01-02', '6f1c1c1e-0000-4000-8000-000000000001',
       '{\"a\": 1}', '\\x0102', '{1,NULL,3}', '1969-12-31 23:59:59.999', '01:02:03.456', '01:02:03.456789',
       '3 days 04:05:06.5', '01:02:03.5+02', 1234567.89, B'001', B'10000001', '(1,2)'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    INSERT INTO t (id, txt, n) SELECT g, 'seed' || g, g * 1.5 FROM generate_series(3, 40) g;
    -- TOASTed out of line (hex digits compress too little); the stream's update of row 1
    -- leaves them unchanged, so Debezium writes its placeholders, per type.
    UPDATE t SET big = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 600) i),
      big_ia = (SELECT array_agg(('x' || substr(md5(i::text), 1, 7))::bit(28)::int) FROM generate_series(1, 2000) i),
      big_ta = (SELECT array_agg(md5(i::text)) FROM generate_series(1, 600) i) WHERE id = 1";

/// Streamed: inserts, updates, deletes, a primary-key change, one transaction touching a
/// row twice.
const STREAM: &[&str] = &[
    "INSERT INTO t (id, txt, nu, tstz) VALUES (100, 'new', 0.000001, '2025-06-01 12:00:00.000001+00')",
    "UPDATE t SET txt = 'uno', n = 99.99, j = '[1, 2]' WHERE id = 1",
    "DELETE FROM t WHERE id = 2",
    "UPDATE t SET id = 200 WHERE id = 3",
    "BEGIN; UPDATE t SET txt = 'a' WHERE id = 4; UPDATE t SET txt = 'b' WHERE id = 4; \
     DELETE FROM t WHERE id BETWEEN 10 AND 19; COMMIT",
    "UPDATE t SET f8 = 'NaN', d = '0044-03-15 BC', ts3 = '2024-05-06 07:08:09.012', tm3 = '23:59:59.999', \
     iv = '-1 day 00:00:00.000001', tz = '23:30:00-01:30', m = -5.5, b3 = B'110', pt = '(-1.5,0.25)' WHERE id = 5",
];

const ROWS: &str = "SELECT id::text, i8::text, b::text, f8::text, n::text, nu::text, txt, \
     ts::text, tstz::text, d::text, u::text, j::text, encode(by, 'hex'), arr::text, \
     ts3::text, tm3::text, tm::text, \
     extract(epoch FROM iv)::text, (tz AT TIME ZONE 'UTC')::text, m::numeric::text, \
     b3::text, vb::text, pt::text, md5(big), md5(big_ia::text), md5(big_ta::text) \
     FROM public.t ORDER BY id";

/// The warehouse's rows once they equal `expected`, or as they are after 90 s (the caller
/// asserts); fails at once if the sink ends.
async fn warehouse_rows_once_equal(
    sink: &common::sink::RunningSink,
    warehouse: &tokio_postgres::Client,
    expected: &[Vec<Option<String>>],
) -> Vec<Vec<Option<String>>> {
    let mut actual = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        assert!(!sink.1.is_finished(), "the sink ended early");
        actual = text_rows(warehouse, ROWS).await.unwrap_or_default();
        if actual == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    actual
}

/// Writes Debezium's records to Kafka as a Connect worker with `JsonConverter` would.
async fn write_as_connect_would(bootstrap: &str, records: &[DebeziumRecord]) {
    let bytes = |json: &serde_json::Value| -> Option<Vec<u8>> {
        (!json.is_null()).then(|| serde_json::to_vec(json).unwrap_or_default())
    };
    let raw: Vec<RawKafkaRecord> = records
        .iter()
        .map(|r| (r.topic.clone(), bytes(&r.key), bytes(&r.value)))
        .collect();
    write_raw(bootstrap, &raw).await;
}

/// A record as bytes: topic, key, value (none: a tombstone).
type RawKafkaRecord = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Writes records to Kafka as a Connect worker would: the converter's bytes, keys hashed
/// with murmur2 (Java's default partitioner) over three partitions.
async fn write_raw(bootstrap: &str, records: &[RawKafkaRecord]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let topics: std::collections::BTreeSet<&str> =
        records.iter().map(|(topic, _, _)| topic.as_str()).collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("creating topics: {e}"))
    {
        match result {
            // The second pass, or an earlier run against the same broker.
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("creating {name}: {code:?}"),
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    for (topic, key, value) in records {
        let mut out = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(key) = key.as_deref() {
            out = out.key(key);
        }
        if let Some(value) = value.as_deref() {
            out = out.payload(value);
        }
        producer
            .send(out, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("writing to {topic}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_applies_debeziums_own_topics() {
    let (db, client) = database("sink_dbz").await;
    exec(&client, TABLE).await;
    // Unique per run: the broker, and its topics, can outlive a test run.
    let prefix = db.name.as_str();
    let records = debezium_records(
        &db,
        &client,
        &[
            ("topic.prefix", prefix),
            ("slot.name", "dbz_sink"),
            ("publication.name", "dbz_sink"),
            ("publication.autocreate.mode", "filtered"),
            ("table.include.list", "public.t"),
        ],
        STREAM,
    )
    .await;
    let tombstones = records.iter().filter(|r| r.value.is_null()).count();
    assert!(tombstones >= 12, "Debezium wrote {tombstones} tombstones");
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    write_as_connect_would(&broker.bootstrap, &records).await;

    let (warehouse_db, warehouse) = database("sink_dbz_wh").await;
    let text = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\n[kafka]\nbrokers = \"{}\"\nformat = \"json\"\njson_schemas = true\n\
         [sink]\nkind = \"postgres\"\nurl = \"{}\"\ngroup = \"dbz-sink\"\nbatch_rows = 500\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap,
        warehouse_db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = text_rows(&client, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // JSON needs no registry; the sink is given an address it never calls.
    let sink = spawn_sink(config.clone(), "http://127.0.0.1:9");
    let actual = warehouse_rows_once_equal(&sink, &warehouse, &expected).await;
    stop_sink(sink).await;
    assert_eq!(actual, expected, "the warehouse equals the source");

    // Debezium's records once more (a connector restarted from older offsets), and a
    // second sink group reading both passes from the start: every change is at or behind
    // the position its row holds, so nothing changes.
    write_as_connect_would(&broker.bootstrap, &records).await;
    let table_topic = format!("{prefix}.public.t");
    let written = 2 * records.iter().filter(|r| r.topic == table_topic).count();
    let config = Config::from_toml_with_env(
        &text.replace("group = \"dbz-sink\"", "group = \"dbz-sink-again\""),
        "test",
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sink = spawn_sink(config, "http://127.0.0.1:9");
    let consumed = format!(
        "SELECT coalesce(sum(next_offset), 0)::text FROM __tidemark_offsets \
         WHERE consumer_group = 'dbz-sink-again' AND topic = '{table_topic}'"
    );
    common::wait_until(
        "the second group past both passes",
        Duration::from_secs(90),
        || async {
            text_rows(&warehouse, &consumed).await.unwrap_or_default()
                == vec![vec![Some(written.to_string())]]
        },
    )
    .await;
    stop_sink(sink).await;
    let again = text_rows(&warehouse, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, expected, "redelivered records change nothing");
}

/// Debezium's Avro topics: Debezium's records as a Connect worker with an Avro converter
/// writes them (Kafka Connect's Avro translation, `tidemark::testing::avro_with_connect`;
/// schemas registered under `<topic>-key`/`-value` in tidemark's embedded registry, the
/// Confluent framing), applied by `tidemark sink`: the warehouse equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_applies_debeziums_own_avro_topics() {
    use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
    use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

    let (db, client) = database("sink_dbz_avro").await;
    exec(&client, TABLE).await;
    let prefix = db.name.as_str();
    let records = debezium_records(
        &db,
        &client,
        &[
            ("topic.prefix", prefix),
            ("slot.name", "dbz_sink_avro"),
            ("publication.name", "dbz_sink_avro"),
            ("publication.autocreate.mode", "filtered"),
            ("table.include.list", "public.t"),
        ],
        STREAM,
    )
    .await;
    let inputs: Vec<(String, serde_json::Value, serde_json::Value)> = records
        .iter()
        .filter(|r| r.topic.starts_with(prefix) && !r.topic.ends_with("heartbeat"))
        .map(|r| (r.topic.clone(), r.key.clone(), r.value.clone()))
        .collect();
    let avro = avro_with_connect(&inputs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let (warehouse_db, warehouse) = database("sink_dbz_avro_wh").await;
    let text = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\n[kafka]\nbrokers = \"{}\"\nformat = \"avro\"\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{prefix}\"\n\
         [sink]\nkind = \"postgres\"\nurl = \"{}\"\ngroup = \"dbz-avro-sink\"\nbatch_rows = 500\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap,
        warehouse_db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    // The embedded registry stands in for the one a Debezium deployment registers in.
    let (_output, _registry, registry_url) = avro_output(&config, &db.name).await;
    let settings = SrSettings::new(registry_url.clone());
    let mut ids: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut raw: Vec<RawKafkaRecord> = Vec::new();
    for record in &avro {
        let mut framed = Vec::new();
        for (side, schema, data) in [
            ("key", &record.key_schema, &record.key),
            ("value", &record.value_schema, &record.value),
        ] {
            let Some(data) = data else {
                framed.push(None);
                continue;
            };
            let (subject, text) = (format!("{}-{side}", record.topic), schema.to_string());
            let id = match ids.get(&(subject.clone(), text.clone())) {
                Some(id) => *id,
                None => {
                    let registered = post_schema(
                        &settings,
                        subject.clone(),
                        SuppliedSchema::new(None, SchemaType::Avro, text.clone()),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("registering {subject}: {e}"));
                    ids.insert((subject, text), registered.id);
                    registered.id
                }
            };
            let mut out = vec![0];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(data);
            framed.push(Some(out));
        }
        let value = framed.pop().flatten();
        let key = framed.pop().flatten();
        raw.push((record.topic.clone(), key, value));
    }
    write_raw(&broker.bootstrap, &raw).await;

    // The workload's float NaN survives: the harness restores the non-finite floats
    // JsonConverter would read back as 0.0 when it rebuilds the Avro records from
    // Debezium's JSON (`tests/jvm/debezium/ConnectToAvro.java`).
    let expected = text_rows(&client, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        expected
            .iter()
            .flatten()
            .any(|v| v.as_deref() == Some("NaN")),
        "the workload has its NaN"
    );
    let sink = spawn_sink(config.clone(), &registry_url);
    let actual = warehouse_rows_once_equal(&sink, &warehouse, &expected).await;
    stop_sink(sink).await;
    assert_eq!(actual, expected, "the warehouse equals the source");
}
