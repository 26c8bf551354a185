//! The warehouses: DuckDB (embedded, the default), PostgreSQL, and Snowflake (cargo feature
//! `snowflake`; its SQL is always compiled and unit-tested).
//!
//! Each applies a [`Flush`] in one transaction: the consumed offsets, the tables' schema
//! steps, truncates, the staged rows (DuckDB's Arrow appender, PostgreSQL's `COPY`,
//! Snowflake's multi-row `INSERT`), one MERGE per table, and the tables' applied shapes.
//! Either all of it commits or none does, so the offsets stored in the warehouse always
//! describe exactly what it holds. The sequence is written once, in [`transaction`]; each
//! warehouse supplies its primitives (run a statement, stage rows, whether its DDL is
//! transactional) as a [`transaction::Session`].
//!
//! The offsets go first, as a compare-and-set per partition
//! ([`Dialect::store_offsets`]): a flush moves each partition's stored offset from the
//! value its instance found there, or is refused whole ([`WarehouseError::Fenced`]). The
//! consumer group decides who reads a partition; this decides who writes it, so an
//! instance that lost a partition without noticing cannot write older rows over what the
//! new owner applied. (Snowflake commits DDL by itself, so its schema steps
//! run just before that transaction, written to be re-runnable: see [`snowflake_sql`].)

#[cfg(feature = "duckdb")]
pub mod arrow_stage;
#[cfg(feature = "duckdb")]
pub mod duck;
pub mod pg_text;
pub mod postgres;
#[cfg(feature = "snowflake")]
pub mod snowflake;
// Compiled and unit-tested without the feature too, where only its tests use it.
#[cfg_attr(not(feature = "snowflake"), allow(dead_code))]
pub mod snowflake_sql;
pub mod staged;
pub(crate) mod transaction;

use std::collections::HashMap;
use std::sync::Arc;

use super::batch::PendingRow;
use super::dialect::{Dialect, Target};
use super::evolve::Step;
use super::record::{OffsetClaim, Position, SinkOp};
use super::shape::TableShape;
use crate::config::{SinkConfig, SinkKind};

/// Warehouse failures.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// Cannot connect or open.
    #[error("opening the {kind} warehouse {location}: {detail}; check [sink] url and credentials")]
    Open {
        /// Kind.
        kind: &'static str,
        /// URL or path, without secrets.
        location: String,
        /// Cause.
        detail: String,
    },
    /// A statement failed; nothing of the flush was applied.
    #[error(
        "{what}: {detail}; nothing of this batch was applied{}",
        if *.transient { " (retried with backoff)" } else { ". If a warehouse table was altered by hand, make it fit its row in __tidemark_tables again, or drop it and rebuild it with `tidemark replay`" }
    )]
    Statement {
        /// What was being done.
        what: String,
        /// The warehouse's message.
        detail: String,
        /// Whether retrying may succeed (connection lost, a transaction conflict, a lock),
        /// as the warehouse's own error says.
        transient: bool,
    },
    /// A value cannot be staged.
    #[error("staging rows of {table}: {detail}")]
    Stage {
        /// Table.
        table: String,
        /// What is wrong.
        detail: String,
    },
    /// Another instance of the group applied some of the flush's partitions since this
    /// one took them; nothing of the flush was applied.
    #[error(
        "{claims} partition offsets claimed, {held} still where this instance found them: another instance of the group applied the others meanwhile; nothing of this batch was applied, and the sink reads its partitions again from the warehouse's offsets"
    )]
    Fenced {
        /// Partitions in the flush.
        claims: usize,
        /// Claims that held.
        held: u64,
    },
    /// The kind is not compiled in.
    #[error("{0}")]
    Unsupported(String),
}

impl WarehouseError {
    /// Whether retrying may succeed (connection loss, a locked file, a conflict).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WarehouseError::Statement {
                transient: true,
                ..
            }
        )
    }
}

/// A failed statement that retrying will not mend.
pub(crate) fn statement(what: impl Into<String>) -> impl FnOnce(String) -> WarehouseError {
    let what = what.into();
    move |detail| WarehouseError::Statement {
        what,
        detail,
        transient: false,
    }
}

/// Rows of `target` that cannot be staged.
#[cfg(any(feature = "duckdb", feature = "snowflake"))]
pub(crate) fn stage_error<E: std::fmt::Display>(
    target: &Target,
) -> impl FnOnce(E) -> WarehouseError {
    let table = target.to_string();
    move |e| WarehouseError::Stage {
        table,
        detail: e.to_string(),
    }
}

/// One table's part of a flush.
#[derive(Debug)]
pub struct TableFlush {
    /// The warehouse table.
    pub target: Target,
    /// The batch's shape.
    pub shape: Arc<TableShape>,
    /// Schema steps first.
    pub steps: Vec<Step>,
    /// The table's shape after the steps, stored in `__tidemark_tables`.
    pub stored: TableShape,
    /// Whether `stored` differs from the shape recorded (new table, steps): only then, or
    /// with a truncate, is the table's row in `__tidemark_tables` written.
    pub record_shape: bool,
    /// Soft deletes.
    pub soft_delete: bool,
    /// A truncate to apply before the rows.
    pub truncate: Option<Position>,
    /// The folded rows.
    pub rows: Vec<PendingRow>,
}

/// Everything one warehouse transaction applies.
#[derive(Debug, Default)]
pub struct Flush {
    /// Tables.
    pub tables: Vec<TableFlush>,
    /// Each partition's offset, moved from where this instance found it to after the
    /// flush's last record (a compare-and-set: see [`Dialect::store_offsets`]).
    pub offsets: Vec<OffsetClaim>,
}

/// Whether every claim of `flush` held, given how many offset rows its offsets statement
/// changed: one per claim, or the flush is rolled back as [`WarehouseError::Fenced`].
pub(crate) fn check_claims(flush: &Flush, changed: u64) -> Result<(), WarehouseError> {
    if changed == flush.offsets.len() as u64 {
        Ok(())
    } else {
        Err(WarehouseError::Fenced {
            claims: flush.offsets.len(),
            held: changed,
        })
    }
}

/// A managed table as the warehouse remembers it.
#[derive(Debug, Clone)]
pub(crate) struct StoredTable {
    /// Its applied shape.
    pub shape: TableShape,
    /// The newest truncate applied.
    pub truncated: Option<Position>,
}

/// A group's stored offsets: the next offset of each (topic, partition).
pub(crate) type StoredOffsets = HashMap<(String, i32), i64>;

/// Reads a group's stored offsets from another thread (the consumer's rebalance
/// callback), with a connection of its own.
pub(crate) type OffsetsReader =
    Arc<dyn Fn(&str) -> Result<StoredOffsets, WarehouseError> + Send + Sync>;

/// Runs `read` to completion on a thread with a runtime of its own: an offsets reader is
/// called from the consumer's rebalance callback, possibly inside the sink's async runtime,
/// where it cannot block on a future.
pub(crate) fn read_on_own_thread<F, Fut>(read: F) -> Result<StoredOffsets, WarehouseError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<StoredOffsets, WarehouseError>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| statement("reading offsets")(e.to_string()))?;
        runtime.block_on(read())
    })
    .join()
    .map_err(|_| statement("reading offsets")("reader thread panicked".into()))?
}

/// Failure injection for the crash tests: `TIDEMARK_FAILPOINTS=sink.before_commit` aborts
/// the process after the MERGE, before the warehouse commits; `sink.after_commit` after
/// the warehouse committed, before Kafka's offsets are committed.
pub fn failpoint(name: &str) {
    if std::env::var("TIDEMARK_FAILPOINTS")
        .is_ok_and(|points| points.split(',').any(|p| p.trim() == name))
    {
        tracing::error!(failpoint = name, "failpoint reached: aborting the process");
        std::process::abort();
    }
}

/// An open warehouse.
pub enum Warehouse {
    /// DuckDB.
    #[cfg(feature = "duckdb")]
    DuckDb(duck::DuckDbWarehouse),
    /// PostgreSQL.
    Postgres(Box<postgres::PgWarehouse>),
    /// Snowflake.
    #[cfg(feature = "snowflake")]
    Snowflake(Box<snowflake::SnowflakeWarehouse>),
}

impl Warehouse {
    /// Opens the warehouse `[sink]` names and creates the bookkeeping tables.
    pub async fn open(config: &SinkConfig) -> Result<Self, WarehouseError> {
        let warehouse = match config.kind {
            #[cfg(feature = "duckdb")]
            SinkKind::Duckdb => Warehouse::DuckDb(duck::DuckDbWarehouse::open(config).await?),
            #[cfg(not(feature = "duckdb"))]
            SinkKind::Duckdb => {
                return Err(WarehouseError::Unsupported(
                    "kind = \"duckdb\" needs tidemark built with its default feature duckdb".into(),
                ));
            }
            SinkKind::Postgres => {
                Warehouse::Postgres(Box::new(postgres::PgWarehouse::open(config).await?))
            }
            #[cfg(feature = "snowflake")]
            SinkKind::Snowflake => {
                Warehouse::Snowflake(Box::new(snowflake::SnowflakeWarehouse::open(config).await?))
            }
            #[cfg(not(feature = "snowflake"))]
            SinkKind::Snowflake => {
                return Err(WarehouseError::Unsupported(
                    "kind = \"snowflake\" needs tidemark built with the snowflake feature: cargo build --release --features snowflake".into(),
                ));
            }
        };
        Ok(warehouse)
    }

    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(_) => Dialect::DuckDb,
            Warehouse::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(_) => Dialect::Snowflake,
        }
    }

    /// The schema the bookkeeping tables live in.
    pub fn bookkeeping_schema(&self) -> &str {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(_) => "main",
            Warehouse::Postgres(w) => w.bookkeeping_schema(),
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.bookkeeping_schema(),
        }
    }

    /// Every managed table.
    pub(crate) async fn load_tables(
        &mut self,
    ) -> Result<HashMap<Target, StoredTable>, WarehouseError> {
        let rows = match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.load_tables().await?,
            Warehouse::Postgres(w) => w.load_tables().await?,
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.load_tables().await?,
        };
        parse_tables(rows)
    }

    /// A reader of stored offsets usable from another thread.
    pub(crate) fn offsets_reader(&self) -> OffsetsReader {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.offsets_reader(),
            Warehouse::Postgres(w) => w.offsets_reader(),
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.offsets_reader(),
        }
    }

    /// Applies `flush` in one transaction, offsets of `group` included.
    pub async fn apply(&mut self, flush: Arc<Flush>, group: &str) -> Result<(), WarehouseError> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.apply(flush, group).await,
            Warehouse::Postgres(w) => w.apply(flush, group).await,
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.apply(flush, group).await,
        }
    }

    /// Runs statements in one transaction (replay's swap of rebuilt tables).
    pub async fn execute(&mut self, statements: Vec<String>) -> Result<(), WarehouseError> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.execute(statements).await,
            Warehouse::Postgres(w) => w.execute(statements).await,
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.execute(statements).await,
        }
    }

    /// The column names `target` has in the warehouse, or none if it does not exist.
    pub async fn columns(
        &mut self,
        target: &Target,
    ) -> Result<Option<Vec<String>>, WarehouseError> {
        match self {
            #[cfg(feature = "duckdb")]
            Warehouse::DuckDb(w) => w.columns(target).await,
            Warehouse::Postgres(w) => w.columns(target).await,
            #[cfg(feature = "snowflake")]
            Warehouse::Snowflake(w) => w.columns(target).await,
        }
    }
}

/// Rows of `__tidemark_tables` (target, shape JSON, truncated lsn, seq) into stored tables.
fn parse_tables(
    rows: Vec<(String, String, Option<i64>, Option<i64>)>,
) -> Result<HashMap<Target, StoredTable>, WarehouseError> {
    let mut tables = HashMap::new();
    for (target, shape, lsn, seq) in rows {
        let Some((schema, name)) = crate::domain::names::split_qualified(&target) else {
            continue;
        };
        let shape: TableShape = serde_json::from_str(&shape).map_err(|e| {
            statement(format!("reading the stored shape of {target} in __tidemark_tables"))(format!(
                "{e}; the row was edited by hand? Delete it and tidemark re-learns the table's shape from the next record"
            ))
        })?;
        let truncated = match (lsn, seq) {
            (Some(l), Some(s)) => Some(Position {
                commit_lsn: l as u64,
                seq: s as u64,
            }),
            _ => None,
        };
        tables.insert(Target { schema, name }, StoredTable { shape, truncated });
    }
    Ok(tables)
}

/// The statements that apply a table's staged rows: one MERGE, or for a keyless table its
/// removals (when it has any) and an append. Shared by every warehouse so the choice is
/// made in one place.
pub(crate) fn apply_statements(dialect: Dialect, table: &TableFlush, stage: &str) -> Vec<String> {
    if table.shape.key.is_empty() {
        let mut statements = Vec::new();
        if table.rows.iter().any(|r| r.op == SinkOp::Delete) {
            statements.push(dialect.remove_equal(
                &table.target,
                stage,
                &table.shape,
                table.soft_delete,
            ));
        }
        statements.push(dialect.append(&table.target, stage, &table.shape));
        return statements;
    }
    // The columns some staged row lists as unchanged TOAST.
    let unchanged: std::collections::BTreeSet<String> = table
        .rows
        .iter()
        .flat_map(|r| r.unchanged.iter().cloned())
        .collect();
    vec![dialect.merge(&super::dialect::MergeSpec {
        target: &table.target,
        stage,
        shape: &table.shape,
        soft_delete: table.soft_delete,
        unchanged: &unchanged,
    })]
}
