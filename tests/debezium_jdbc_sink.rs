//! A Debezium consumer reads tidemark's topics unchanged: Debezium's own JDBC sink connector
//! (Kafka Connect's standalone worker, `JsonConverter` with schemas, upserts by the record
//! key, deletes enabled, tables created by the connector) is pointed at the topics tidemark
//! writes to Apache Kafka in its default (Debezium) preset, and the PostgreSQL copy it
//! builds must equal the source: snapshotted rows, then inserts, updates, a primary-key
//! change and deletes streamed, over the types the design brief maps.

use crate::common;

use std::time::Duration;

use common::{database, exec, spawn_reader, text_rows};
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{JdbcSink, KafkaBroker};

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
    FROM generate_series(1, 30) n";

/// Streamed changes: inserts (one with NULLs), updates, a primary-key change, deletes.
const STREAM: &[&str] = &[
    "INSERT INTO item (id, name) VALUES (100, 'only a name')",
    "INSERT INTO item SELECT 101, -5, 'ünïcödé ✓', '', -0.01, -1.5e-7, true, DATE '1999-12-31', \
     TIMESTAMP '2000-02-29 23:59:59.999999', TIMESTAMPTZ '2000-01-01 00:00:00-08', '\\x00ff'::bytea, \
     '{\"nested\": {\"x\": [1, null]}}', '00000000-0000-0000-0000-000000000001'",
    "UPDATE item SET name = 'renamed', price = 99999999.99, flag = NULL WHERE id BETWEEN 1 AND 5",
    "UPDATE item SET doc = '[]', seen = seen + INTERVAL '1 day' WHERE id = 6",
    "UPDATE item SET id = 1000 WHERE id = 7",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_jdbc_sink_copies_tidemarks_topics_equal_to_the_source() {
    let (db, client) = database("dbzjdbc").await;
    let (target, target_client) = database("dbzjdbc_copy").await;
    exec(&client, SEED).await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    // Unique per run: the broker, and its topics, can outlive a test run.
    let name = db.name.clone();
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 3\nformat = \"json\"\njson_schemas = true\n",
        db.url(),
        broker.bootstrap,
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no [kafka]"));
    let output = KafkaOutput::connect(&kafka, EnvelopeContext::new(&config.name, &db.name))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    let mut sink = JdbcSink::start(
        &broker.bootstrap,
        &format!("{}\\.public\\..*", regex_escape(&name)),
        &target,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let expected = text_rows(&client, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_equal(&mut sink, &target_client, &expected, "the snapshot").await;
    for sql in STREAM {
        exec(&client, sql).await;
    }
    let expected = text_rows(&client, ROWS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!source.is_finished(), "the source ended early");
    wait_equal(&mut sink, &target_client, &expected, "the streamed changes").await;
    let _ = stop_source.send(true);
    source
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("source: {e}"));
    let errors = sink.log_lines(" ERROR ");
    assert!(
        errors.is_empty(),
        "the connector logged errors: {errors:#?}"
    );
    println!(
        "Debezium's JDBC sink {}: {} rows equal to the source (13 columns)",
        tidemark::testing::DEBEZIUM_JDBC_VERSION,
        expected.len()
    );
}

/// Waits (at most 120 s) until the copy's rows equal `expected`; on a timeout, fails with
/// the first difference and the worker's log.
async fn wait_equal(
    sink: &mut JdbcSink,
    copy: &tokio_postgres::Client,
    expected: &common::sink::Rows,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let actual = text_rows(copy, ROWS).await.unwrap_or_default();
        if actual == *expected {
            return;
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
            panic!(
                "{what}: the copy differs from the source after 120 s:\n{first}\n--- the worker's log:\n{}",
                sink.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `text` with the characters a Java regular expression treats specially escaped.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.[]{}()*+?^$|".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}
