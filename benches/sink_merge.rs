//! The sink's apply rate against a bare bulk load, side by side in one run, for DuckDB and
//! PostgreSQL at batch sizes of 1k, 10k and 100k rows.
//!
//! - **bare bulk load**: the batch's staged rows (the same columns the sink stages:
//!   operation, position, unchanged list, then the table's columns) loaded into a plain
//!   table in one transaction with the warehouse's bulk path: DuckDB's Arrow appender,
//!   PostgreSQL's `COPY … FROM STDIN`. Nothing else: no MERGE, no offsets.
//! - **tidemark MERGE**: the same number of rows applied as the sink applies a flush
//!   ([`Warehouse::apply`]): staging table, bulk load, one MERGE into the target (half the
//!   rows update existing keys, half insert new ones), the offsets row, commit.
//!
//! Rows have ~120 bytes: `id bigint` key, `name text`, `amount numeric(12,2)`,
//! `at timestamptz`, `flag bool`, `note text`.
//!
//! `cargo bench --bench sink_merge`; `SINK_ROUNDS` (default 3), `SINK_SIZES` (default
//! `1000,10000,100000`), `SINK_WAREHOUSES` (default `duckdb,postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::config::Config;
use tidemark::domain::value::Value;
use tidemark::sink::batch::PendingRow;
use tidemark::sink::dialect::{Dialect, Target};
use tidemark::sink::evolve::Step;
use tidemark::sink::record::{OffsetClaim, Position, SinkOp, TopicPartition};
use tidemark::sink::shape::{ColumnKind, SinkColumn, TableShape};
use tidemark::sink::warehouse::staged::Staged;
use tidemark::sink::warehouse::{Flush, TableFlush, Warehouse};
use tidemark::testing::PgCluster;

mod common;
use common::{env_number, median};

fn shape() -> TableShape {
    let column = |name: &str, kind| SinkColumn {
        name: name.into(),
        kind,
    };
    TableShape {
        columns: vec![
            column("id", ColumnKind::Int64),
            column("name", ColumnKind::Text),
            column(
                "amount",
                ColumnKind::Decimal {
                    precision: 12,
                    scale: 2,
                },
            ),
            column("at", ColumnKind::TimestampTz),
            column("flag", ColumnKind::Bool),
            column("note", ColumnKind::Text),
        ],
        key: vec!["id".into()],
        renamed: Vec::new(),
    }
}

/// `count` upserts with keys from `first`, at positions after `lsn`, sorted by key as the
/// sink sorts a batch.
fn rows(first: i64, count: usize, lsn: u64) -> Vec<PendingRow> {
    let partition = Arc::new(TopicPartition {
        topic: "bench.public.t".into(),
        partition: 0,
    });
    (0..count as i64)
        .map(|i| {
            let id = first + i;
            PendingRow {
                op: SinkOp::Upsert,
                position: Position {
                    commit_lsn: lsn + i as u64,
                    seq: 0,
                },
                values: vec![
                    Value::Int64(id),
                    Value::Text(format!("name-{id}")),
                    Value::Numeric(format!("{}.{:02}", id % 100_000, id % 100)),
                    Value::TimestampTz(1_700_000_000_000_000 + id * 1_000),
                    Value::Bool(id % 2 == 0),
                    Value::Text(format!("{id:0>64}")),
                ],
                unchanged: Vec::new(),
                partition: partition.clone(),
            }
        })
        .collect()
}

/// One flush of `rows` into `target`, moving the offset of `target`'s own partition from
/// `stored` on by one (the sink's compare-and-set: the bench is the partition's only
/// writer).
fn flush(
    target: &Target,
    shape: &Arc<TableShape>,
    rows: Vec<PendingRow>,
    stored: &mut Option<i64>,
) -> Flush {
    let create = stored.is_none();
    let claim = OffsetClaim {
        topic: format!("bench.{}", target.name),
        partition: 0,
        expected: *stored,
        next: stored.unwrap_or(0) + 1,
    };
    *stored = Some(claim.next);
    Flush {
        tables: vec![TableFlush {
            target: target.clone(),
            shape: shape.clone(),
            steps: if create {
                vec![Step::Create((**shape).clone())]
            } else {
                Vec::new()
            },
            stored: (**shape).clone(),
            record_shape: create,
            soft_delete: false,
            truncate: None,
            rows,
        }],
        offsets: vec![claim],
    }
}

/// The bare bulk load of `rows` into a plain table with the staged columns.
enum Bare {
    #[cfg(feature = "duckdb")]
    DuckDb(duckdb::Connection),
    Postgres(tokio_postgres::Client),
}

impl Bare {
    async fn prepare(&mut self, shape: &TableShape) -> anyhow::Result<()> {
        match self {
            #[cfg(feature = "duckdb")]
            Bare::DuckDb(connection) => {
                let columns = Dialect::DuckDb.stage_columns(shape).join(", ");
                connection.execute_batch(&format!(
                    "DROP TABLE IF EXISTS bare; CREATE TABLE bare ({columns})"
                ))?;
            }
            Bare::Postgres(client) => {
                let columns = Dialect::Postgres.stage_columns(shape).join(", ");
                client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS bare; CREATE TABLE bare ({columns})"
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    async fn load(&mut self, shape: &TableShape, rows: &[PendingRow]) -> anyhow::Result<Duration> {
        let staged = Staged::new(shape, rows);
        let started = Instant::now();
        match self {
            #[cfg(feature = "duckdb")]
            Bare::DuckDb(connection) => {
                let batch = tidemark::sink::warehouse::arrow_stage::record_batch(&staged)?;
                connection.execute_batch("BEGIN TRANSACTION")?;
                {
                    let mut appender = connection.appender("bare")?;
                    appender.append_record_batch(batch)?;
                    appender.flush()?;
                }
                connection.execute_batch("COMMIT")?;
            }
            Bare::Postgres(client) => {
                use futures_util::SinkExt;
                let transaction = client.transaction().await?;
                let sink = transaction.copy_in("COPY bare FROM STDIN").await?;
                futures_util::pin_mut!(sink);
                let (mut buffer, mut scratch) = (Vec::with_capacity(1 << 20), String::new());
                for row in rows {
                    tidemark::sink::warehouse::pg_text::copy_row(
                        &staged,
                        row,
                        &mut scratch,
                        &mut buffer,
                    );
                    if buffer.len() >= 1 << 20 {
                        sink.send(bytes::Bytes::from(std::mem::take(&mut buffer)))
                            .await?;
                    }
                }
                sink.send(bytes::Bytes::from(buffer)).await?;
                sink.finish().await?;
                transaction.commit().await?;
            }
        }
        Ok(started.elapsed())
    }
}

struct Measured {
    warehouse: &'static str,
    size: usize,
    bare: f64,
    merge: f64,
}

async fn measure(
    name: &'static str,
    sink_section: &str,
    mut bare: Bare,
    sizes: &[usize],
    rounds: u64,
) -> anyhow::Result<Vec<Measured>> {
    let config = Config::from_toml_with_env(
        &format!(
            "name = \"bench\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[sink]\n{sink_section}\n"
        ),
        "bench",
        std::iter::empty(),
    )?;
    let sink = config
        .sink
        .ok_or_else(|| anyhow::anyhow!("the bench config has a [sink]"))?;
    let mut warehouse = Warehouse::open(&sink).await?;
    let shape = Arc::new(shape());
    let mut measured = Vec::new();
    for &size in sizes {
        let target = Target {
            schema: "main".into(),
            name: format!("merged_{size}"),
        };
        // The target starts with `size` rows, so the first timed batch updates half.
        let mut lsn = 1_000;
        let mut stored = None;
        warehouse
            .apply(
                Arc::new(flush(&target, &shape, rows(0, size, lsn), &mut stored)),
                "bench",
            )
            .await?;
        bare.prepare(&shape).await?;
        let (mut bare_rates, mut merge_rates) = (Vec::new(), Vec::new());
        for round in 0..rounds as i64 {
            lsn += 10 * size as u64;
            // Half the keys exist (updates), half are new (inserts).
            let first = (round + 1) * size as i64 / 2;
            let batch = rows(first, size, lsn);
            let took = bare.load(&shape, &batch).await?;
            bare_rates.push(size as f64 / took.as_secs_f64());
            let started = Instant::now();
            warehouse
                .apply(
                    Arc::new(flush(&target, &shape, batch, &mut stored)),
                    "bench",
                )
                .await?;
            merge_rates.push(size as f64 / started.elapsed().as_secs_f64());
        }
        let (bare, merge) = (median(bare_rates), median(merge_rates));
        eprintln!(
            "{name} {size:>6} rows: bare {bare:>10.0} rows/s, MERGE {merge:>10.0} rows/s = {:.2}x",
            merge / bare
        );
        measured.push(Measured {
            warehouse: name,
            size,
            bare,
            merge,
        });
    }
    Ok(measured)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds = env_number("SINK_ROUNDS", 3);
    let sizes: Vec<usize> = std::env::var("SINK_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let warehouses = std::env::var("SINK_WAREHOUSES").unwrap_or_else(|_| "duckdb,postgres".into());
    let mut results = Vec::new();
    #[cfg(feature = "duckdb")]
    if warehouses.contains("duckdb") {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.duckdb");
        let bare = Bare::DuckDb(duckdb::Connection::open(dir.path().join("bare.duckdb"))?);
        let section = format!("kind = \"duckdb\"\nurl = \"{}\"", path.display());
        results.extend(measure("DuckDB", &section, bare, &sizes, rounds).await?);
    }
    if warehouses.contains("postgres") {
        let cluster = PgCluster::shared()?;
        let merged = cluster.create_database("bench_merge").await?;
        let bare_db = cluster.create_database("bench_bare").await?;
        let bare = Bare::Postgres(bare_db.connect().await?);
        let section = format!(
            "kind = \"postgres\"\nurl = \"{}\"\nschema = \"main\"",
            merged.url()
        );
        results.extend(measure("PostgreSQL", &section, bare, &sizes, rounds).await?);
    }
    println!("\n| warehouse | batch | bare bulk load rows/s | MERGE rows/s | ratio |");
    println!("|---|---|---|---|---|");
    for m in &results {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× |",
            m.warehouse,
            m.size,
            m.bare,
            m.merge,
            m.merge / m.bare
        );
    }
    Ok(())
}
