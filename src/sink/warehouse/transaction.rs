//! The flush transaction, written once for every warehouse.
//!
//! [`apply_flush`] owns the order of a flush and its failpoint; a warehouse supplies only
//! primitives through [`Session`]: run a statement, run the offsets' compare-and-set and
//! say how many rows it changed, fill a staging table, and whether its DDL stays inside a
//! transaction.
//!
//! ```text
//! [DDL outside the transaction, warehouses whose DDL commits by itself (Snowflake):
//!    each table's schema steps, its staging table]
//! BEGIN
//!   offsets compare-and-set            -- refused whole (Fenced) unless every claim holds
//!   [schema lock; each table's steps]  -- warehouses with transactional DDL
//!   per table: truncate, applied shape, stage rows, MERGE (or removals and append)
//!   failpoint sink.before_commit
//! COMMIT                               -- or ROLLBACK on any error
//! ```
//!
//! The offsets go first so a flush whose claims do not hold does no work, and (on
//! PostgreSQL) the claimed offset rows stay locked to the commit: an instance claiming the
//! same partitions waits, then is refused, instead of merging the same keys at once.
//! Schema steps that run outside the transaction are written to be re-runnable, since a
//! crash before the commit leaves them applied but unrecorded.

use super::{Flush, TableFlush, WarehouseError, apply_statements, check_claims, failpoint};
use crate::sink::dialect::Dialect;

/// The primitives one warehouse session supplies to a flush. Its methods run on one
/// session, in the order [`apply_flush`] calls them.
#[allow(async_fn_in_trait)] // crate-internal: each caller names its concrete session
pub(crate) trait Session {
    /// The warehouse's SQL dialect.
    const DIALECT: Dialect;
    /// Whether DDL inside a transaction stays part of it (DuckDB, PostgreSQL), or commits
    /// it (Snowflake), so schema steps and staging tables must come before `BEGIN`.
    const TRANSACTIONAL_DDL: bool;
    /// The schema of the bookkeeping tables.
    fn schema(&self) -> &str;
    /// Runs one statement; `what` names it in an error.
    async fn execute(&mut self, sql: &str, what: &str) -> Result<(), WarehouseError>;
    /// Runs one statement of the offsets' compare-and-set and returns how many offset
    /// rows it changed.
    async fn store_offsets(&mut self, sql: &str) -> Result<u64, WarehouseError>;
    /// Fills the (created, empty) staging table `stage` with `table`'s rows.
    async fn stage(&mut self, stage: &str, table: &TableFlush) -> Result<(), WarehouseError>;
    /// Serialises schema changes with other instances sharing the warehouse, to the end of
    /// the transaction (PostgreSQL's advisory lock); nothing by default.
    async fn lock_schema(&mut self) -> Result<(), WarehouseError> {
        Ok(())
    }
}

/// Applies `flush` in one transaction of `session`, offsets of `group` included: either
/// all of it commits, or none of it (the schema steps of a warehouse without
/// transactional DDL excepted, which are re-runnable).
pub(crate) async fn apply_flush<S: Session>(
    session: &mut S,
    flush: &Flush,
    group: &str,
) -> Result<(), WarehouseError> {
    let dialect = S::DIALECT;
    if !S::TRANSACTIONAL_DDL {
        for (index, table) in flush.tables.iter().enumerate() {
            schema_steps(session, table).await?;
            if !table.rows.is_empty() {
                let sql = dialect.create_stage(&stage_name(index), &table.shape);
                let what = format!("{}: creating the staging table", table.target);
                session.execute(&sql, &what).await?;
            }
        }
    }
    in_transaction(session, true, async |session: &mut S| {
        let mut changed = 0;
        for sql in dialect.store_offsets(session.schema(), group, &flush.offsets) {
            changed += session.store_offsets(&sql).await?;
        }
        check_claims(flush, changed)?;
        let ddl_inside = S::TRANSACTIONAL_DDL;
        if ddl_inside && flush.tables.iter().any(|t| !t.steps.is_empty()) {
            session.lock_schema().await?;
        }
        for (index, table) in flush.tables.iter().enumerate() {
            if ddl_inside {
                schema_steps(session, table).await?;
            }
            apply_table(session, index, table).await?;
        }
        Ok(())
    })
    .await
}

/// Runs `statements` in one transaction of `session` (replay's swap of rebuilt tables).
pub(crate) async fn execute_all<S: Session>(
    session: &mut S,
    statements: &[String],
) -> Result<(), WarehouseError> {
    in_transaction(session, false, async |session: &mut S| {
        for sql in statements {
            session.execute(sql, sql).await?;
        }
        Ok(())
    })
    .await
}

/// `BEGIN`, `work`, then `COMMIT`, or `ROLLBACK` when `work` fails. A flush passes the
/// crash tests' failpoint between its work and the commit.
async fn in_transaction<S: Session>(
    session: &mut S,
    is_flush: bool,
    work: impl AsyncFnOnce(&mut S) -> Result<(), WarehouseError>,
) -> Result<(), WarehouseError> {
    session.execute("BEGIN", "BEGIN").await?;
    if let Err(error) = work(session).await {
        // The error is what matters; a failed rollback (a lost connection) rolls back too.
        let _ = session.execute("ROLLBACK", "ROLLBACK").await;
        return Err(error);
    }
    if is_flush {
        failpoint("sink.before_commit");
    }
    session.execute("COMMIT", "COMMIT").await
}

/// The staging table of a flush's `index`th table.
fn stage_name(index: usize) -> String {
    format!("__tidemark_stage_{index}")
}

async fn schema_steps<S: Session>(
    session: &mut S,
    table: &TableFlush,
) -> Result<(), WarehouseError> {
    let dialect = S::DIALECT;
    for step in &table.steps {
        for sql in dialect.step(&table.target, step, table.soft_delete) {
            let what = format!("{}: {sql}", table.target);
            session.execute(&sql, &what).await?;
        }
    }
    Ok(())
}

/// One table's DML: its truncate, its applied shape, then its rows staged and merged.
async fn apply_table<S: Session>(
    session: &mut S,
    index: usize,
    table: &TableFlush,
) -> Result<(), WarehouseError> {
    let dialect = S::DIALECT;
    let target = &table.target;
    if let Some(position) = table.truncate {
        let sql = dialect.truncate(target, position, table.soft_delete);
        session.execute(&sql, &format!("{target}: {sql}")).await?;
    }
    if table.record_shape || table.truncate.is_some() {
        let sql = dialect.store_table(session.schema(), target, &table.stored, table.truncate);
        let what = format!("{target}: recording its shape in __tidemark_tables");
        session.execute(&sql, &what).await?;
    }
    if table.rows.is_empty() {
        return Ok(());
    }
    let stage = stage_name(index);
    let ddl_inside = S::TRANSACTIONAL_DDL;
    if ddl_inside {
        let sql = dialect.create_stage(&stage, &table.shape);
        let what = format!("{target}: creating the staging table");
        session.execute(&sql, &what).await?;
    } else {
        // Created before the transaction; a failed flush may have left rows in it.
        let what = format!("{target}: emptying the staging table");
        session
            .execute(&format!("DELETE FROM {stage}"), &what)
            .await?;
    }
    session.stage(&stage, table).await?;
    for sql in apply_statements(dialect, table, &stage) {
        let what = match sql.split_whitespace().next() {
            Some("MERGE") => "MERGE",
            Some("INSERT") => "appending rows",
            _ => "removing the rows deletes and updates replace",
        };
        session.execute(&sql, &format!("{target}: {what}")).await?;
    }
    if ddl_inside {
        let what = format!("{target}: dropping the staging table");
        session
            .execute(&format!("DROP TABLE {stage}"), &what)
            .await?;
    }
    Ok(())
}
