//! Tables whose names Kafka or `schema.table` cannot spell as they are: a schema and a table
//! whose quoted names hold a dot, a double quote and spaces (Debezium's own test name,
//! `"Quoted_"" . Schema"."Quoted_"" . Table"`), and one with a space. `source.tables` and
//! `sink.tables` name them quoted PostgreSQL-style; their topics are named as Debezium names
//! them (characters Kafka refuses replaced by `_`, the dots kept); the sink reads those
//! topics and applies them to a PostgreSQL warehouse equal to the source, and `tidemark
//! status` counts their partitions.

use crate::common;

use std::time::Duration;

use common::sink::{avro_output, avro_to_postgres_config, spawn_sink, stop_sink};
use common::{LogBuffer, database, exec, spawn_reader, stop_background, text_rows, wait_until};

const SEED: &str = r#"CREATE SCHEMA "Quoted_"" . Schema";
    CREATE TABLE "Quoted_"" . Schema"."Quoted_"" . Table" (id int PRIMARY KEY, v text);
    CREATE TABLE public."sp ace" (id int PRIMARY KEY, v text);
    CREATE TABLE public.plain (id int PRIMARY KEY, v text);
    INSERT INTO "Quoted_"" . Schema"."Quoted_"" . Table" SELECT n, 'q' || n FROM generate_series(1, 5) n;
    INSERT INTO public."sp ace" SELECT n, 's' || n FROM generate_series(1, 5) n;
    INSERT INTO public.plain SELECT n, 'p' || n FROM generate_series(1, 5) n"#;

const STREAM: &str = r#"INSERT INTO "Quoted_"" . Schema"."Quoted_"" . Table" VALUES (6, 'q6');
    UPDATE "Quoted_"" . Schema"."Quoted_"" . Table" SET v = 'changed' WHERE id = 1;
    DELETE FROM "Quoted_"" . Schema"."Quoted_"" . Table" WHERE id = 2;
    UPDATE public."sp ace" SET v = 'changed' WHERE id = 3;
    DELETE FROM public."sp ace" WHERE id = 4;
    INSERT INTO public.plain VALUES (6, 'p6')"#;

/// Each table's rows, on the source and in the warehouse (same names on both).
const TABLES: [&str; 3] = [
    r#""Quoted_"" . Schema"."Quoted_"" . Table""#,
    r#"public."sp ace""#,
    "public.plain",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_and_spaced_table_names_are_captured_published_and_applied() {
    let log = LogBuffer::install(tracing::Level::WARN);
    let (db, client) = database("names").await;
    let (wh, wh_client) = database("names_wh").await;
    exec(&client, SEED).await;
    let name = db.name.clone();
    // The selectors as a user writes them: the dotted names quoted, the spaced one as it is.
    let selectors =
        r#"['"Quoted_"" . Schema"."Quoted_"" . Table"', 'public.sp ace', 'public.plain']"#;
    let tables = format!("tables = {selectors}");
    let config = avro_to_postgres_config(&db, &wh, &tables, &tables);
    let (output, _registry, registry_url) = avro_output(&config, &db.name).await;
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    let sink = spawn_sink(config.clone(), &registry_url);
    exec(&client, STREAM).await;
    for table in TABLES {
        let query = format!("SELECT id::text, v FROM {table} ORDER BY id");
        let expected = text_rows(&client, &query)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(expected.len() >= 4, "{table}: {expected:?}");
        wait_until(
            &format!("{table} in the warehouse equal to the source"),
            Duration::from_secs(90),
            || async {
                assert!(!sink.1.is_finished(), "the sink ended early");
                text_rows(&wh_client, &query).await.unwrap_or_default() == expected
            },
        )
        .await;
    }

    // The topics, as Debezium names them.
    let status = tidemark::sink::status::sink_status(&config)
        .await
        .unwrap_or_else(|| panic!("no sink status"));
    let topics: std::collections::BTreeSet<&str> =
        status.partitions.iter().map(|p| p.topic.as_str()).collect();
    let expected_topics: std::collections::BTreeSet<String> = [
        format!("{name}.Quoted___._Schema.Quoted___._Table"),
        format!("{name}.public.sp_ace"),
        format!("{name}.public.plain"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        topics,
        expected_topics.iter().map(String::as_str).collect(),
        "{status:?}"
    );
    stop_background((stop_source, source)).await;
    // The source said, once per such table, that its topic is not its plain name.
    let warned = |topic: &str| {
        log.text()
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.contains("not a plain Kafka topic name")
                    && l.contains(topic)
            })
            .count()
    };
    assert_eq!(
        warned(&format!("{name}.Quoted___._Schema.Quoted___._Table")),
        1,
        "{}",
        log.text()
    );
    assert_eq!(
        warned(&format!("{name}.public.sp_ace")),
        1,
        "{}",
        log.text()
    );
    assert_eq!(warned(&format!("{name}.public.plain")), 0, "{}", log.text());
    stop_sink(sink).await;
}
