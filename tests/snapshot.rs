//! The initial snapshot and its seam with the stream, on a real PostgreSQL: exported
//! snapshot under a concurrent write load, interrupted and killed snapshots resumed with
//! watermarks, ad-hoc re-snapshots by signal, tables added to the publication, empty and
//! keyless tables, `initial_only`, and `when_needed` after the slot is dropped.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Running, database, exec, server_version, wait_until};
use tidemark::capture::reader::ReaderError;
use tidemark::config::Config;
use tidemark::domain::event::{ChangeEvent, Op, SnapshotMarker};
use tidemark::domain::value::Value;
use tidemark::testing::TestDatabase;
use tokio::task::JoinHandle;

type Row = (String, i32);

fn start(config: &Config) -> Running {
    Running::spawn(config.clone())
}

fn snapshot_config(db: &TestDatabase, name: &str, dir: &std::path::Path, extra: &str) -> Config {
    let mut text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\nsnapshot_progress_file = \"{}\"\n{extra}\n",
        db.url(),
        dir.join(format!("{name}.progress.json")).display()
    );
    if !extra.contains("snapshot_workers") {
        text.push_str("snapshot_workers = 2\n");
    }
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

fn key(event: &ChangeEvent) -> i64 {
    let table = event.table.as_ref().expect("table event");
    let row = event.after.as_ref().or(event.before.as_ref()).expect("row");
    match &row[table.key_columns[0]] {
        Value::Int64(k) => *k,
        other => panic!("unexpected key {other:?}"),
    }
}

fn row_of(event: &ChangeEvent) -> Row {
    let row = event.after.as_ref().expect("after");
    let v = match &row[1] {
        Value::Text(t) => t.clone(),
        other => panic!("v: {other:?}"),
    };
    let n = match &row[2] {
        Value::Int32(n) => *n,
        other => panic!("n: {other:?}"),
    };
    (v, n)
}

/// The table's state after applying `events` in order (reads, inserts and updates upsert,
/// deletes remove, truncates empty it).
fn replay(events: &[ChangeEvent], table: &str) -> BTreeMap<i64, Row> {
    let mut state = BTreeMap::new();
    for event in events {
        if event.table.as_ref().is_none_or(|t| t.name != table) {
            continue;
        }
        match event.op {
            Op::Read | Op::Create | Op::Update => {
                if let Some(before) = &event.before {
                    let table = event.table.as_ref().expect("table");
                    if let Value::Int64(old) = &before[table.key_columns[0]] {
                        state.remove(old);
                    }
                }
                state.insert(key(event), row_of(event));
            }
            Op::Delete => {
                state.remove(&key(event));
            }
            Op::Truncate => state.clear(),
            Op::Message => {}
        }
    }
    state
}

async fn source_state(client: &tokio_postgres::Client, table: &str) -> BTreeMap<i64, Row> {
    client
        .query(&format!("SELECT id, v, n FROM {table}"), &[])
        .await
        .expect("select")
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, String>(1), r.get::<_, i32>(2)),
            )
        })
        .collect()
}

async fn create_table(client: &tokio_postgres::Client, table: &str, rows: i64) {
    exec(
        client,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL); \
             INSERT INTO {table} SELECT i, 'row ' || i, 0 FROM generate_series(1, {rows}) i;"
        ),
    )
    .await;
}

/// Updates, inserts and deletes on `table` until `stop` is set; returns the statements run.
fn write_load(
    client: Arc<tokio_postgres::Client>,
    table: &'static str,
    first_new_id: i64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut count = 0u64;
        let mut next_id = first_new_id;
        while !stop.load(Ordering::Relaxed) {
            let pick = (count * 7919) % (first_new_id as u64).max(1) + 1;
            let sql = match count % 4 {
                0 => {
                    format!("UPDATE {table} SET n = n + 1, v = 'updated {count}' WHERE id = {pick}")
                }
                1 => {
                    next_id += 1;
                    format!("INSERT INTO {table} VALUES ({next_id}, 'new {count}', 1)")
                }
                2 => format!("DELETE FROM {table} WHERE id = {pick}"),
                _ => format!(
                    "BEGIN; UPDATE {table} SET n = n + 10 WHERE id = {}; UPDATE {table} SET id = id + 1000000 WHERE id = {}; COMMIT",
                    pick + 1,
                    pick + 2
                ),
            };
            client.batch_execute(&sql).await.expect("load statement");
            count += 1;
        }
        count
    })
}

/// Waits until the slot confirmed everything written so far.
/// The slot's confirmed position, as text.
async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> String {
    client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot")
        .get(0)
}

/// Starts the reader on `config` with `snapshot = "when_needed"`, waits for its snapshot,
/// runs `update` (one UPDATE) on the source, waits for it to stream, stops the reader and
/// returns every event it delivered.
async fn heal_with_when_needed(
    config: &Config,
    client: &tokio_postgres::Client,
    update: &str,
) -> Vec<ChangeEvent> {
    let mut healing = config.clone();
    healing.source.snapshot = tidemark::config::SnapshotMode::WhenNeeded;
    let reader = start(&healing);
    reader.wait_for_last_snapshot_row().await;
    exec(client, update).await;
    wait_until("the streamed update", Duration::from_secs(30), || async {
        reader.events.lock().iter().any(|e| e.op == Op::Update)
    })
    .await;
    let handle = reader.events.clone();
    reader.stop().await;
    handle.snapshot()
}

async fn caught_up(client: &tokio_postgres::Client, slot: &str) {
    let target = common::current_wal(client).await;
    wait_until(
        "the slot to confirm the end of the load",
        Duration::from_secs(60),
        || async { common::confirmed(client, slot).await >= target },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_joins_the_stream_under_a_write_load() {
    let (db, client) = database("snap_seam").await;
    let client = Arc::new(client);
    create_table(&client, "seam", 30_000).await;
    exec(
        &client,
        "CREATE TABLE empty_t (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL); \
                   CREATE TABLE keyless (v text, n int); \
                   INSERT INTO keyless SELECT 'k' || i, i FROM generate_series(1, 500) i;",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Small chunks so that the table is read by both workers in many ranges.
    let config = snapshot_config(&db, "seam", dir.path(), "snapshot_chunk_pages = 16");
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(client.clone(), "seam", 30_000, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let statements = load.await.expect("load");
    assert!(statements > 50, "the load ran ({statements} statements)");
    caught_up(&client, &config.source.slot).await;
    reader.check_alive();
    let events = reader.stop_and_collect().await;

    // Every snapshot row comes before every streamed change, and exactly one is the last.
    let first_streamed = events
        .iter()
        .position(|e| e.op != Op::Read)
        .expect("streamed changes");
    assert!(
        events[first_streamed..].iter().all(|e| e.op != Op::Read),
        "snapshot rows after streamed ones"
    );
    let lasts: Vec<&ChangeEvent> = events
        .iter()
        .filter(|e| e.source.snapshot == SnapshotMarker::Last)
        .collect();
    assert_eq!(lasts.len(), 1, "one row marked last");
    assert_eq!(
        events[first_streamed - 1].source.snapshot,
        SnapshotMarker::Last
    );
    assert!(
        events[..first_streamed]
            .iter()
            .all(|e| e.source.snapshot != SnapshotMarker::False)
    );
    // Debezium's markers: the snapshot's first row `first`, the first and last row of each
    // other table `first_in_data_collection` and `last_in_data_collection`, the rest `true`.
    let snapshot_rows = &events[..first_streamed];
    assert_eq!(snapshot_rows[0].source.snapshot, SnapshotMarker::First);
    for table in ["seam", "keyless"] {
        let markers: Vec<SnapshotMarker> = snapshot_rows
            .iter()
            .filter(|e| e.table.as_ref().is_some_and(|t| t.name == table))
            .map(|e| e.source.snapshot)
            .collect();
        let (first, last) = (markers[0], markers[markers.len() - 1]);
        assert!(
            matches!(
                first,
                SnapshotMarker::First | SnapshotMarker::FirstInDataCollection
            ),
            "{table}: first row {first:?}"
        );
        assert!(
            matches!(
                last,
                SnapshotMarker::Last | SnapshotMarker::LastInDataCollection
            ),
            "{table}: last row {last:?}"
        );
        assert!(
            markers[1..markers.len() - 1]
                .iter()
                .all(|m| *m == SnapshotMarker::True),
            "{table}: a row between its first and last is marked otherwise"
        );
    }
    // Every row carries the snapshot transaction's id, as Debezium's do.
    let snapshot_xid = snapshot_rows[0].source.xid;
    assert!(snapshot_xid != 0);
    assert!(snapshot_rows.iter().all(|e| e.source.xid == snapshot_xid));
    // Positions rise in the order rows were produced.
    assert!(
        snapshot_rows
            .windows(2)
            .all(|w| w[0].source.seq < w[1].source.seq)
    );
    // Snapshot positions sort before every streamed change.
    let max_snapshot = events[..first_streamed]
        .iter()
        .map(|e| e.source.commit_lsn)
        .max()
        .unwrap();
    assert!(
        events[first_streamed..]
            .iter()
            .all(|e| e.source.commit_lsn > max_snapshot)
    );

    // The seam: the final state from the events equals the table, row by row.
    let expected = source_state(&client, "seam").await;
    let replayed = replay(&events, "seam");
    assert_eq!(replayed.len(), expected.len(), "row count");
    for (id, row) in &expected {
        assert_eq!(replayed.get(id), Some(row), "row {id}");
    }
    // Each row existing at the snapshot was read once.
    let reads = events
        .iter()
        .filter(|e| e.op == Op::Read && e.table.as_ref().unwrap().name == "seam")
        .count();
    assert!((29_000..=31_000).contains(&reads), "{reads} reads");
    // The empty table gives nothing; the keyless one every row, without a key.
    assert!(
        events
            .iter()
            .all(|e| e.table.as_ref().is_none_or(|t| t.name != "empty_t"))
    );
    let keyless: Vec<&ChangeEvent> = events
        .iter()
        .filter(|e| e.table.as_ref().is_some_and(|t| t.name == "keyless"))
        .collect();
    assert_eq!(keyless.len(), 500);
    assert!(
        keyless
            .iter()
            .all(|e| e.op == Op::Read && e.key().is_none())
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_stream_of_the_same_value_are_identical() {
    let (db, client) = database("snap_same").await;
    exec(&client, "CREATE TABLE typed (id bigint PRIMARY KEY, price numeric(12,3), at timestamptz, \
                   d date, tags text[], doc jsonb, raw bytea, u uuid, note text); \
                   INSERT INTO typed VALUES (1, 12.5, '2024-02-29 12:34:56.789+02', 'infinity', \
                   '{a,NULL,\"b c\"}', '{\"k\": [1, 2]}', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', e'tab\\there\\nline');").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(&db, "same", dir.path(), "");
    let reader = start(&config);
    wait_until("the snapshot row", Duration::from_secs(30), || async {
        !reader.events.is_empty()
    })
    .await;
    exec(
        &client,
        "BEGIN; CREATE TEMP TABLE copy_of AS SELECT * FROM typed; DELETE FROM typed; \
                   INSERT INTO typed SELECT * FROM copy_of; COMMIT;",
    )
    .await;
    wait_until("the re-inserted row", Duration::from_secs(30), || async {
        reader.events.lock().iter().any(|e| e.op == Op::Create)
    })
    .await;
    let events = reader.stop_and_collect().await;
    let read = events.iter().find(|e| e.op == Op::Read).expect("read");
    let insert = events.iter().find(|e| e.op == Op::Create).expect("insert");
    assert_eq!(read.after, insert.after, "same values");
    assert_eq!(
        read.table, insert.table,
        "same table description (so the same schemas)"
    );
    // And the same Avro bytes: the read, given the insert's op and position, encodes to the
    // insert's record byte for byte (key and envelope).
    let context = tidemark::domain::event::EnvelopeContext::new("p", "d");
    let mut as_insert = read.clone();
    as_insert.op = insert.op;
    as_insert.source = insert.source;
    as_insert.data_collection_order = insert.data_collection_order;
    let mut writer = tidemark::schema::avro_write::AvroWriter::default();
    let encode = |writer: &mut tidemark::schema::avro_write::AvroWriter, e: &ChangeEvent| {
        let mut out = Vec::new();
        writer.key(e, &mut out).expect("key");
        writer.envelope(e, &context, 7, &mut out).expect("envelope");
        out
    };
    assert_eq!(encode(&mut writer, &as_insert), encode(&mut writer, insert));
    drop(db);
}

fn read_progress(path: &std::path::Path) -> Option<serde_json::Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

async fn wait_slot_released(client: &tokio_postgres::Client, slot: &str) {
    wait_until("the slot to be released", Duration::from_secs(30), || async {
        !client
            .query_one(
                "SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)",
                &[&slot],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_snapshots_resume_where_they_stopped() {
    let (db, client) = database("snap_kill").await;
    let client = Arc::new(client);
    create_table(&client, "big", 40_000).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(
        &db,
        "kill",
        dir.path(),
        "snapshot_chunk_pages = 8\nsnapshot_workers = 1\nsnapshot_checkpoint_ms = 100",
    );
    let progress_file = dir.path().join("kill.progress.json");
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(client.clone(), "big", 40_000, stop.clone());
    let mut all_events = Vec::new();

    // 1. Killed as soon as the snapshot is recorded as started.
    let reader = start(&config);
    wait_until("a progress record", Duration::from_secs(30), || async {
        read_progress(&progress_file).is_some()
    })
    .await;
    reader.task.abort();
    let _ = reader.task.await;
    all_events.extend(reader.events.snapshot());
    wait_slot_released(&client, &config.source.slot).await;

    // 2. Killed after some chunks were recorded as done (a checkpoint passed).
    let reader = start(&config);
    let total_chunks = std::cell::Cell::new(0usize);
    wait_until(
        "a checkpoint with chunks done",
        Duration::from_secs(90),
        || async {
            let Some(progress) = read_progress(&progress_file) else {
                return false;
            };
            let pending = progress["pending"].as_array().map_or(0, Vec::len);
            if progress["phase"] == "running" && total_chunks.get() == 0 && pending > 0 {
                total_chunks.set(pending);
            }
            progress["phase"] == "running" && pending > 0 && pending + 2 < total_chunks.get()
        },
    )
    .await;
    reader.task.abort();
    let _ = reader.task.await;
    let second = reader.events.snapshot();
    all_events.extend(second.iter().cloned());
    wait_slot_released(&client, &config.source.slot).await;
    let left = read_progress(&progress_file).expect("progress")["pending"]
        .as_array()
        .map_or(0, Vec::len);

    // 3. Runs to the end while the load goes on.
    let reader = start(&config);
    wait_until(
        "the snapshot to complete",
        Duration::from_secs(120),
        || async { read_progress(&progress_file).is_some_and(|p| p["phase"] == "complete") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    caught_up(&client, &config.source.slot).await;
    let handle = reader.events.clone();
    reader.check_alive();
    reader.stop().await;
    let third = handle.snapshot();
    all_events.extend(third.iter().cloned());

    let reads_in_third = third.iter().filter(|e| e.op == Op::Read).count();
    let reads_in_second = second.iter().filter(|e| e.op == Op::Read).count();
    assert!(left > 0, "chunks remained after the second kill");
    assert!(
        reads_in_third < 40_000 - reads_in_second / 2,
        "the last run read only what was left ({reads_in_third} rows; {reads_in_second} before)"
    );
    let expected = source_state(&client, "big").await;
    let replayed = replay(&all_events, "big");
    assert_eq!(replayed.len(), expected.len(), "row count");
    for (id, row) in &expected {
        assert_eq!(replayed.get(id), Some(row), "row {id}");
    }
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_re_reads_a_table_while_writes_continue() {
    let (db, client) = database("snap_signal").await;
    let client = Arc::new(client);
    create_table(&client, "sig", 3_000).await;
    // PostgreSQL 13's pgoutput sends no logical messages: there the signal is a row of the
    // signal table, and a message is refused with the way on.
    let version = server_version(&client).await;
    let messages = version >= 140000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = snapshot_config(&db, "signal", dir.path(), "snapshot_chunk_pages = 4");
    if !messages {
        exec(
            &client,
            "CREATE TABLE tm_signal (id text PRIMARY KEY, type text, data text)",
        )
        .await;
        config.source.signal_table = Some("public.tm_signal".into());
    }
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    if !messages {
        let mut without_table = config.clone();
        without_table.source.signal_table = None;
        let refused = tidemark::snapshot::signal::request_snapshot(
            &without_table,
            &["public.sig".to_string()],
            None,
        )
        .await
        .expect_err("no messages before 14");
        assert!(
            refused.to_string().contains("source.signal_table"),
            "{refused}"
        );
    }
    let before = reader.events.len();
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(client.clone(), "sig", 3_000, stop.clone());
    let how = tidemark::snapshot::signal::request_snapshot(
        &config,
        &["public.sig".to_string()],
        Some("id <= 1500"),
    )
    .await
    .expect("request");
    assert_eq!(
        how,
        if messages {
            "a logical message"
        } else {
            "a row in the signal table"
        }
    );
    wait_until("the re-read to finish", Duration::from_secs(60), || async {
        reader.events.lock()[before..]
            .iter()
            .filter(|e| e.op == Op::Read)
            .count()
            > 1_000
            && read_progress(&dir.path().join("signal.progress.json"))
                .is_some_and(|p| p["phase"] == "complete")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    caught_up(&client, &config.source.slot).await;
    let events = reader.stop_and_collect().await;
    let rereads: Vec<&ChangeEvent> = events[before..]
        .iter()
        .filter(|e| e.op == Op::Read)
        .collect();
    assert!(
        rereads.len() <= 1_500 && rereads.len() > 1_000,
        "{} rows re-read",
        rereads.len()
    );
    assert!(
        rereads.iter().all(|e| key(e) <= 1_500),
        "the condition was applied"
    );
    assert_eq!(
        rereads.last().map(|e| e.source.snapshot),
        Some(SnapshotMarker::Last)
    );
    assert!(
        events.iter().all(|e| e.message.is_none()),
        "the signal itself is not published"
    );
    let expected = source_state(&client, "sig").await;
    assert_eq!(replay(&events, "sig"), expected);
    // Bad requests are refused with the reason.
    let error =
        tidemark::snapshot::signal::request_snapshot(&config, &["public.nope".to_string()], None)
            .await
            .expect_err("unknown table");
    assert!(error.to_string().contains("not in publication"), "{error}");
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_is_snapshotted() {
    let (db, client) = database("snap_new").await;
    create_table(&client, "first", 100).await;
    create_table(&client, "second", 2_000).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(&db, "newtable", dir.path(), "tables = [\"public.first\"]");
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    assert!(
        reader
            .events
            .lock()
            .iter()
            .all(|e| e.table.as_ref().unwrap().name == "first")
    );
    exec(
        &client,
        "ALTER PUBLICATION tidemark_newtable ADD TABLE public.second; \
                   UPDATE second SET n = 5 WHERE id = 7;",
    )
    .await;
    wait_until("the new table's rows", Duration::from_secs(60), || async {
        reader
            .events
            .lock()
            .iter()
            .filter(|e| e.op == Op::Read && e.table.as_ref().unwrap().name == "second")
            .count()
            >= 2_000
    })
    .await;
    caught_up(&client, &config.source.slot).await;
    let events = reader.stop_and_collect().await;
    assert_eq!(
        replay(&events, "second"),
        source_state(&client, "second").await
    );
    let progress = read_progress(&dir.path().join("newtable.progress.json")).expect("progress");
    assert!(
        progress["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "public.second")
    );
    drop(db);
}

/// `schema.*` on every major: `TABLES IN SCHEMA` from PostgreSQL 15, the schema's tables
/// listed one by one before (13 and 14 have no schema publications), and there a table
/// created later is added to the publication by the reader (at once after captured DDL on
/// 14, at the periodic check on 13, whose pgoutput sends no logical messages) and
/// snapshotted, rows written before it was added included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_pattern_takes_the_schemas_tables_and_those_created_later() {
    let (db, client) = database("snap_schema").await;
    exec(&client, "CREATE SCHEMA app").await;
    create_table(&client, "app.first", 100).await;
    create_table(&client, "public.elsewhere", 10).await;
    let version = server_version(&client).await;
    // DDL capture where the server sends logical messages (14 and later).
    let ddl = if version >= 140000 {
        "ddl_capture = true"
    } else {
        ""
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(
        &db,
        "schemapat",
        dir.path(),
        &format!("tables = [\"app.*\"]\n{ddl}"),
    );
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("setup with app.* on PostgreSQL {version}: {e}"));
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    assert!(
        reader
            .events
            .lock()
            .iter()
            .all(|e| e.table.as_ref().is_some_and(|t| t.name == "first")),
        "only app's tables are captured"
    );
    // A table created after the start, with rows written before the reader can have
    // published it, then changed.
    create_table(&client, "app.later", 500).await;
    wait_until(
        "the later table's rows",
        Duration::from_secs(90),
        || async {
            reader
                .events
                .lock()
                .iter()
                .filter(|e| e.table.as_ref().is_some_and(|t| t.name == "later"))
                .count()
                >= 500
        },
    )
    .await;
    exec(
        &client,
        "UPDATE app.later SET n = 9 WHERE id = 3; DELETE FROM app.later WHERE id = 4",
    )
    .await;
    wait_until(
        "the change to the later table",
        Duration::from_secs(30),
        || async {
            reader
                .events
                .lock()
                .iter()
                .any(|e| e.op == Op::Delete && e.table.as_ref().is_some_and(|t| t.name == "later"))
        },
    )
    .await;
    caught_up(&client, &config.source.slot).await;
    let events = reader.stop_and_collect().await;
    assert_eq!(
        replay(&events, "later"),
        source_state(&client, "app.later").await
    );
    assert_eq!(
        replay(&events, "first"),
        source_state(&client, "app.first").await
    );
    assert!(
        events
            .iter()
            .all(|e| e.table.as_ref().is_none_or(|t| t.name != "elsewhere")),
        "a table outside the schema is not captured"
    );
    let published = tidemark::source::setup::published(&client, &config.source.publication)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = published.iter().map(|t| t.display.as_str()).collect();
    assert_eq!(names, ["app.first", "app.later"]);
    drop(db);
}

/// Generated columns as the server publishes them, the snapshot reading the same: none
/// before PostgreSQL 18; from 18 the stored ones (tidemark's publication says
/// `publish_generated_columns = stored`) and never the virtual ones, which `check` warns
/// about; a table under REPLICA IDENTITY FULL with a virtual column (whose updates
/// PostgreSQL 18 refuses) is refused by `setup` with the way out; a publication made by hand
/// without `publish_generated_columns` is warned about by `check` on 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_arrive_as_the_server_publishes_them() {
    let (db, client) = database("snap_generated").await;
    let version = server_version(&client).await;
    let virtual_column = if version >= 180000 {
        ", v bigint GENERATED ALWAYS AS (a + 1) VIRTUAL"
    } else {
        ""
    };
    exec(
        &client,
        &format!(
            "CREATE TABLE gen (id bigint PRIMARY KEY, a bigint NOT NULL, \
             s bigint GENERATED ALWAYS AS (a * 2) STORED{virtual_column}); \
             INSERT INTO gen (id, a) SELECT g, g FROM generate_series(1, 50) g;"
        ),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    if version >= 180000 {
        exec(
            &client,
            "CREATE TABLE gen_full (id bigint, a bigint, v bigint GENERATED ALWAYS AS (a + 1) VIRTUAL); \
             ALTER TABLE gen_full REPLICA IDENTITY FULL;",
        )
        .await;
        let full = snapshot_config(&db, "genfull", dir.path(), "tables = [\"public.gen_full\"]");
        let problems = tidemark::source::setup::check(&client, &full)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("virtual generated column(s) v")
                    && p.contains("REPLICA IDENTITY DEFAULT")),
            "{problems:?}"
        );
    }
    let config = snapshot_config(&db, "generated", dir.path(), "tables = [\"public.gen\"]");
    if version >= 180000 {
        let rendered = tidemark::ops::check::check(&config).await.render();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with("warn") && l.contains("virtual generated column(s) v")),
            "{rendered}"
        );
    }
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    exec(
        &client,
        "INSERT INTO gen (id, a) VALUES (100, 7); UPDATE gen SET a = 21 WHERE id = 3",
    )
    .await;
    wait_until("the streamed changes", Duration::from_secs(30), || async {
        reader.events.lock().iter().any(|e| e.op == Op::Update)
    })
    .await;
    let events = reader.stop_and_collect().await;
    assert!(events.iter().any(|e| e.op == Op::Read) && events.iter().any(|e| e.op == Op::Create));
    for event in events
        .iter()
        .filter(|e| e.table.as_ref().is_some_and(|t| t.name == "gen"))
    {
        let table = event.table.as_ref().expect("table");
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        let expected: &[&str] = if version >= 180000 {
            &["id", "a", "s"]
        } else {
            &["id", "a"]
        };
        assert_eq!(names, expected, "{:?} on PostgreSQL {version}", event.op);
        if version >= 180000 {
            let row = event.after.as_ref().expect("after");
            match (&row[1], &row[2]) {
                (Value::Int64(a), Value::Int64(s)) => assert_eq!(*s, a * 2, "{:?}", event.op),
                other => panic!("{other:?}"),
            }
        }
    }
    // A publication made by hand (or before 18) publishes no generated column: `check`
    // says so on 18 and how to change it, and stops saying so once it is changed.
    let handmade = snapshot_config(
        &db,
        "handmade",
        dir.path(),
        "tables = [\"public.gen\"]\npublication = \"handmade\"",
    );
    exec(&client, "CREATE PUBLICATION handmade FOR TABLE gen").await;
    let unpublished = |rendered: &str| {
        rendered.lines().any(|l| {
            l.starts_with("warn")
                && l.contains(
                    "stored generated column(s) s, which publication handmade does not publish",
                )
        })
    };
    let rendered = tidemark::ops::check::check(&handmade).await.render();
    assert_eq!(unpublished(&rendered), version >= 180000, "{rendered}");
    if version >= 180000 {
        assert!(
            rendered.contains("publish_generated_columns = stored"),
            "{rendered}"
        );
        exec(
            &client,
            "ALTER PUBLICATION handmade SET (publish_generated_columns = stored)",
        )
        .await;
        let rendered = tidemark::ops::check::check(&handmade).await.render();
        assert!(!unpublished(&rendered), "{rendered}");
    }
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_initial_only_when_needed_and_a_lost_slot() {
    let (db, client) = database("snap_modes").await;
    create_table(&client, "m", 1_000).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // initial_only: the snapshot, then the reader stops by itself.
    let config = snapshot_config(&db, "modes", dir.path(), "snapshot = \"initial_only\"");
    let reader = start(&config);
    let handle = reader.events.clone();
    let stats = reader.finished().await.expect("initial_only finishes");
    assert_eq!(stats.snapshot_rows, 1_000);
    assert!(handle.snapshot().iter().all(|e| e.op == Op::Read));

    // The slot dropped behind the connector's back, rows written meanwhile.
    exec(
        &client,
        "SELECT pg_drop_replication_slot('tidemark_modes'); \
                   INSERT INTO m SELECT i, 'late', 2 FROM generate_series(1001, 1100) i;",
    )
    .await;
    let mut strict = config.clone();
    strict.source.snapshot = tidemark::config::SnapshotMode::Initial;
    let error = start(&strict)
        .finished()
        .await
        .expect_err("initial refuses to skip the gap");
    assert!(
        matches!(error, ReaderError::SlotMissingAfterSnapshot { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("when_needed"), "{error}");

    // when_needed: a new slot and a new snapshot, then streaming.
    let events = heal_with_when_needed(&config, &client, "UPDATE m SET n = 9 WHERE id = 1").await;
    assert_eq!(events.iter().filter(|e| e.op == Op::Read).count(), 1_100);
    assert_eq!(replay(&events, "m"), source_state(&client, "m").await);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_connection_cut_mid_copy_is_resumed_after_reconnecting() {
    let (db, client) = database("snap_cut").await;
    create_table(&client, "cut", 60_000).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(
        &db,
        "cut",
        dir.path(),
        "snapshot_chunk_pages = 4\nsnapshot_workers = 1\nsnapshot_checkpoint_ms = 50",
    );
    let reader = start(&config);
    wait_until(
        "the snapshot to be under way",
        Duration::from_secs(60),
        || async { reader.events.len() > 5_000 },
    )
    .await;
    // Cut the worker's connection in the middle of its COPY.
    wait_until("a COPY to cut", Duration::from_secs(30), || async {
        client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate")
            .get::<_, i64>(0)
            > 0
    })
    .await;
    exec(&client, "UPDATE cut SET n = 7 WHERE id IN (1, 59999)").await;
    wait_until(
        "the snapshot to complete after the cut",
        Duration::from_secs(90),
        || async {
            read_progress(&dir.path().join("cut.progress.json"))
                .is_some_and(|p| p["phase"] == "complete")
        },
    )
    .await;
    caught_up(&client, &config.source.slot).await;
    reader.check_alive();
    let handle = reader.events.clone();
    let stats = reader.stop().await;
    let events = handle.snapshot();
    assert!(stats.sessions >= 2, "the reader reconnected: {stats:?}");
    assert_eq!(replay(&events, "cut"), source_state(&client, "cut").await);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_a_definite_error_and_when_needed_snapshots_again() {
    // A cluster of its own: the slot may keep at most 1 MB of WAL.
    let cluster = tidemark::testing::PgCluster::start_with(&[
        ("max_slot_wal_keep_size", "1MB"),
        ("wal_keep_size", "0"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("slot_lost")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    create_table(&client, "v", 500).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = snapshot_config(&db, "lost", dir.path(), "snapshot = \"initial\"");
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    reader.stop().await;

    // While the connector is away, the database writes far more WAL than the slot may
    // keep; checkpoints remove it and the server invalidates the slot.
    exec(
        &client,
        "UPDATE v SET n = 1 WHERE id <= 100; INSERT INTO v SELECT i, 'gap', 3 FROM generate_series(501, 600) i;",
    )
    .await;
    let mut status = String::new();
    for _ in 0..20 {
        exec(
            &client,
            "CREATE TABLE IF NOT EXISTS wal_filler (pad text); \
             INSERT INTO wal_filler SELECT repeat('x', 1000) FROM generate_series(1, 2000); \
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await;
        status = common::text_rows(
            &client,
            "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'tidemark_lost'",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .unwrap_or_default();
        if status == "lost" {
            break;
        }
    }
    assert_eq!(status, "lost", "the slot was not invalidated");

    // The default mode: a definite error that names the cause and the remedy.
    let error = start(&config)
        .finished()
        .await
        .expect_err("a lost slot cannot stream");
    assert!(
        matches!(error, ReaderError::SlotInvalidated { .. }),
        "{error}"
    );
    assert!(!error.is_transient(), "{error}");
    for part in ["max_slot_wal_keep_size", "when_needed", "tidemark teardown"] {
        assert!(error.to_string().contains(part), "{part} not in: {error}");
    }

    // when_needed: the lost slot dropped, a new one, every table snapshotted again (the
    // changes since the old slot's position are gone), then streaming.
    let events = heal_with_when_needed(&config, &client, "UPDATE v SET n = 9 WHERE id = 1").await;
    let reads_of_v = events
        .iter()
        .filter(|e| e.op == Op::Read && e.table.as_ref().is_some_and(|t| t.name == "v"))
        .count();
    assert_eq!(reads_of_v, 600);
    assert_eq!(replay(&events, "v"), source_state(&client, "v").await);
    let slots = common::text_rows(
        &client,
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'tidemark_lost'",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        slots,
        vec![vec![Some("reserved".to_string())]],
        "a new slot"
    );
}

/// Bad input: the publication dropped while streaming. The server stops decoding at the
/// first change after the drop; the reader stops with a definite error naming the cause and
/// the way on, without confirming that change, and the remedy it names (teardown, then
/// `when_needed`) ends with every row delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_dropped_while_streaming_stops_with_the_way_on() {
    let (db, client) = database("pub_dropped").await;
    create_table(&client, "pd", 100).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = snapshot_config(&db, "pubdrop", dir.path(), "");
    let reader = start(&config);
    reader.wait_for_last_snapshot_row().await;
    exec(&client, "UPDATE pd SET n = 5 WHERE id = 1").await;
    wait_until("the streamed update", Duration::from_secs(30), || async {
        reader.events.lock().iter().any(|e| e.op == Op::Update)
    })
    .await;
    caught_up(&client, &config.source.slot).await;
    let confirmed_before = confirmed_flush(&client, &config.source.slot).await;

    exec(
        &client,
        &format!(
            "DROP PUBLICATION {}; UPDATE pd SET n = 6 WHERE id = 2;",
            config.source.publication
        ),
    )
    .await;
    let error = reader
        .finished()
        .await
        .expect_err("a dropped publication stops the reader");
    assert!(
        matches!(error, ReaderError::PublicationMissing { .. }),
        "{error}"
    );
    let message = error.to_string();
    let missing = format!(
        "publication \"{}\" does not exist",
        config.source.publication
    );
    for needle in [
        missing.as_str(),
        "was dropped",
        "tidemark teardown",
        "when_needed",
    ] {
        assert!(message.contains(needle), "{needle:?} in: {message}");
    }
    // The change after the drop was not confirmed: the slot stands where it stood.
    let confirmed_after = confirmed_flush(&client, &config.source.slot).await;
    assert_eq!(confirmed_after, confirmed_before);

    // The way on, as the message says it: teardown, then when_needed.
    tidemark::source::setup::teardown(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events = heal_with_when_needed(&config, &client, "UPDATE pd SET n = 7 WHERE id = 3").await;
    assert_eq!(replay(&events, "pd"), source_state(&client, "pd").await);
    drop(db);
}
