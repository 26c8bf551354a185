//! Snowflake as the warehouse (cargo feature `snowflake`), through the `snowflake-api`
//! crate: password or key-pair (JWT) authentication, statements over Snowflake's REST API.
//!
//! Snowflake commits every DDL statement on its own (a `CREATE` or `ALTER` inside a
//! transaction commits it), so a flush runs in two parts:
//!
//! 1. the schema steps and the staging tables (temporary, one per table, dropped with the
//!    session), each committed by itself. The steps are written to be re-runnable
//!    (`CREATE TABLE IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, `DROP COLUMN IF EXISTS`),
//!    since a crash before part 2 commits leaves them applied but unrecorded;
//! 2. one transaction of DML: the consumed offsets (a compare-and-set that refuses the
//!    flush if another instance applied these partitions meanwhile, see
//!    [`Dialect::store_offsets`]), truncates, the staged rows (`INSERT … VALUES`, see
//!    [`super::snowflake_sql`]), one MERGE per table, and each table's applied shape.
//!    Either all of it commits or none does, so the offsets stored in
//!    `__tidemark_offsets` still describe exactly what the tables hold.
//!
//! Results are asked for as JSON (`GO_QUERY_RESULT_FORMAT`: the crate presents itself as
//! Snowflake's Go driver), so reading the bookkeeping tables needs no Arrow decoding.

use std::sync::Arc;

use snowflake_api::{RawQueryResult, SnowflakeApi, SnowflakeApiError};

use super::snowflake_sql::{SnowflakeLocation, insert_statements};
use super::staged::Staged;
use super::transaction::{Session, apply_flush, execute_all};
use super::{
    Flush, OffsetsReader, TableFlush, WarehouseError, read_on_own_thread, stage_error, statement,
};
use crate::config::SinkConfig;
use crate::sink::dialect::{Dialect, Target};

const DIALECT: Dialect = Dialect::Snowflake;

/// How tidemark signs in.
#[derive(Clone)]
enum Credentials {
    Password(String),
    /// A PKCS#8 PEM private key (key-pair authentication).
    KeyPair(String),
}

/// An open Snowflake session.
pub struct SnowflakeWarehouse {
    api: SnowflakeApi,
    location: SnowflakeLocation,
    credentials: Credentials,
    schema: String,
}

fn open_error(location: &SnowflakeLocation, detail: impl Into<String>) -> WarehouseError {
    WarehouseError::Open {
        kind: "Snowflake",
        location: format!(
            "snowflake://{}@{}/{}/{}",
            location.user, location.account, location.database, location.schema
        ),
        detail: detail.into(),
    }
}

/// A failed statement: network trouble may clear, an answer from Snowflake will not.
fn sql_error(what: impl Into<String>) -> impl FnOnce(SnowflakeApiError) -> WarehouseError {
    let what = what.into();
    move |error| {
        let transient = matches!(
            error,
            SnowflakeApiError::RequestError(_) | SnowflakeApiError::EmptyResponse
        );
        WarehouseError::Statement {
            what,
            detail: error.to_string(),
            transient,
        }
    }
}

fn connect(
    location: &SnowflakeLocation,
    credentials: &Credentials,
) -> Result<SnowflakeApi, WarehouseError> {
    let api = match credentials {
        Credentials::Password(password) => SnowflakeApi::with_password_auth(
            &location.account,
            location.warehouse.as_deref(),
            Some(&location.database),
            Some(&location.schema),
            &location.user,
            location.role.as_deref(),
            password,
        ),
        Credentials::KeyPair(pem) => SnowflakeApi::with_certificate_auth(
            &location.account,
            location.warehouse.as_deref(),
            Some(&location.database),
            Some(&location.schema),
            &location.user,
            location.role.as_deref(),
            pem,
        ),
    };
    api.map_err(|e| open_error(location, e.to_string()))
}

/// Runs `sql`, returning its rows as text (JSON results: every cell a string or null).
async fn query(
    api: &SnowflakeApi,
    sql: &str,
    what: &str,
) -> Result<Vec<Vec<Option<String>>>, WarehouseError> {
    match api.exec_raw(sql).await.map_err(sql_error(what))? {
        RawQueryResult::Empty => Ok(Vec::new()),
        RawQueryResult::Json(result) => Ok(result
            .value
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row.as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| match c {
                                        serde_json::Value::Null => None,
                                        serde_json::Value::String(s) => Some(s.clone()),
                                        other => Some(other.to_string()),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()),
        RawQueryResult::Bytes(_) => Err(statement(what.to_owned())(
            "Snowflake answered in Arrow although the session asked for JSON results; is GO_QUERY_RESULT_FORMAT locked by an account policy?".into(),
        )),
    }
}

async fn start_session(api: &SnowflakeApi) -> Result<(), WarehouseError> {
    for sql in [
        "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = 'JSON'",
        "ALTER SESSION SET TIMEZONE = 'UTC'",
    ] {
        query(api, sql, "setting up the session").await?;
    }
    Ok(())
}

impl SnowflakeWarehouse {
    /// Signs in and creates the bookkeeping tables.
    pub async fn open(config: &SinkConfig) -> Result<Self, WarehouseError> {
        let location =
            SnowflakeLocation::parse(&config.url).map_err(|detail| WarehouseError::Open {
                kind: "Snowflake",
                location: "[sink] url".into(),
                detail,
            })?;
        let credentials = match (&config.private_key_file, &config.password) {
            (Some(path), _) => {
                Credentials::KeyPair(std::fs::read_to_string(path).map_err(|e| {
                    open_error(
                        &location,
                        format!("reading sink.private_key_file {}: {e}", path.display()),
                    )
                })?)
            }
            (None, Some(password)) => Credentials::Password(password.expose().to_owned()),
            (None, None) => {
                return Err(open_error(
                    &location,
                    "no credentials: set sink.private_key_file (key-pair auth) or TIDEMARK_SINK_PASSWORD",
                ));
            }
        };
        let api = connect(&location, &credentials)?;
        start_session(&api).await?;
        let schema = config
            .schema
            .clone()
            .unwrap_or_else(|| location.schema.clone());
        for sql in DIALECT.bookkeeping(&schema) {
            query(&api, &sql, "creating the bookkeeping tables").await?;
        }
        Ok(SnowflakeWarehouse {
            api,
            location,
            credentials,
            schema,
        })
    }

    /// Runs a query and returns its rows as text (every cell as Snowflake prints it).
    pub async fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WarehouseError> {
        query(&self.api, sql, sql).await
    }

    pub(super) fn bookkeeping_schema(&self) -> &str {
        &self.schema
    }

    pub(super) async fn load_tables(
        &mut self,
    ) -> Result<Vec<(String, String, Option<i64>, Option<i64>)>, WarehouseError> {
        let rows = query(
            &self.api,
            &DIALECT.load_tables(&self.schema),
            "reading __tidemark_tables",
        )
        .await?;
        let number = |cell: Option<&Option<String>>| {
            cell.cloned().flatten().and_then(|t| t.parse::<i64>().ok())
        };
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.first().cloned().flatten().unwrap_or_default(),
                    r.get(1).cloned().flatten().unwrap_or_default(),
                    number(r.get(2)),
                    number(r.get(3)),
                )
            })
            .collect())
    }

    pub(super) fn offsets_reader(&self) -> OffsetsReader {
        let (location, credentials, schema) = (
            self.location.clone(),
            self.credentials.clone(),
            self.schema.clone(),
        );
        Arc::new(move |group: &str| {
            let (location, credentials, schema, group) = (
                location.clone(),
                credentials.clone(),
                schema.clone(),
                group.to_owned(),
            );
            // A session of its own.
            read_on_own_thread(move || async move {
                let api = connect(&location, &credentials)?;
                start_session(&api).await?;
                let rows = query(
                    &api,
                    &DIALECT.load_offsets(&schema, &group),
                    "reading __tidemark_offsets",
                )
                .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|r| {
                        let topic = r.first().cloned().flatten()?;
                        let partition = r.get(1).cloned().flatten()?.parse().ok()?;
                        let next = r.get(2).cloned().flatten()?.parse().ok()?;
                        Some(((topic, partition), next))
                    })
                    .collect())
            })
        })
    }

    pub(super) async fn columns(
        &mut self,
        target: &Target,
    ) -> Result<Option<Vec<String>>, WarehouseError> {
        let sql = format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
            DIALECT.literal(&target.schema),
            DIALECT.literal(&target.name)
        );
        let rows = query(&self.api, &sql, &format!("describing {target}")).await?;
        let names: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        Ok((!names.is_empty()).then_some(names))
    }

    pub(super) async fn execute(&mut self, statements: Vec<String>) -> Result<(), WarehouseError> {
        execute_all(&mut SnowflakeSession(self), &statements).await
    }

    pub(super) async fn apply(
        &mut self,
        flush: Arc<Flush>,
        group: &str,
    ) -> Result<(), WarehouseError> {
        apply_flush(&mut SnowflakeSession(self), &flush, group).await
    }
}

/// A flush's primitives on the Snowflake session: DDL commits by itself, so schema steps
/// and staging tables come before the transaction; rows are staged with multi-row
/// `INSERT … VALUES` ([`insert_statements`]).
struct SnowflakeSession<'a>(&'a SnowflakeWarehouse);

impl Session for SnowflakeSession<'_> {
    const DIALECT: Dialect = DIALECT;
    const TRANSACTIONAL_DDL: bool = false;

    fn schema(&self) -> &str {
        &self.0.schema
    }

    async fn execute(&mut self, sql: &str, what: &str) -> Result<(), WarehouseError> {
        query(&self.0.api, sql, what).await.map(|_| ())
    }

    /// A MERGE answers one row: the numbers of rows inserted and updated.
    async fn store_offsets(&mut self, sql: &str) -> Result<u64, WarehouseError> {
        let answer = query(&self.0.api, sql, "storing offsets").await?;
        Ok(answer
            .first()
            .map(|row| {
                row.iter()
                    .flatten()
                    .filter_map(|cell| cell.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .unwrap_or(0))
    }

    async fn stage(&mut self, stage: &str, table: &TableFlush) -> Result<(), WarehouseError> {
        let (target, staged) = (&table.target, &Staged::new(&table.shape, &table.rows));
        let inserts = insert_statements(stage, staged).map_err(stage_error(target))?;
        for sql in inserts {
            query(&self.0.api, &sql, &format!("{target}: staging")).await?;
        }
        Ok(())
    }
}
