//! A Debezium consumer reads tidemark's topics unchanged: Debezium's own JDBC sink connector
//! (Kafka Connect's standalone worker, upserts by the record key, deletes enabled, tables
//! created by the connector) is pointed at the topics tidemark writes to Apache Kafka in its
//! default (Debezium) preset, and the PostgreSQL copy it builds must equal the source:
//! snapshotted rows, then inserts, updates, a primary-key change and deletes streamed, over
//! the types the design brief maps. Twice: JSON with schemas read by `JsonConverter`, and
//! Avro read through Kafka Connect's Avro translation with the schemas tidemark registered
//! (`SinkConverter::Avro`; Confluent's `AvroConverter` is not on Maven Central).

use crate::common;

use std::time::Duration;

use common::{database, exec, spawn_reader, stop_background, text_rows};
use tidemark::config::Config;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{JdbcSink, KafkaBroker, SinkConverter};

/// The source table, and the rows written before tidemark starts (snapshotted).
const SEED: &str = "CREATE TABLE item (
        id int PRIMARY KEY,
        big bigint,
        name text,
        code varchar(12),
        price numeric(10,2),
        ratio double precision,
        flag boolean,
        day date,
        at timestamp(6),
        seen timestamptz,
        data bytea,
        doc jsonb,
        ref uuid
    );
    INSERT INTO item
    SELECT n, n::bigint * 1000000000, 'name ' || n, 'c' || n, n * 1.25, n / 3.0, n % 2 = 0,
           DATE '2024-01-01' + n, TIMESTAMP '2024-01-01 10:00:00.123456' + n * INTERVAL '1 hour',
           TIMESTAMPTZ '2024-01-01 10:00:00.5+02' + n * INTERVAL '1 minute',
           decode(lpad(to_hex(n), 4, '0'), 'hex'), jsonb_build_object('n', n, 'tags', jsonb_build_array('a', n)),
           md5(n::text)::uuid
    FROM generate_series(1, 30) n;
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE extra (
        id bigint PRIMARY KEY,
        small smallint,
        single real,
        free numeric,
        t3 time(3),
        t6 time(6),
        tz timetz,
        span interval,
        cash money,
        ints int[],
        words text[],
        x xml,
        feel mood,
        fixed char(3),
        addr inet
    );
    INSERT INTO extra
    SELECT n, n - 10, n / 4.0, n * 1.000001, TIME '10:11:12.345' + n * INTERVAL '1 second',
           TIME '10:11:12.345678', TIMETZ '10:11:12.5+05:30', n * INTERVAL '1 day 2 hours 3.5 seconds',
           n * 1.5, ARRAY[n, NULL, -n], ARRAY['a', 'b c', NULL], ('<r n=\"' || n || '\"/>')::xml,
           (ARRAY['sad', 'ok', 'happy'])[n % 3 + 1]::mood, 'ab', ('10.0.0.' || n)::inet
    FROM generate_series(1, 10) n";

/// Streamed changes: inserts (one with NULLs), updates, a primary-key change, deletes.
const STREAM: &[&str] = &[
    "INSERT INTO item (id, name) VALUES (100, 'only a name')",
    "INSERT INTO item SELECT 101, -5, 'ünïcödé ✓', '', -0.01, -1.5e-7, true, DATE '1999-12-31', \
     TIMESTAMP '2000-02-29 23:59:59.999999', TIMESTAMPTZ '2000-01-01 00:00:00-08', '\\x00ff'::bytea, \
     '{\"nested\": {\"x\": [1, null]}}', '00000000-0000-0000-0000-000000000001'",
    "UPDATE item SET name = 'renamed', price = 99999999.99, flag = NULL WHERE id BETWEEN 1 AND 5",
    "UPDATE item SET doc = '[]', seen = seen + INTERVAL '1 day' WHERE id = 6",
    "UPDATE item SET id = 1000 WHERE id = 7",
    "UPDATE extra SET free = -0.000000001, span = INTERVAL '-3 days 04:05:06.25', ints = '{}', feel = NULL WHERE id = 2",
    "INSERT INTO extra (id) VALUES (99)",
    "DELETE FROM extra WHERE id = 3",
    "DELETE FROM item WHERE id BETWEEN 20 AND 25",
    "BEGIN; INSERT INTO item (id, name) VALUES (200, 'short'); UPDATE item SET name = 'lived' WHERE id = 200; DELETE FROM item WHERE id = 200; COMMIT",
];

/// Every column in a form equal on both sides whatever type the connector chose for it
/// (times as epoch microseconds, bytes as hex, JSON parsed).
const ROWS: &str = "SELECT id::text, big::text, name, code, price::numeric::text, ratio::float8::text, \
     flag::text, day::date::text, \
     (extract(epoch FROM at::timestamp) * 1000000)::bigint::text, \
     (extract(epoch FROM seen::timestamptz) * 1000000)::bigint::text, \
     encode(data::bytea, 'hex'), doc::jsonb::text, ref::uuid::text \
     FROM public.item ORDER BY id";

/// The second table likewise, where Debezium's own encodings and its JDBC sink lose what
/// they lose with Debezium's records too: `timetz` at UTC (`ZonedTime` keeps the instant,
/// not the offset), intervals in whole seconds (the sink binds a `MicroDuration` as
/// `'<n> seconds'`, truncated; months would count 30.4375 days, so the workload has none),
/// `char(n)` without its padding (the sink's column is text), an unconstrained `numeric`
/// without its display scale (`10.000010` lands as `10.00001`; compared as a double).
/// Enums land as text (the sink creates no enum types).
const EXTRA_ROWS: &str = "SELECT id::text, small::text, single::float4::text, free::float8::text, \
     t3::time::text, t6::time::text, (tz::timetz AT TIME ZONE 'UTC')::text, \
     trunc(extract(epoch FROM span::interval))::bigint::text, cash::numeric::text, \
     ints::int[]::text, words::text[]::text, x::text, feel::text, rtrim(fixed::text), \
     addr::inet::text \
     FROM public.extra ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_jdbc_sink_copies_tidemarks_topics_equal_to_the_source() {
    copy_through_the_jdbc_sink("dbzjdbc", Format::JsonWithSchemas).await;
}

/// The same through Avro: tidemark's default Avro (the Connect mapping, schemas in its
/// embedded registry), read by the worker as Confluent's `AvroConverter` would
/// (`SinkConverter::Avro`: Kafka Connect's `AvroData` over the registered schemas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_jdbc_sink_copies_tidemarks_avro_topics_equal_to_the_source() {
    copy_through_the_jdbc_sink("dbzjdbcavro", Format::Avro).await;
}

/// What tidemark writes and the worker reads.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// JSON with schemas, read by `JsonConverter` (schemas enabled).
    JsonWithSchemas,
    /// Avro in tidemark's default mapping, schemas in the embedded registry.
    Avro,
}

/// Runs tidemark in `format` on a database named after `base`, Debezium's JDBC sink on its
/// topics, and compares the copy with the source after the snapshot and after the stream.
async fn copy_through_the_jdbc_sink(base: &str, format: Format) {
    let (db, client) = database(base).await;
    let (target, target_client) = database(&format!("{base}_copy")).await;
    exec(&client, SEED).await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    // Unique per run: the broker, and its topics, can outlive a test run.
    let name = db.name.clone();
    let output = match format {
        Format::JsonWithSchemas => "format = \"json\"\njson_schemas = true\n".to_owned(),
        Format::Avro => format!(
            "format = \"avro\"\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\n"
        ),
    };
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 3\n{output}",
        db.url(),
        broker.bootstrap,
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    // The embedded registry starts only for Avro (its `[registry]` section).
    let mut context = config.envelope_context().unwrap_or_else(|e| panic!("{e}"));
    context.database = db.name.clone();
    let (output, registry) = KafkaOutput::from_config(&config, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let registry_url = registry.as_ref().map(|r| r.url());
    let converter = match (format, registry_url.as_deref()) {
        (Format::JsonWithSchemas, _) => SinkConverter::JsonWithSchemas,
        (Format::Avro, Some(registry_url)) => SinkConverter::Avro { registry_url },
        (Format::Avro, None) => panic!("the Avro config starts the embedded registry"),
    };
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    // Test databases are named with letters, digits and `_` only: no regex escaping needed.
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{name}"
    );
    let mut sink = JdbcSink::start(
        &broker.bootstrap,
        &format!("{name}\\.public\\..*"),
        &target,
        converter,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut rows = 0;
    for query in [ROWS, EXTRA_ROWS] {
        wait_equal(&mut sink, &client, &target_client, query, "the snapshot").await;
    }
    for sql in STREAM {
        exec(&client, sql).await;
    }
    assert!(!source.is_finished(), "the source ended early");
    for query in [ROWS, EXTRA_ROWS] {
        rows += wait_equal(
            &mut sink,
            &client,
            &target_client,
            query,
            "the streamed changes",
        )
        .await;
    }
    stop_background((stop_source, source)).await;
    let errors = sink.log_lines(" ERROR ");
    assert!(
        errors.is_empty(),
        "the connector logged errors: {errors:#?}"
    );
    if let Format::Avro = format {
        // The worker read through the Avro converter (its config is logged at start).
        let used =
            sink.log_lines("value.converter = class dev.tidemark.tests.RegistryAvroConverter");
        assert!(
            !used.is_empty(),
            "the worker did not log the Avro converter in its config"
        );
    }
    println!(
        "Debezium's JDBC sink {} ({format:?}): {rows} rows of two tables (13 and 15 columns) equal to the source",
        tidemark::testing::DEBEZIUM_JDBC_VERSION,
    );
}

/// Waits (at most 120 s) until `query` reads the same rows from the copy as from the
/// source, and returns how many; on a timeout, fails with the first difference and the
/// worker's log.
async fn wait_equal(
    sink: &mut JdbcSink,
    source: &tokio_postgres::Client,
    copy: &tokio_postgres::Client,
    query: &str,
    what: &str,
) -> usize {
    let expected = text_rows(source, query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let actual = text_rows(copy, query).await.unwrap_or_default();
        if actual == expected {
            return actual.len();
        }
        if !sink.is_running() {
            panic!("the Connect worker exited:\n{}", sink.log_tail());
        }
        if tokio::time::Instant::now() > deadline {
            let first = expected
                .iter()
                .zip(&actual)
                .find(|(e, a)| e != a)
                .map(|(e, a)| format!("source {e:?}\ncopy   {a:?}"))
                .unwrap_or_else(|| format!("{} rows against {}", actual.len(), expected.len()));
            let copy_error = text_rows(copy, query).await.err().map(|e| e.to_string());
            panic!(
                "{what}: the copy differs from the source after 120 s ({query}):\n{first}\n{copy_error:?}\n--- the worker's log:\n{}",
                sink.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
