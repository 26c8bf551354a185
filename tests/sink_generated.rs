//! A table with a stored generated column, source to a PostgreSQL warehouse through Apache
//! Kafka (Avro, the embedded registry): on PostgreSQL 18, where tidemark's publication
//! publishes stored generated columns, the warehouse holds the generated values as the
//! source computed them, snapshotted and streamed (inserts, updates that change them,
//! deletes); before 18 the server publishes none, and the warehouse table has no such
//! column (it is not filled with NULLs).

use crate::common;

use std::time::Duration;

use common::sink::{avro_output, avro_to_postgres_config, spawn_sink, stop_sink};
use common::{
    database, exec, server_version, spawn_reader, stop_background, text_rows, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_generated_columns_land_in_the_warehouse_as_the_source_computed_them() {
    let (db, client) = database("gencols").await;
    let (wh, wh_client) = database("gencols_wh").await;
    let major = server_version(&client).await / 10000;
    exec(
        &client,
        "CREATE TABLE g (id int PRIMARY KEY, a int NOT NULL, \
         twice int GENERATED ALWAYS AS (a * 2) STORED, \
         label text GENERATED ALWAYS AS ('n' || a::text) STORED);
         INSERT INTO g (id, a) SELECT n, n FROM generate_series(1, 20) n",
    )
    .await;
    let config = avro_to_postgres_config(&db, &wh, "", "");
    let (output, _registry, registry_url) = avro_output(&config, &db.name).await;
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    let sink = spawn_sink(config.clone(), &registry_url);
    exec(
        &client,
        "INSERT INTO g (id, a) VALUES (21, 21), (22, 22);
         UPDATE g SET a = a + 100 WHERE id <= 5;
         DELETE FROM g WHERE id BETWEEN 10 AND 12",
    )
    .await;

    let (expected_sql, columns) = if major >= 18 {
        (
            "SELECT id::text, a::text, twice::text, label FROM public.g ORDER BY id",
            vec!["a", "id", "label", "twice"],
        )
    } else {
        (
            "SELECT id::text, a::text FROM public.g ORDER BY id",
            vec!["a", "id"],
        )
    };
    let expected = text_rows(&client, expected_sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(expected.len(), 19);
    wait_until(
        "the warehouse equals the source",
        Duration::from_secs(90),
        || async {
            assert!(!sink.1.is_finished(), "the sink ended early");
            text_rows(&wh_client, expected_sql)
                .await
                .unwrap_or_default()
                == expected
        },
    )
    .await;
    let warehouse_columns: Vec<String> = wh_client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'g' ORDER BY 1",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    stop_background((stop_source, source)).await;
    stop_sink(sink).await;
    // The warehouse's own columns are the published ones (bookkeeping columns aside).
    for column in &columns {
        assert!(
            warehouse_columns.iter().any(|c| c == column),
            "{column} in {warehouse_columns:?}"
        );
    }
    if major < 18 {
        assert!(
            !warehouse_columns
                .iter()
                .any(|c| c == "twice" || c == "label"),
            "no unpublished generated column in the warehouse: {warehouse_columns:?}"
        );
    }
    println!(
        "PostgreSQL {major}: {} rows equal in the warehouse, columns {warehouse_columns:?}",
        expected.len()
    );
}
