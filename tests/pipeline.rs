//! The library's pipeline handle (`tidemark::pipeline::Pipeline`) on the local stack: a
//! private PostgreSQL, Apache Kafka, the embedded registry and a PostgreSQL warehouse.
//!
//! `wait_caught_up` must return only when every change committed before the call is in
//! the warehouse. The hard case is a table whose first rows create its topic just before
//! the call: a broker's topic listing can miss such a topic for a moment, and a wait that
//! relied on the listing alone returned at once with the table not yet in the warehouse.
//! Each round here writes to a table with no topic yet and reads the warehouse straight
//! after the wait, with no retry.

use crate::common;

use std::time::Duration;

use common::*;
use tidemark::config::Config;
use tidemark::pipeline::Pipeline;
use tidemark::testing::KafkaBroker;

const TABLES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_caught_up_covers_tables_whose_topics_were_just_created() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("pipeline_src").await;
    let (warehouse, warehouse_client) = database("pipeline_wh").await;
    for table in 0..TABLES {
        exec(
            &client,
            &format!("CREATE TABLE t{table} (id int PRIMARY KEY, v text NOT NULL)"),
        )
        .await;
    }
    let config = Config::from_toml_with_env(
        &format!(
            "name = \"piped\"\n[source]\nurl = \"{}\"\ntables = [\"public.*\"]\n\
             [kafka]\nbrokers = \"{}\"\n[registry]\nlisten = \"127.0.0.1:0\"\n\
             [sink]\nkind = \"postgres\"\nurl = \"{}\"\n",
            db.url(),
            broker.bootstrap,
            warehouse.url()
        ),
        "test",
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pipeline = Pipeline::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The snapshot of empty tables writes no records and creates no topics.
    pipeline
        .wait_caught_up(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for table in 0..TABLES {
        let rows = 50 * (table + 1);
        exec(
            &client,
            &format!(
                "INSERT INTO t{table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;
                 UPDATE t{table} SET v = v || ' updated' WHERE id % 3 = 0;
                 DELETE FROM t{table} WHERE id % 5 = 0;"
            ),
        )
        .await;
        pipeline
            .wait_caught_up(Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("round {table}: {e}"));
        let checksum = format!(
            "SELECT count(*)::text, md5(string_agg(id || ':' || v, ',' ORDER BY id)) \
             FROM public.t{table}"
        );
        let source = text_rows(&client, &checksum)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let copied = text_rows(&warehouse_client, &checksum)
            .await
            .unwrap_or_else(|e| panic!("round {table}: the warehouse right after the wait: {e}"));
        assert_eq!(copied, source, "round {table}: t{table} in the warehouse");
    }
    let stats = pipeline.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let expected: usize = (0..TABLES).map(|t| 50 * (t + 1)).sum();
    assert!(
        stats.source.events as usize >= expected,
        "{} events for {expected} inserts",
        stats.source.events
    );
}
