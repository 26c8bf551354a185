//! Concurrent writers end to end: four sessions write interleaved transactions (updates of
//! shared keys, deletes, re-inserts of deleted keys, inserts) while the snapshot, the
//! stream and two sinks (a PostgreSQL warehouse and a DuckDB file) run; then each
//! warehouse is compared with the source by row count and a checksum of every row.
//!
//! Commit order differs from statement order here, snapshot rows overlap streamed changes,
//! and a key can be deleted and inserted again across batches: what position columns,
//! the per-key fold and the MERGE's conditions exist for.

use crate::common;

use std::time::Duration;

use common::sink::{Rows, avro_output, duck_has_table, duck_rows, spawn_sink, stop_sink};
use common::{database, exec, spawn_reader};
use tidemark::config::Config;
use tidemark::testing::{KafkaBroker, TestDatabase};

const WRITERS: u64 = 4;
const TRANSACTIONS: u64 = 120;
const SEEDED: i64 = 1500;

fn config(db: &TestDatabase, sink: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"sinkconc\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 3\n\
         [registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_sinkconc\"\n\
         [sink]\n{sink}\nbatch_rows = 300\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

/// xorshift64: enough randomness for a workload, seeded per writer so a failure repeats.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One writer's transactions: updates of shared keys (sorted, so writers do not deadlock
/// on each other), a delete, an upsert that re-inserts deleted keys, a new key, history.
async fn writer(client: tokio_postgres::Client, number: u64) {
    let mut random =
        Random(0x9E37_79B9_7F4A_7C15 ^ (number + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    for t in 0..TRANSACTIONS {
        let mut keys: Vec<u64> = (0..3).map(|_| 1 + random.below(SEEDED as u64)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut sql = String::from("BEGIN;");
        for key in &keys {
            let delta = random.below(200) as i64 - 100;
            sql.push_str(&format!(
                "UPDATE accounts SET balance = balance + {delta}, note = 'w{number}t{t}', updated = clock_timestamp() WHERE id = {key};\
                 INSERT INTO history (account, delta) VALUES ({key}, {delta});"
            ));
        }
        match random.below(4) {
            0 => sql.push_str(&format!(
                "DELETE FROM accounts WHERE id = {};",
                1 + random.below(SEEDED as u64)
            )),
            1 => sql.push_str(&format!(
                "INSERT INTO accounts (id, balance, note, updated) VALUES ({}, 0, NULL, clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET note = NULL, updated = clock_timestamp();",
                1 + random.below(SEEDED as u64)
            )),
            _ => sql.push_str(&format!(
                "INSERT INTO accounts (id, balance, note, updated) VALUES ({}, {t}, 'new', clock_timestamp());",
                100_000 * (number + 1) + t
            )),
        }
        sql.push_str("COMMIT;");
        // A deadlock or serialization failure is retried once the others moved on.
        for attempt in 0..5 {
            match client.batch_execute(&sql).await {
                Ok(()) => break,
                Err(error) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    assert!(attempt < 4, "writer {number}: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

// `ORDER BY a.id`: both name the text column `id`, and a bare `id` would sort by that
// text on PostgreSQL (an output column wins there) but not on DuckDB.
const SOURCE_CHECKSUMS: &str = "SELECT a.id::text, md5(concat_ws('|', a.id, a.balance, coalesce(a.note, '<null>'), (extract(epoch FROM a.updated) * 1000000)::bigint)) FROM public.accounts a ORDER BY a.id";
const DUCK_CHECKSUMS: &str = "SELECT CAST(a.id AS VARCHAR), md5(concat_ws('|', a.id, a.balance, coalesce(a.note, '<null>'), epoch_us(a.updated))) FROM public.accounts a ORDER BY a.id";
const SOURCE_HISTORY: &str = "SELECT count(*)::text, sum(delta)::text FROM public.history";
const DUCK_HISTORY: &str =
    "SELECT CAST(count(*) AS VARCHAR), CAST(sum(delta) AS VARCHAR) FROM public.history";

/// How two checksum lists differ, for the failure message.
fn difference(expected: &Rows, actual: &Rows) -> String {
    let missing: Vec<_> = expected.iter().filter(|r| !actual.contains(r)).collect();
    let extra: Vec<_> = actual.iter().filter(|r| !expected.contains(r)).collect();
    format!(
        "{} rows vs the source's {}; {} missing or different (first {:?}), {} extra (first {:?})",
        actual.len(),
        expected.len(),
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_land_equal_by_count_and_row_checksum() {
    let (db, client) = database("sink_concurrent").await;
    exec(
        &client,
        &format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, note text, updated timestamptz NOT NULL);
             CREATE TABLE history (id bigserial PRIMARY KEY, account bigint NOT NULL, delta bigint NOT NULL);
             INSERT INTO accounts SELECT g, 1000, 'seed', now() FROM generate_series(1, {SEEDED}) g;"
        ),
    )
    .await;
    let (warehouse_db, warehouse) = database("sink_concurrent_wh").await;
    let duck_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let duck_path = duck_dir.path().join("wh.duckdb").display().to_string();
    let duck_config = config(&db, &format!("kind = \"duckdb\"\nurl = \"{duck_path}\""));
    let pg_config = config(
        &db,
        &format!(
            "kind = \"postgres\"\nurl = \"{}\"\ngroup = \"pg-sink\"",
            warehouse_db.url()
        ),
    );
    let (output, _registry, registry_url) = avro_output(&pg_config, &db.name).await;
    // The writers start with the source: their changes race its snapshot.
    let mut writers = Vec::new();
    for number in 0..WRITERS {
        let session = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
        writers.push(tokio::spawn(writer(session, number)));
    }
    let (stop_source, source) = spawn_reader(pg_config.clone(), output, &client).await;
    let pg_sink = spawn_sink(pg_config.clone(), &registry_url);
    let duck_sink = spawn_sink(duck_config.clone(), &registry_url);
    for writer in writers {
        writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
    }

    let expected = common::text_rows(&client, SOURCE_CHECKSUMS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let history = common::text_rows(&client, SOURCE_HISTORY)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut actual = Vec::new();
    while tokio::time::Instant::now() < deadline {
        assert!(!pg_sink.1.is_finished(), "the PostgreSQL sink ended early");
        assert!(!source.is_finished(), "the source ended early");
        actual = common::text_rows(&warehouse, SOURCE_CHECKSUMS)
            .await
            .unwrap_or_default();
        if actual == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        actual == expected,
        "PostgreSQL warehouse: {}",
        difference(&expected, &actual)
    );
    assert_eq!(
        common::text_rows(&warehouse, SOURCE_HISTORY)
            .await
            .map_err(|e| e.to_string()),
        Ok(history.clone()),
        "PostgreSQL warehouse: every history row once"
    );

    // DuckDB has one writer: stop its sink to look, start it again until it caught up.
    stop_sink(duck_sink).await;
    // Both tables: a topic may have reached the instance only with a later metadata refresh.
    let caught_up = || {
        duck_has_table(&duck_path, "accounts")
            && duck_rows(&duck_path, DUCK_CHECKSUMS) == expected
            && duck_has_table(&duck_path, "history")
            && duck_rows(&duck_path, DUCK_HISTORY) == history
    };
    for _ in 0..20 {
        if caught_up() {
            break;
        }
        let again = spawn_sink(duck_config.clone(), &registry_url);
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop_sink(again).await;
    }
    let duck = duck_rows(&duck_path, DUCK_CHECKSUMS);
    assert!(
        duck == expected,
        "DuckDB warehouse: {}",
        difference(&expected, &duck)
    );
    assert_eq!(duck_rows(&duck_path, DUCK_HISTORY), history);

    stop_sink(pg_sink).await;
    let _ = stop_source.send(true);
    let _ = source.await;
}
