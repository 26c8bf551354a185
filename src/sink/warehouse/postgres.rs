//! PostgreSQL 15 or later as the warehouse (`MERGE` arrived in 15).
//!
//! A flush is one transaction: the offsets' compare-and-set (first, so a refused flush
//! does no work and instances claiming the same partition wait on its rows), schema
//! steps, then per table a temporary staging table filled with `COPY … FROM STDIN` in
//! text format (every value in its lossless text form, [`super::pg_text`]) and one MERGE.
//! Warehouse tables get an index on the key columns so the MERGE's join does not scan the
//! table.
//!
//! A transaction that fails with a transient error (the connection lost, the server
//! shutting down, or read-only for now: SQLSTATE 25006, a standby during a failover) is
//! retried by the runner on a new session, and a server that cannot be reached at that
//! reconnect counts as transient too: the sink waits out a warehouse outage.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;

use super::pg_text::copy_row;
use super::staged::Staged;
use super::transaction::{Session, apply_flush, execute_all};
use super::{Flush, OffsetsReader, TableFlush, WarehouseError, read_on_own_thread};
use crate::config::SinkConfig;
use crate::pg::settings::ConnectionSettings;
use crate::pg::{connect_sql, describe, is_transient_sql};
use crate::sink::dialect::{Dialect, Target};

const DIALECT: Dialect = Dialect::Postgres;
/// The advisory lock that sink instances sharing a warehouse hold while they change its
/// tables' definitions (creating, altering), so two of them never race on the catalog.
const DDL_LOCK: i64 = 0x7469_6465_6d61_726b; // "tidemark"

/// An open PostgreSQL warehouse.
pub struct PgWarehouse {
    client: tokio_postgres::Client,
    settings: ConnectionSettings,
    schema: String,
    /// The next transaction starts on a new session: the last one failed, or never
    /// finished (its future was dropped mid-transaction, which would leave `BEGIN` open on
    /// this session). An open session can be the problem itself, as on a server that
    /// became a read-only standby in a failover, while a new connection reaches the new
    /// primary.
    fresh_session: bool,
}

/// The warehouse's connection settings: `[sink] url`, with `[sink] password` over the URL's.
pub(crate) fn settings_of(config: &SinkConfig) -> Result<ConnectionSettings, WarehouseError> {
    let mut settings =
        ConnectionSettings::from_url(&config.url).map_err(|e| WarehouseError::Open {
            kind: "PostgreSQL",
            location: "[sink] url".into(),
            detail: e.to_string(),
        })?;
    if let Some(password) = &config.password {
        settings.password = Some(password.clone());
    }
    settings.application_name = "tidemark-sink".into();
    Ok(settings)
}

async fn connect(settings: &ConnectionSettings) -> Result<tokio_postgres::Client, WarehouseError> {
    connect_sql(settings)
        .await
        .map_err(|e| WarehouseError::Open {
            kind: "PostgreSQL",
            location: settings.redacted_url(),
            detail: e.to_string(),
        })
}

/// A failed statement; transient as for the source's connections, and also when the server
/// is read-only for now (SQLSTATE 25006: a standby during a failover, or writes switched
/// off for maintenance), which the sink waits out instead of stopping.
fn sql_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> WarehouseError {
    let what = what.into();
    move |e| {
        let read_only =
            e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION);
        WarehouseError::Statement {
            what,
            detail: describe(&e),
            transient: read_only || is_transient_sql(&e),
        }
    }
}

impl PgWarehouse {
    /// Connects and creates the bookkeeping tables (in `sink.schema`, default `public`).
    pub async fn open(config: &SinkConfig) -> Result<Self, WarehouseError> {
        let settings = settings_of(config)?;
        let client = connect(&settings).await?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(sql_error("reading the server version"))?
            .get(0);
        if version < 150_000 {
            return Err(WarehouseError::Open {
                kind: "PostgreSQL",
                location: settings.redacted_url(),
                detail: format!(
                    "server version {version} has no MERGE; the warehouse needs PostgreSQL 15 or later"
                ),
            });
        }
        let schema = config.schema.clone().unwrap_or_else(|| "public".into());
        // Several sink instances may start at once: `CREATE … IF NOT EXISTS` is not safe
        // against a concurrent create, so they take turns.
        let mut client = client;
        let transaction = client
            .transaction()
            .await
            .map_err(sql_error("creating the bookkeeping tables"))?;
        let mut statements = vec![format!("SELECT pg_advisory_xact_lock({DDL_LOCK})")];
        statements.extend(DIALECT.bookkeeping(&schema));
        for sql in statements {
            transaction
                .batch_execute(&sql)
                .await
                .map_err(sql_error("creating the bookkeeping tables"))?;
        }
        transaction
            .commit()
            .await
            .map_err(sql_error("creating the bookkeeping tables"))?;
        Ok(PgWarehouse {
            client,
            settings,
            schema,
            fresh_session: false,
        })
    }

    pub(super) fn bookkeeping_schema(&self) -> &str {
        &self.schema
    }

    pub(super) async fn load_tables(
        &mut self,
    ) -> Result<Vec<(String, String, Option<i64>, Option<i64>)>, WarehouseError> {
        let rows = self
            .client
            .query(&DIALECT.load_tables(&self.schema), &[])
            .await
            .map_err(sql_error("reading __tidemark_tables"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    pub(super) fn offsets_reader(&self) -> OffsetsReader {
        let settings = self.settings.clone();
        let schema = self.schema.clone();
        Arc::new(move |group: &str| {
            let (settings, schema, group) = (settings.clone(), schema.clone(), group.to_owned());
            read_on_own_thread(move || async move {
                let client = connect(&settings).await?;
                let rows = client
                    .query(&DIALECT.load_offsets(&schema, &group), &[])
                    .await
                    .map_err(sql_error("reading __tidemark_offsets"))?;
                Ok(rows
                    .iter()
                    .map(|r| ((r.get::<_, String>(0), r.get::<_, i32>(1)), r.get(2)))
                    .collect())
            })
        })
    }

    pub(super) async fn columns(
        &mut self,
        target: &Target,
    ) -> Result<Option<Vec<String>>, WarehouseError> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&target.schema, &target.name],
            )
            .await
            .map_err(sql_error(format!("describing {target}")))?;
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok((!names.is_empty()).then_some(names))
    }

    /// Connects again when the connection was lost or the last transaction did not end
    /// well (a retried flush after an outage), then marks the session in doubt until
    /// [`Self::after`] sees the transaction end.
    async fn reconnect_if_needed(&mut self) -> Result<(), WarehouseError> {
        if self.client.is_closed() || self.fresh_session {
            tracing::info!(warehouse = %self.settings.redacted_url(), "reconnecting to the warehouse");
            // Unlike at start, a server that cannot be reached now is an outage to wait out.
            self.client =
                connect_sql(&self.settings)
                    .await
                    .map_err(|e| WarehouseError::Statement {
                        what: format!("reconnecting to {}", self.settings.redacted_url()),
                        transient: e.is_transient(),
                        detail: e.to_string(),
                    })?;
        }
        self.fresh_session = true;
        Ok(())
    }

    /// The transaction ended: committed, or failed (its `ROLLBACK` may have failed too), in
    /// which case the next one runs on a new session.
    fn after<T>(&mut self, result: Result<T, WarehouseError>) -> Result<T, WarehouseError> {
        self.fresh_session = result.is_err();
        result
    }

    pub(super) async fn execute(&mut self, statements: Vec<String>) -> Result<(), WarehouseError> {
        self.reconnect_if_needed().await?;
        let mut session = PgSession {
            client: &self.client,
            schema: &self.schema,
        };
        let result = execute_all(&mut session, &statements).await;
        self.after(result)
    }

    pub(super) async fn apply(
        &mut self,
        flush: Arc<Flush>,
        group: &str,
    ) -> Result<(), WarehouseError> {
        self.reconnect_if_needed().await?;
        let mut session = PgSession {
            client: &self.client,
            schema: &self.schema,
        };
        let result = apply_flush(&mut session, &flush, group).await;
        self.after(result)
    }
}

/// A flush's primitives on the warehouse's connection: staging tables are temporary and
/// filled with `COPY … FROM STDIN` in text format.
struct PgSession<'a> {
    client: &'a tokio_postgres::Client,
    schema: &'a str,
}

impl Session for PgSession<'_> {
    const DIALECT: Dialect = DIALECT;
    const TRANSACTIONAL_DDL: bool = true;

    fn schema(&self) -> &str {
        self.schema
    }

    async fn execute(&mut self, sql: &str, what: &str) -> Result<(), WarehouseError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(sql_error(what))
    }

    async fn store_offsets(&mut self, sql: &str) -> Result<u64, WarehouseError> {
        self.client
            .execute(sql, &[])
            .await
            .map_err(sql_error("storing offsets"))
    }

    /// Held to the commit: another instance's steps on the same tables wait, then find
    /// them applied (the steps are written to be re-runnable).
    async fn lock_schema(&mut self) -> Result<(), WarehouseError> {
        self.client
            .batch_execute(&format!("SELECT pg_advisory_xact_lock({DDL_LOCK})"))
            .await
            .map_err(sql_error("taking the schema-change lock"))
    }

    async fn stage(&mut self, stage: &str, table: &TableFlush) -> Result<(), WarehouseError> {
        let (target, staged) = (&table.target, &Staged::new(&table.shape, &table.rows));
        let copy_failed = || sql_error(format!("{target}: COPY"));
        let sink = self
            .client
            .copy_in(&format!("COPY {stage} FROM STDIN"))
            .await
            .map_err(copy_failed())?;
        futures_util::pin_mut!(sink);
        let mut buffer = Vec::with_capacity(1 << 20);
        let mut scratch = String::new();
        for row in staged.rows() {
            copy_row(staged, row, &mut scratch, &mut buffer);
            if buffer.len() >= 1 << 20 {
                let chunk = Bytes::from(std::mem::take(&mut buffer));
                sink.send(chunk).await.map_err(copy_failed())?;
            }
        }
        if !buffer.is_empty() {
            sink.send(Bytes::from(buffer))
                .await
                .map_err(copy_failed())?;
        }
        sink.finish().await.map_err(copy_failed())?;
        Ok(())
    }
}
