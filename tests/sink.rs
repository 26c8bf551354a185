//! The warehouse sink end to end: PostgreSQL → tidemark → Apache Kafka (Avro, embedded registry)
//! → sink → DuckDB and a PostgreSQL warehouse, compared with the source row by row; then a
//! replay from the topics alone; and a sink aborted between its MERGE and Kafka's commit.

use crate::common;

use std::time::Duration;

use common::sink::{Rows, avro_output, duck_has_table, duck_rows, spawn_sink, stop_sink};
use common::{database, exec, spawn_reader, wait_until};
use tidemark::config::Config;
use tidemark::sink::replay::{ReplayFrom, replay};
use tidemark::testing::{KafkaBroker, TestDatabase};
use tokio::sync::watch;

// `on_incompatible = "relax"`: the embedded registry's BACKWARD check (apache-avro's)
// refuses one of the mixed test's steps ("Field 'before' in reader schema does not match",
// after ADD COLUMN, int→bigint and DROP COLUMN, each of which Avro's resolution rules
// allow); the test is about the sink, so the registry is relaxed here. Truncates are
// delivered (`skipped_operations = ["none"]`; Debezium's default skips them), so the sink's
// truncate is tested.
fn config(db: &TestDatabase, name: &str, sink: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 3\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_{name}\"\non_incompatible = \"relax\"\n\
         [events]\nskipped_operations = [\"none\"]\n[sink]\n{sink}\nbatch_rows = 500\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

/// Rows as text; none while the query fails (a warehouse table not created yet).
async fn pg_rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    common::text_rows(client, sql).await.unwrap_or_default()
}

/// The keyless table's row count in DuckDB, none while it does not exist yet.
fn duck_log_count(path: &str) -> Rows {
    if !duck_has_table(path, "events_log") {
        return Vec::new();
    }
    duck_rows(
        path,
        "SELECT CAST(count(*) AS VARCHAR) FROM public.events_log",
    )
}

fn as_text(columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| {
            let (expr, alias) = c.split_once(" AS ").unwrap_or((c, c));
            format!("CAST({expr} AS VARCHAR) AS {alias}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn workload(client: &tokio_postgres::Client, round: i32) {
    let base = round * 1000;
    exec(
        client,
        &format!(
            "INSERT INTO items (id, name, amount, big, flag)
               SELECT {base} + g, 'n' || g, g * 1.25, repeat(md5(g::text), 100), g % 2 = 0
               FROM generate_series(1, 300) g;
             UPDATE items SET name = name || '-u', amount = amount + 1 WHERE id % 7 = {round} % 7;
             UPDATE items SET flag = NOT coalesce(flag, false) WHERE id % 5 = 0;
             DELETE FROM items WHERE id % 11 = {round} % 11;
             INSERT INTO events_log (n, note) SELECT g, 'r{round}' FROM generate_series(1, 50) g;"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_and_schema_changes_land_equal_in_duckdb_and_postgres_then_replay() {
    let (db, client) = database("sink_e2e").await;
    exec(
        &client,
        "CREATE TABLE items (id int PRIMARY KEY, name text, amount numeric(12,2), big text, flag bool);
         CREATE TABLE events_log (n int, note text);
         INSERT INTO items (id, name, amount, big, flag)
           SELECT g, 'seed' || g, g, repeat('x', 3000), true FROM generate_series(-200, 0) g;",
    )
    .await;
    let (warehouse_db, warehouse) = database("sink_e2e_wh").await;
    let duck_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let duck_path = duck_dir.path().join("wh.duckdb").display().to_string();
    let duck_config = config(
        &db,
        "sinke2e",
        &format!("kind = \"duckdb\"\nurl = \"{duck_path}\""),
    );
    let pg_config = config(
        &db,
        "sinke2e",
        &format!(
            "kind = \"postgres\"\nurl = \"{}\"\ngroup = \"pg-sink\"",
            warehouse_db.url()
        ),
    );

    // The source, with the embedded registry.
    let (output, _registry, registry_url) = avro_output(&duck_config, &db.name).await;
    // Streaming before the workload starts, so the DDL below is in the stream (not
    // already in the snapshot's view of the table).
    let (stop_source, source) = spawn_reader(duck_config.clone(), output, &client).await;

    let pg_sink = spawn_sink(pg_config.clone(), &registry_url);
    let duck_sink = spawn_sink(duck_config.clone(), &registry_url);

    // The snapshot (the seed rows) lands first: a column dropped while the snapshot still
    // reads the table stops the source (a known gap of the snapshot, which names its
    // columns and takes no lock on the table), and this test is about the stream.
    let seeded = "SELECT count(*)::text FROM public.items WHERE id <= 0";
    wait_until(
        "the snapshot in the warehouse",
        Duration::from_secs(60),
        || async { pg_rows(&warehouse, seeded).await == vec![vec![Some("201".to_string())]] },
    )
    .await;
    for round in 1..=3 {
        workload(&client, round).await;
    }
    // A truncate in the middle of the stream, then more rows.
    exec(&client, "TRUNCATE items").await;
    workload(&client, 4).await;
    // Unchanged TOAST: `big` is not sent by these updates; the warehouse keeps its value.
    exec(
        &client,
        "UPDATE items SET name = 'toast-kept' WHERE id % 3 = 0",
    )
    .await;
    // Schema changes with rows between: add a column, widen it, drop one.
    exec(
        &client,
        "ALTER TABLE items ADD COLUMN qty int; UPDATE items SET qty = id WHERE id % 2 = 0",
    )
    .await;
    workload(&client, 5).await;
    exec(&client, "ALTER TABLE items ALTER COLUMN qty TYPE bigint; UPDATE items SET qty = qty * 3000000000 WHERE qty IS NOT NULL AND id % 4 = 0").await;
    exec(
        &client,
        "ALTER TABLE items DROP COLUMN flag; UPDATE items SET name = name || '!' WHERE id % 13 = 0",
    )
    .await;
    workload_without_flag(&client).await;

    let expected = pg_rows(
        &client,
        &format!(
            "SELECT {} FROM public.items ORDER BY id",
            as_text("id, name, amount, md5(big) AS big, qty")
        ),
    )
    .await;
    let compared = as_text("id, name, amount, md5(big) AS big, qty");
    let live = format!(
        "SELECT {compared} FROM public.items WHERE \"__tidemark_lsn\" IS NOT NULL ORDER BY id"
    );
    let log_count = pg_rows(&client, "SELECT count(*)::text FROM events_log").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut actual = Vec::new();
    while tokio::time::Instant::now() < deadline {
        if pg_sink.1.is_finished() {
            let ended = pg_sink.1.await;
            panic!("the PostgreSQL sink ended early: {ended:?}");
        }
        if source.is_finished() {
            let ended = source.await;
            panic!("the source ended early: {ended:?}");
        }
        actual = pg_rows(&warehouse, &live).await;
        // Both tables: the keyless one's topic may reach the sink with a later metadata
        // refresh than the keyed one's.
        let log = pg_rows(&warehouse, "SELECT count(*)::text FROM public.events_log").await;
        if actual == expected && log == log_count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|r| !actual.contains(r))
        .take(3)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|r| !expected.contains(r))
        .take(3)
        .collect();
    let query_error = warehouse.simple_query(&live).await.err();
    assert!(
        actual == expected,
        "the PostgreSQL warehouse equals the source: {} rows vs {} (query error: {query_error:?}); missing {missing:?}; extra {extra:?}",
        actual.len(),
        expected.len()
    );
    assert_eq!(
        pg_rows(&warehouse, "SELECT count(*)::text FROM public.events_log").await,
        log_count,
        "the keyless, insert-only table got every row exactly once"
    );
    let columns: Vec<String> = pg_rows(
        &warehouse,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position",
    )
    .await
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    assert!(
        columns.contains(&"flag".to_string()),
        "a dropped column is kept: {columns:?}"
    );
    let qty_type = pg_rows(
        &warehouse,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'qty'",
    )
    .await;
    assert_eq!(
        qty_type,
        vec![vec![Some("bigint".to_string())]],
        "qty widened in place"
    );

    // DuckDB: the file has one writer, so stop the sink to look, and start it again
    // until it has caught up too.
    stop_sink(duck_sink).await;
    // Both tables: the keyless one's topic may have reached this instance only with a
    // later metadata refresh.
    let duck_caught_up =
        || duck_rows(&duck_path, &live) == expected && duck_log_count(&duck_path) == log_count;
    let mut duck_equal = duck_caught_up();
    for _ in 0..20 {
        if duck_equal {
            break;
        }
        let again = spawn_sink(duck_config.clone(), &registry_url);
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop_sink(again).await;
        duck_equal = duck_caught_up();
    }
    assert_eq!(
        duck_rows(&duck_path, &live),
        expected,
        "DuckDB equals the source"
    );
    assert_eq!(
        duck_rows(
            &duck_path,
            "SELECT CAST(count(*) AS VARCHAR) FROM public.events_log"
        ),
        log_count
    );

    // Replay from the topics alone into new tables, then swap them in.
    let mut replay_config = duck_config.clone();
    if let Some(registry) = replay_config.registry.as_mut() {
        registry.url = Some(registry_url.clone());
    }
    let (_never, rx) = watch::channel(false);
    let report = replay(&replay_config, Vec::new(), ReplayFrom::Beginning, true, rx)
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert!(report.replaced);
    assert!(report.stats.records > 0);
    assert_eq!(
        duck_rows(&duck_path, &live),
        expected,
        "the rebuilt table equals the source"
    );
    assert_eq!(
        duck_rows(
            &duck_path,
            "SELECT CAST(count(*) AS VARCHAR) FROM public.events_log"
        ),
        log_count
    );

    stop_sink(pg_sink).await;
    let _ = stop_source.send(true);
    let _ = source.await;
}

async fn workload_without_flag(client: &tokio_postgres::Client) {
    exec(
        client,
        "INSERT INTO items (id, name, amount, big, qty)
           SELECT 9000 + g, 'late' || g, g * 0.5, repeat('y', 4000), g FROM generate_series(1, 200) g;
         UPDATE items SET amount = amount * 2 WHERE id % 9 = 1;
         DELETE FROM items WHERE id % 17 = 3;",
    )
    .await;
}

/// The sink binary aborted right before its warehouse commit, then right after it (before
/// Kafka's offsets are committed), then run to the end: nothing lost, nothing doubled (the
/// keyless table is appended, so a doubled batch would show in its count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_aborted_around_its_commit_loses_and_doubles_nothing() {
    let (db, client) = database("sink_crash").await;
    exec(
        &client,
        "CREATE TABLE t (id int PRIMARY KEY, v int); CREATE TABLE log (n int);",
    )
    .await;
    let (warehouse_db, warehouse) = database("sink_crash_wh").await;
    let sink_section = format!(
        "kind = \"postgres\"\nurl = \"{}\"\ngroup = \"crash-sink\"",
        warehouse_db.url()
    );
    let source_config = config(&db, "sinkcrash", &sink_section);
    let (output, _registry, registry_url) = avro_output(&source_config, &db.name).await;
    let (stop_source, source) = spawn_reader(source_config.clone(), output, &client).await;
    for round in 0..10 {
        exec(
            &client,
            &format!(
                "INSERT INTO t SELECT {round} * 1000 + g, g FROM generate_series(1, 200) g;
                 UPDATE t SET v = v + 1 WHERE id % 3 = 0;
                 DELETE FROM t WHERE id % 10 = {round};
                 INSERT INTO log SELECT g FROM generate_series(1, 100) g;"
            ),
        )
        .await;
    }
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("sink.toml");
    let text = format!(
        "name = \"sinkcrash\"\n[source]\nurl = \"{}\"\n[kafka]\nbrokers = \"{}\"\npartitions = 3\n\
         [registry]\nurl = \"{registry_url}\"\n[sink]\n{sink_section}\nbatch_rows = 300\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let binary = env!("CARGO_BIN_EXE_tidemark");
    for failpoint in ["sink.before_commit", "sink.after_commit"] {
        let status = tokio::process::Command::new(binary)
            .args(["sink", "--config"])
            .arg(&path)
            .env("TIDEMARK_FAILPOINTS", failpoint)
            .stdin(std::process::Stdio::null())
            .status();
        // A restarted member waits out its aborted predecessor's session (10 s) first.
        let status = tokio::time::timeout(Duration::from_secs(150), status)
            .await
            .unwrap_or_else(|_| panic!("the sink did not reach {failpoint} within 150 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !status.success(),
            "{failpoint}: the process aborted ({status})"
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGABRT),
            "{failpoint}: stopped by the failpoint's abort, not by an error ({status})"
        );
    }
    let mut child = tokio::process::Command::new(binary)
        .args(["sink", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = pg_rows(&client, "SELECT id::text, v::text FROM t ORDER BY id").await;
    let log_count = pg_rows(&client, "SELECT count(*)::text FROM log").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut actual = Vec::new();
    while tokio::time::Instant::now() < deadline {
        actual = pg_rows(
            &warehouse,
            "SELECT id::text, v::text FROM public.t ORDER BY id",
        )
        .await;
        if actual == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if actual != expected {
        // Where the missing rows' records sit on the topic, and what the warehouse stored.
        let missing: Vec<i64> = expected
            .iter()
            .filter(|r| !actual.contains(r))
            .filter_map(|r| r.first().cloned().flatten()?.parse().ok())
            .collect();
        let records = common::kafka::drain(
            &broker.bootstrap,
            "sinkcrash.public.t",
            true,
            Duration::from_secs(3),
        )
        .await;
        let located: Vec<(i64, i32, i64)> = records
            .iter()
            .filter_map(|r| {
                let key = r.key.as_ref()?;
                let mut value: u64 = 0;
                for (i, b) in key.get(5..)?.iter().enumerate() {
                    value |= u64::from(b & 0x7f) << (7 * i);
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                let id = (value >> 1) as i64 ^ -((value & 1) as i64);
                missing.contains(&id).then_some((id, r.partition, r.offset))
            })
            .collect();
        let stored = pg_rows(&warehouse, "SELECT topic, kafka_partition::text, next_offset::text FROM public.__tidemark_offsets ORDER BY 1, 2").await;
        panic!(
            "the warehouse lacks {} rows of the source; their records (id, partition, offset): {located:?}; stored offsets: {stored:?}",
            missing.len()
        );
    }
    wait_until("every log row", Duration::from_secs(30), || {
        let (warehouse, log_count) = (&warehouse, &log_count);
        async move {
            pg_rows(warehouse, "SELECT count(*)::text FROM public.log").await == *log_count
        }
    })
    .await;
    // Settle, then check again: nothing more arrives (no doubled batch).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pg_rows(&warehouse, "SELECT count(*)::text FROM public.log").await,
        log_count,
        "no row applied twice"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = stop_source.send(true);
    let _ = source.await;
}
