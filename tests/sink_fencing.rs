//! The warehouse refuses a flush from a sink instance that lost its partitions, on a real
//! PostgreSQL warehouse and a DuckDB file.
//!
//! The case this guards: instance A holds a partition with a key's insert pending; the
//! group gives the partition to B (A paused past its session timeout, or the broker settled
//! a rebalance without it); B applies the insert and the key's later delete; then A's flush
//! arrives. With hard deletes nothing in the warehouse remembers the key, so no position
//! column can tell A's insert is old: only the offsets can. Each flush moves a partition's
//! stored offset as a compare-and-set from where its instance found it, so A's flush is
//! refused whole and the deleted row stays deleted.
//!
//! Also refused whole: a flush into a warehouse table altered by hand so that it no longer
//! fits, with an error that says how to mend it.

use crate::common;

use std::sync::Arc;

use common::database;
use tidemark::config::Config;
use tidemark::domain::value::Value;
use tidemark::sink::batch::PendingRow;
use tidemark::sink::dialect::Target;
use tidemark::sink::evolve::Step;
use tidemark::sink::record::{OffsetClaim, Position, SinkOp, TopicPartition};
use tidemark::sink::shape::{ColumnKind, SinkColumn, TableShape};
use tidemark::sink::warehouse::{Flush, TableFlush, Warehouse, WarehouseError};

const TOPIC: &str = "fence.public.t";

fn shape() -> TableShape {
    TableShape {
        columns: vec![
            SinkColumn {
                name: "id".into(),
                kind: ColumnKind::Int64,
            },
            SinkColumn {
                name: "name".into(),
                kind: ColumnKind::Text,
            },
        ],
        key: vec!["id".into()],
        renamed: Vec::new(),
    }
}

fn upsert(id: i64, name: &str, lsn: u64) -> PendingRow {
    row(
        SinkOp::Upsert,
        vec![Value::Int64(id), Value::Text(name.into())],
        lsn,
    )
}

fn delete(id: i64, lsn: u64) -> PendingRow {
    row(SinkOp::Delete, vec![Value::Int64(id)], lsn)
}

fn row(op: SinkOp, values: Vec<Value>, lsn: u64) -> PendingRow {
    PendingRow {
        op,
        position: Position {
            commit_lsn: lsn,
            seq: 0,
        },
        values,
        unchanged: Vec::new(),
        partition: Arc::new(TopicPartition {
            topic: TOPIC.into(),
            partition: 0,
        }),
    }
}

/// A flush of `rows` moving partition 0's offset from `expected` to `next`.
fn flush(create: bool, rows: Vec<PendingRow>, expected: Option<i64>, next: i64) -> Arc<Flush> {
    Arc::new(Flush {
        tables: vec![TableFlush {
            target: target(),
            shape: Arc::new(shape()),
            steps: if create {
                vec![Step::Create(shape())]
            } else {
                Vec::new()
            },
            stored: shape(),
            record_shape: create,
            soft_delete: false,
            truncate: None,
            rows,
        }],
        offsets: vec![OffsetClaim {
            topic: TOPIC.into(),
            partition: 0,
            expected,
            next,
        }],
    })
}

fn target() -> Target {
    Target {
        schema: "main".into(),
        name: "t".into(),
    }
}

async fn open(sink_section: &str) -> Warehouse {
    let config = Config::from_toml_with_env(
        &format!(
            "name = \"fence\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[sink]\n{sink_section}\n"
        ),
        "test",
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sink = config.sink.unwrap_or_else(|| panic!("[sink]"));
    Warehouse::open(&sink)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn apply(warehouse: &mut Warehouse, flush: Arc<Flush>) -> Result<(), WarehouseError> {
    warehouse.apply(flush, "fence-sink").await
}

/// A's first flush, then B's (the new owner: the key's update and delete), then A's late
/// one, which must be refused.
async fn new_owner_then_stale_flush(a: &mut Warehouse, b: &mut Warehouse) {
    apply(
        a,
        flush(
            true,
            vec![upsert(1, "one", 10), upsert(2, "two", 10)],
            None,
            3,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("A's first flush: {e}"));
    apply(b, flush(false, vec![delete(1, 30)], Some(3), 6))
        .await
        .unwrap_or_else(|e| panic!("B took the partition at offset 3: {e}"));
    // A still thinks the partition is its own, stored at 3, with offsets 3..5 pending: an
    // update of key 1 older than B's delete.
    let stale = apply(
        a,
        flush(false, vec![upsert(1, "one, updated", 20)], Some(3), 5),
    )
    .await;
    assert!(
        matches!(stale, Err(WarehouseError::Fenced { claims: 1, held: 0 })),
        "a flush claiming offsets another instance moved is refused: {stale:?}"
    );
    // B goes on from where it stored.
    apply(b, flush(false, vec![upsert(3, "three", 40)], Some(6), 8))
        .await
        .unwrap_or_else(|e| panic!("B's next flush: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_instance_cannot_bring_back_a_deleted_row_in_postgres() {
    let (warehouse_db, client) = database("sink_fencing_pg").await;
    let section = format!(
        "kind = \"postgres\"\nurl = \"{}\"\nschema = \"main\"",
        warehouse_db.url()
    );
    let (mut a, mut b) = (open(&section).await, open(&section).await);
    new_owner_then_stale_flush(&mut a, &mut b).await;
    let rows = common::text_rows(&client, "SELECT id::text, name FROM main.t ORDER BY id")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows,
        vec![
            vec![Some("2".into()), Some("two".into())],
            vec![Some("3".into()), Some("three".into())]
        ]
    );
    let stored = common::text_rows(
        &client,
        "SELECT next_offset::text FROM main.__tidemark_offsets WHERE consumer_group = 'fence-sink'",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, vec![vec![Some("8".into())]]);

    // Two instances claiming the same offset at once: exactly one commits.
    let (first, second) = tokio::join!(
        apply(&mut a, flush(false, vec![upsert(4, "a", 50)], Some(8), 9)),
        apply(&mut b, flush(false, vec![upsert(4, "b", 50)], Some(8), 9)),
    );
    let committed = [&first, &second].iter().filter(|r| r.is_ok()).count();
    let refused = [&first, &second]
        .iter()
        .filter(|r| matches!(r, Err(WarehouseError::Fenced { .. })))
        .count();
    assert_eq!(
        (committed, refused),
        (1, 1),
        "one commits, one is refused: {first:?} {second:?}"
    );
    let four = common::text_rows(&client, "SELECT count(*)::text FROM main.t WHERE id = 4")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(four, vec![vec![Some("1".into())]]);
}

#[cfg(feature = "duckdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_refused_in_duckdb() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("fence.duckdb");
    let section = format!("kind = \"duckdb\"\nurl = \"{}\"", path.display());
    // A DuckDB file has one writing process: the two "instances" share it here, which is
    // enough to show the claim check (the race itself needs PostgreSQL, above).
    let mut warehouse = open(&section).await;
    apply(
        &mut warehouse,
        flush(
            true,
            vec![upsert(1, "one", 10), upsert(2, "two", 10)],
            None,
            3,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    apply(
        &mut warehouse,
        flush(false, vec![delete(1, 30)], Some(3), 6),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stale = apply(
        &mut warehouse,
        flush(false, vec![upsert(1, "one, updated", 20)], Some(3), 5),
    )
    .await;
    assert!(
        matches!(stale, Err(WarehouseError::Fenced { claims: 1, held: 0 })),
        "{stale:?}"
    );
    let again = apply(
        &mut warehouse,
        flush(true, vec![upsert(9, "nine", 10)], None, 2),
    )
    .await;
    assert!(
        matches!(again, Err(WarehouseError::Fenced { .. })),
        "a claim of nothing stored is refused once an offset is stored: {again:?}"
    );
    drop(warehouse);
    let connection = duckdb::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut statement = connection
        .prepare("SELECT id, name FROM main.t ORDER BY id")
        .unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<(i64, String)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, vec![(2, "two".to_string())]);
}

/// A warehouse table altered by hand so that it no longer fits (a column dropped): the
/// flush is refused whole with a definite error naming the table, the cause and the
/// remedy, and neither the rows nor the stored offset move, so nothing is lost once the
/// table is mended and the sink restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_altered_by_hand_refuses_the_flush_with_the_remedy() {
    let (warehouse_db, client) = database("sink_altered_pg").await;
    let section = format!(
        "kind = \"postgres\"\nurl = \"{}\"\nschema = \"main\"",
        warehouse_db.url()
    );
    let mut warehouse = open(&section).await;
    apply(
        &mut warehouse,
        flush(true, vec![upsert(1, "one", 10)], None, 1),
    )
    .await
    .unwrap_or_else(|e| panic!("the first flush: {e}"));
    common::exec(&client, "ALTER TABLE main.t DROP COLUMN name").await;
    let refused = apply(
        &mut warehouse,
        flush(false, vec![upsert(2, "two", 20)], Some(1), 2),
    )
    .await;
    let Err(error) = refused else {
        panic!("a flush into a table without its column was applied")
    };
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    for part in [
        "main.t: MERGE",
        "column \"name\"",
        "altered by hand",
        "tidemark replay",
        "nothing of this batch was applied",
    ] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    let rows = common::text_rows(&client, "SELECT id::text FROM main.t ORDER BY id")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, vec![vec![Some("1".into())]]);
    let stored = common::text_rows(
        &client,
        "SELECT next_offset::text FROM main.__tidemark_offsets WHERE consumer_group = 'fence-sink'",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, vec![vec![Some("1".into())]]);
}
