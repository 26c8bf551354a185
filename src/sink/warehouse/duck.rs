//! DuckDB, embedded: a database file (`[sink] url` is its path).
//!
//! DuckDB is synchronous, so every call runs on the blocking pool with the connection
//! behind a mutex. A flush stages each table's rows in a scratch table through the Arrow
//! appender (inside the transaction, so it is never visible or persisted), then MERGEs
//! (DuckDB 1.4). A DuckDB file has one writer process: a second tidemark sink on the same
//! file fails to open it with DuckDB's lock error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use duckdb::Connection;

use super::staged::Staged;
use super::transaction::{Session, apply_flush, execute_all};
use super::{Flush, OffsetsReader, TableFlush, WarehouseError, stage_error, statement};
use crate::config::SinkConfig;
use crate::sink::dialect::{Dialect, Target};

const DIALECT: Dialect = Dialect::DuckDb;
const SCHEMA: &str = "main";

/// An open DuckDB file.
pub struct DuckDbWarehouse {
    connection: Arc<Mutex<Connection>>,
}

fn lock(connection: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A DuckDB error while doing `what`: a transaction conflict or a lock held by another
/// process may clear, anything else will not.
fn duck_error(what: impl Into<String>) -> impl Fn(duckdb::Error) -> WarehouseError {
    let what = what.into();
    move |error| {
        let detail = error.to_string();
        let transient = detail.contains("Conflict") || detail.contains("Could not set lock");
        WarehouseError::Statement {
            what: what.clone(),
            detail,
            transient,
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WarehouseError> + Send + 'static,
) -> Result<T, WarehouseError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| statement("DuckDB worker")(e.to_string()))?
}

impl DuckDbWarehouse {
    /// Opens (creating) the file and the bookkeeping tables.
    pub async fn open(config: &SinkConfig) -> Result<Self, WarehouseError> {
        let opened = config.url.clone();
        let connection = blocking(move || {
            let open_error = |e: duckdb::Error| WarehouseError::Open {
                kind: "DuckDB",
                location: opened.clone(),
                detail: e.to_string(),
            };
            if let Some(parent) = std::path::Path::new(&opened).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| WarehouseError::Open {
                        kind: "DuckDB",
                        location: opened.clone(),
                        detail: e.to_string(),
                    })?;
                }
            }
            let connection = Connection::open(&opened).map_err(open_error)?;
            for sql in DIALECT.bookkeeping(SCHEMA) {
                connection
                    .execute_batch(&sql)
                    .map_err(duck_error("creating the bookkeeping tables"))?;
            }
            Ok(connection)
        })
        .await?;
        Ok(DuckDbWarehouse {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub(super) async fn load_tables(
        &mut self,
    ) -> Result<Vec<(String, String, Option<i64>, Option<i64>)>, WarehouseError> {
        let connection = self.connection.clone();
        blocking(move || {
            let connection = lock(&connection);
            let fail = duck_error("reading __tidemark_tables");
            let mut query = connection
                .prepare(&DIALECT.load_tables(SCHEMA))
                .map_err(&fail)?;
            let rows = query
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(&fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&fail)
        })
        .await
    }

    pub(super) fn offsets_reader(&self) -> OffsetsReader {
        // A connection of its own, so a rebalance does not wait for a flush in progress;
        // the shared one (waiting) if DuckDB cannot open another.
        let connection = match lock(&self.connection).try_clone() {
            Ok(c) => Arc::new(Mutex::new(c)),
            Err(error) => {
                tracing::warn!(%error, "no second DuckDB connection for reading offsets; sharing the sink's");
                self.connection.clone()
            }
        };
        Arc::new(move |group: &str| {
            let connection = lock(&connection);
            let fail = duck_error("reading __tidemark_offsets");
            let mut query = connection
                .prepare(&DIALECT.load_offsets(SCHEMA, group))
                .map_err(&fail)?;
            let rows = query
                .query_map([], |row| {
                    Ok((
                        (row.get::<_, String>(0)?, row.get::<_, i32>(1)?),
                        row.get(2)?,
                    ))
                })
                .map_err(&fail)?;
            rows.collect::<Result<HashMap<_, _>, _>>().map_err(&fail)
        })
    }

    pub(super) async fn columns(
        &mut self,
        target: &Target,
    ) -> Result<Option<Vec<String>>, WarehouseError> {
        let connection = self.connection.clone();
        let target = target.clone();
        blocking(move || {
            let connection = lock(&connection);
            let fail = duck_error(format!("describing {target}"));
            let mut query = connection
                .prepare(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                )
                .map_err(&fail)?;
            let names = query
                .query_map([&target.schema, &target.name], |row| row.get::<_, String>(0))
                .map_err(&fail)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&fail)?;
            Ok((!names.is_empty()).then_some(names))
        })
        .await
    }

    pub(super) async fn execute(&mut self, statements: Vec<String>) -> Result<(), WarehouseError> {
        let connection = self.connection.clone();
        blocking(move || {
            let connection = lock(&connection);
            run_ready(execute_all(&mut DuckSession(&connection), &statements))
        })
        .await
    }

    pub(super) async fn apply(
        &mut self,
        flush: Arc<Flush>,
        group: &str,
    ) -> Result<(), WarehouseError> {
        let connection = self.connection.clone();
        let group = group.to_owned();
        blocking(move || {
            let connection = lock(&connection);
            run_ready(apply_flush(&mut DuckSession(&connection), &flush, &group))
        })
        .await
    }
}

/// A flush's primitives on a locked DuckDB connection. DuckDB is synchronous: its
/// futures finish on their first poll, and [`run_ready`] drives them on the blocking pool
/// with the connection locked for the whole transaction.
struct DuckSession<'a>(&'a Connection);

impl Session for DuckSession<'_> {
    const DIALECT: Dialect = DIALECT;
    const TRANSACTIONAL_DDL: bool = true;

    fn schema(&self) -> &str {
        SCHEMA
    }

    async fn execute(&mut self, sql: &str, what: &str) -> Result<(), WarehouseError> {
        self.0.execute_batch(sql).map_err(duck_error(what))
    }

    async fn store_offsets(&mut self, sql: &str) -> Result<u64, WarehouseError> {
        let changed = self
            .0
            .execute(sql, [])
            .map_err(duck_error("storing offsets"))?;
        Ok(changed as u64)
    }

    async fn stage(&mut self, stage: &str, table: &TableFlush) -> Result<(), WarehouseError> {
        let (target, staged) = (&table.target, &Staged::new(&table.shape, &table.rows));
        let batch = super::arrow_stage::record_batch(staged).map_err(stage_error(target))?;
        let fail = duck_error(format!("{target}: staging"));
        let mut appender = self.0.appender_to_db(stage, SCHEMA).map_err(&fail)?;
        appender.append_record_batch(batch).map_err(&fail)?;
        appender.flush().map_err(&fail)
    }
}

/// The result of a future that never waits (a [`DuckSession`]'s), polled once.
fn run_ready<T>(
    work: impl std::future::Future<Output = Result<T, WarehouseError>>,
) -> Result<T, WarehouseError> {
    let work = std::pin::pin!(work);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match work.poll(&mut context) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(statement("DuckDB flush")(
            "a DuckDB step waited on I/O, which a synchronous DuckDB call never does".into(),
        )),
    }
}
