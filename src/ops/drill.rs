//! `tidemark drill schema-change`: proves, on the user's own stack, that a table survives
//! the schema changes of a migration from source to warehouse.
//!
//! The drill creates a scratch table `<schema>.tidemark_drill_<unix time>` in the source and
//! runs a pipeline of its own for it, in-process ([`crate::pipeline::Pipeline`]): the
//! config's source, Kafka, registry and warehouse, but its own slot and publication
//! (`<slot>_drill`, `<publication>_drill`, covering only the scratch table) and its own
//! consumer group (`<group>-drill`), so a pipeline already running on the same config is
//! not disturbed. Each step changes the table as a migration would, writes rows (inserts,
//! updates, deletes), waits until the pipeline has caught up, and compares the warehouse's
//! table with the source's, column by column as text, row by row in key order.
//!
//! The steps are those of the registry's schema-change drill: create with rows, ADD
//! COLUMN, RENAME COLUMN (only with `source.ddl_capture = true`: without the captured DDL
//! a rename is a drop plus an add, and the renamed column's old values stay under the old
//! name in the warehouse), a widening ALTER TYPE, SET NOT NULL, DROP COLUMN, and a new
//! primary key. At the end the scratch table, the drill's slot and publication and its
//! warehouse table are dropped (`--keep` keeps the warehouse table); its Kafka topic and
//! registry subjects stay (deleting topics needs rights a connector should not have).
//!
//! A DuckDB file has one writer: the drill stops its pipeline before each comparison and
//! starts it again after, which also proves a restart between schema changes. A DuckDB
//! warehouse that another tidemark process has open cannot be drilled (stop that sink,
//! or point the drill at a copy with `--set sink.url=copy.duckdb`). Snowflake warehouses
//! are not compared yet.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::ConfigError;
use crate::config::{Config, SinkConfig, SinkKind};
use crate::pg::{ConnectionError, SqlError, connect_sql, text_rows};
use crate::pipeline::{Pipeline, PipelineError};

/// How long one step may take to reach the warehouse.
const STEP_LIMIT: Duration = Duration::from_secs(180);

/// Why the drill could not run (a failed comparison is a failed step, not an error).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The config cannot be drilled.
    #[error("{0}")]
    Config(String),
    /// The source's connection settings are invalid.
    #[error(transparent)]
    Settings(#[from] ConfigError),
    /// The source database cannot be reached.
    #[error("source: connecting: {0}")]
    Connect(#[source] ConnectionError),
    /// The source database refused a statement.
    #[error("source: {what}: {source}")]
    Source {
        /// What was done.
        what: String,
        /// The server's answer.
        source: SqlError,
    },
    /// The warehouse could not be reached or read.
    #[error("warehouse {location}: {source}")]
    Warehouse {
        /// Its URL or path, without secrets.
        location: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The drill's pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DrillStep {
    /// What the step did.
    pub name: String,
    /// `pass`, `FAIL` or `skipped`.
    pub outcome: &'static str,
    /// Rows compared, or what differed, or why it was skipped.
    pub detail: String,
    /// Seconds from the DDL to the comparison.
    pub seconds: f64,
}

/// The drill's outcome, step by step.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The scratch table.
    pub table: String,
    /// The steps in order.
    pub steps: Vec<DrillStep>,
}

impl DrillReport {
    /// Whether no step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome != "FAIL")
    }
}

impl fmt::Display for DrillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schema-change drill on {}", self.table)?;
        writeln!(f, "{:<34} {:<8} {:>7}  detail", "step", "result", "seconds")?;
        for step in &self.steps {
            writeln!(
                f,
                "{:<34} {:<8} {:>7.1}  {}",
                step.name, step.outcome, step.seconds, step.detail
            )?;
        }
        let verdict = if self.passed() {
            "PASSED: the pipeline carried every schema change to the warehouse"
        } else {
            "FAILED: see the steps above"
        };
        writeln!(f, "{verdict}")
    }
}

/// A step: its name, its SQL (DDL then rows), and whether it needs captured DDL.
struct Step {
    name: &'static str,
    sql: String,
    needs_ddl_capture: bool,
}

fn steps(table: &str) -> Vec<Step> {
    // Rows between changes: 30 inserts (ids continue), an update of every 7th and a delete
    // of every 11th row, so each step merges all three operations.
    let rows = |base: i64, columns: &str, values: &str| {
        format!(
            "INSERT INTO {table} (id, code{columns}) SELECT {base} + g, 'c{base}-' || g{values} FROM generate_series(1, 30) g;
             UPDATE {table} SET code = code || '+' WHERE id % 7 = 0;
             DELETE FROM {table} WHERE id % 11 = 0;"
        )
    };
    let step = |name, ddl: &str, base, columns, values, needs_ddl_capture| Step {
        name,
        sql: format!("{ddl}{}", rows(base, columns, values)),
        needs_ddl_capture,
    };
    vec![
        step(
            "create table, rows",
            "",
            0,
            ", qty, label",
            ", g, 'l' || g",
            false,
        ),
        step(
            "ADD COLUMN note text",
            &format!("ALTER TABLE {table} ADD COLUMN note text;"),
            100,
            ", qty, label, note",
            ", g, 'l', 'n' || g",
            false,
        ),
        step(
            "RENAME COLUMN label TO title",
            &format!("ALTER TABLE {table} RENAME COLUMN label TO title;"),
            200,
            ", qty, title",
            ", g, 't' || g",
            true,
        ),
        step(
            "ALTER COLUMN qty TYPE bigint",
            &format!("ALTER TABLE {table} ALTER COLUMN qty TYPE bigint;"),
            300,
            ", qty",
            ", g * 10000000000",
            false,
        ),
        step(
            "ALTER COLUMN note SET NOT NULL",
            &format!(
                "UPDATE {table} SET note = coalesce(note, '-'); ALTER TABLE {table} ALTER COLUMN note SET NOT NULL;"
            ),
            400,
            ", note",
            ", 'nn'",
            false,
        ),
        step(
            "DROP COLUMN qty",
            &format!("ALTER TABLE {table} DROP COLUMN qty;"),
            500,
            ", note",
            ", 'after-drop'",
            false,
        ),
        step(
            "new PRIMARY KEY (code)",
            &format!(
                "ALTER TABLE {table} DROP CONSTRAINT {name}_pkey, ADD PRIMARY KEY (code);",
                name = table.rsplit('.').next().unwrap_or(table)
            ),
            600,
            ", note",
            ", 'new-key'",
            false,
        ),
    ]
}

/// The drill's own config: the user's, narrowed to the scratch table, with its own slot,
/// publication and consumer group.
fn drill_config(config: &Config, table: &str) -> Config {
    let mut drill = config.clone();
    drill.source.slot = format!("{}_drill", config.source.slot);
    drill.source.publication = format!("{}_drill", config.source.publication);
    drill.source.tables = vec![table.to_owned()];
    drill.source.snapshot = crate::config::SnapshotMode::Initial;
    drill.source.status_interval_ms = drill.source.status_interval_ms.min(1_000);
    if let Some(registry) = drill.registry.as_mut().filter(|r| r.url.is_none()) {
        // The user's pipeline may hold the embedded registry's port.
        registry.listen = "127.0.0.1:0".into();
    }
    if let Some(sink) = drill.sink.as_mut() {
        sink.group = format!("{}-drill", sink.group);
        sink.tables = vec![table.to_owned()];
        sink.batch_ms = sink.batch_ms.min(500);
    }
    drill.metrics = None;
    drill
}

/// Runs the drill against `config`'s stack, in schema `schema` of the source.
pub async fn schema_change(
    config: &Config,
    schema: &str,
    keep: bool,
) -> Result<DrillReport, DrillError> {
    let sink = config.sink.as_ref().ok_or_else(|| {
        DrillError::Config(
            "the drill compares the warehouse with the source: the config needs [sink] (and [kafka])"
                .into(),
        )
    })?;
    if sink.kind == SinkKind::Snowflake {
        return Err(DrillError::Config(
            "the drill compares DuckDB and PostgreSQL warehouses; Snowflake is not supported yet"
                .into(),
        ));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("tidemark_drill_{stamp}");
    let table = format!("{schema}.{name}");
    let drill = drill_config(config, &table);
    let settings = config.source_settings()?;
    let source = connect_sql(&settings).await.map_err(DrillError::Connect)?;
    let run = |sql: String, what: String| {
        let source = &source;
        async move {
            source
                .batch_execute(&sql)
                .await
                .map_err(|e| source_error(what)(SqlError(e)))
        }
    };
    run(
        format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, code text NOT NULL, qty int, label text)"
        ),
        format!("creating {table}"),
    )
    .await?;
    let warehouse = WarehouseReader::new(&drill, schema, &name)
        .ok_or_else(|| DrillError::Config("the drill needs [sink]".into()))?;
    let mut report = DrillReport {
        table: table.clone(),
        steps: Vec::new(),
    };
    let outcome = async {
        let mut pipeline = Some(Pipeline::start(drill.clone()).await?);
        for step in steps(&table) {
            let started = Instant::now();
            if step.needs_ddl_capture && !config.source.ddl_capture {
                report.steps.push(DrillStep {
                    name: step.name.into(),
                    outcome: "skipped",
                    detail: "needs source.ddl_capture = true (without the captured DDL a rename is a drop plus an add)".into(),
                    seconds: 0.0,
                });
                continue;
            }
            run(step.sql.clone(), step.name.into()).await?;
            let running = match pipeline.take() {
                Some(running) => running,
                None => Pipeline::start(drill.clone()).await?,
            };
            if let Err(waiting) = running.wait_caught_up(STEP_LIMIT).await {
                // The pipeline did not survive this change: a part that stopped by itself
                // says why when stopped. Later steps cannot run.
                let cause = match running.stop().await {
                    Err(stopped) => stopped.to_string(),
                    Ok(_) => waiting.to_string(),
                };
                report.steps.push(DrillStep {
                    name: step.name.into(),
                    outcome: "FAIL",
                    detail: format!("the pipeline stopped: {cause}"),
                    seconds: started.elapsed().as_secs_f64(),
                });
                return Ok(());
            }
            if warehouse.single_writer() {
                running.stop().await?;
            } else {
                pipeline = Some(running);
            }
            let (outcome, detail) = compare(&source, &warehouse, &table).await?;
            report.steps.push(DrillStep {
                name: step.name.into(),
                outcome,
                detail,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        if let Some(running) = pipeline {
            running.stop().await?;
        }
        Ok::<(), DrillError>(())
    }
    .await;
    // Clean up whatever happened.
    let cleanup = [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("DROP PUBLICATION IF EXISTS {}", drill.source.publication),
    ];
    for sql in cleanup {
        if let Err(error) = source.batch_execute(&sql).await {
            tracing::warn!(error = %SqlError(error), sql, "drill cleanup");
        }
    }
    // The DDL capture triggers serve the user's pipeline too: they stay.
    let mut teardown = drill.clone();
    teardown.source.ddl_capture = false;
    if let Err(error) = crate::source::setup::teardown(&teardown).await {
        tracing::warn!(%error, "drill cleanup: dropping the drill's slot");
    }
    if !keep {
        if let Err(error) = warehouse.drop_table().await {
            tracing::warn!(%error, "drill cleanup: dropping the warehouse table");
        }
    }
    outcome?;
    Ok(report)
}

fn source_error(what: impl Into<String>) -> impl FnOnce(SqlError) -> DrillError {
    let what = what.into();
    move |source| DrillError::Source { what, source }
}

/// Compares the source table with the warehouse's on the source's current columns.
async fn compare(
    source: &tokio_postgres::Client,
    warehouse: &WarehouseReader,
    table: &str,
) -> Result<(&'static str, String), DrillError> {
    let (schema, name) = crate::domain::names::split_qualified(table)
        .unwrap_or_else(|| ("public".into(), table.to_owned()));
    let columns: Vec<String> = source
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &name],
        )
        .await
        .map_err(|e| source_error("describing the scratch table")(SqlError(e)))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let list = columns
        .iter()
        .map(|c| format!("CAST(t.{c} AS TEXT)"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {list} FROM {table} t ORDER BY t.id");
    let expected = text_rows(source, &sql)
        .await
        .map_err(source_error("reading the scratch table"))?;
    let found = warehouse.rows(&columns).await?;
    if found == expected {
        return Ok(("pass", format!("{} rows equal", expected.len())));
    }
    let missing = expected.iter().filter(|r| !found.contains(r)).count();
    let extra = found.iter().filter(|r| !expected.contains(r)).count();
    let first = expected
        .iter()
        .zip(&found)
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("; first difference: source {a:?}, warehouse {b:?}"))
        .unwrap_or_default();
    Ok((
        "FAIL",
        format!(
            "source {} rows, warehouse {}: {missing} missing, {extra} differ or extra{first}",
            expected.len(),
            found.len()
        ),
    ))
}

type Rows = Vec<Vec<Option<String>>>;

/// Reads (and at the end drops) the drill's table in the warehouse.
struct WarehouseReader {
    sink: SinkConfig,
    table: String,
}

impl WarehouseReader {
    fn new(config: &Config, schema: &str, name: &str) -> Option<Self> {
        let sink = config.sink.clone()?;
        let target_schema = sink.schema.clone().unwrap_or_else(|| schema.to_owned());
        Some(WarehouseReader {
            sink,
            table: format!("{target_schema}.{name}"),
        })
    }

    /// A DuckDB file cannot be read while the sink writes it.
    fn single_writer(&self) -> bool {
        self.sink.kind == SinkKind::Duckdb
    }

    async fn rows(&self, columns: &[String]) -> Result<Rows, DrillError> {
        match self.sink.kind {
            SinkKind::Postgres => {
                let list = columns
                    .iter()
                    .map(|c| format!("CAST(t.{c} AS TEXT)"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let client = self.postgres().await?;
                text_rows(
                    &client,
                    &format!("SELECT {list} FROM {} t ORDER BY t.id", self.table),
                )
                .await
                .map_err(|e| self.warehouse_error(e))
            }
            SinkKind::Duckdb => self.duckdb_rows(columns),
            SinkKind::Snowflake => Err(DrillError::Config(
                "the drill does not read Snowflake warehouses yet".into(),
            )),
        }
    }

    /// The warehouse failed with `error`; its location named without secrets.
    fn warehouse_error(&self, error: impl std::error::Error + Send + Sync + 'static) -> DrillError {
        let location = match self.sink.kind {
            SinkKind::Duckdb => self.sink.url.clone(),
            _ => crate::pg::ConnectionSettings::from_url(&self.sink.url)
                .map_or_else(|_| "[sink] url".into(), |s| s.redacted_url()),
        };
        DrillError::Warehouse {
            location,
            source: Box::new(error),
        }
    }

    async fn postgres(&self) -> Result<tokio_postgres::Client, DrillError> {
        // The sink's own connection settings (URL, password or password file).
        let settings = crate::sink::warehouse::postgres::settings_of(&self.sink)
            .map_err(|e| self.warehouse_error(e))?;
        connect_sql(&settings)
            .await
            .map_err(|e| self.warehouse_error(e))
    }

    #[cfg(feature = "duckdb")]
    fn duckdb_rows(&self, columns: &[String]) -> Result<Rows, DrillError> {
        let list = columns
            .iter()
            .map(|c| format!("CAST(t.{c} AS VARCHAR)"))
            .collect::<Vec<_>>()
            .join(", ");
        let error = |e: duckdb::Error| self.warehouse_error(e);
        let connection = duckdb::Connection::open(&self.sink.url).map_err(error)?;
        let mut statement = connection
            .prepare(&format!(
                "SELECT {list} FROM {} t ORDER BY t.id",
                self.table
            ))
            .map_err(error)?;
        let rows = statement
            .query_map([], |row| {
                (0..columns.len())
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(error)?;
        rows.collect::<Result<Rows, _>>().map_err(error)
    }

    #[cfg(not(feature = "duckdb"))]
    fn duckdb_rows(&self, _columns: &[String]) -> Result<Rows, DrillError> {
        Err(DrillError::Config(
            "this build has no DuckDB (cargo feature duckdb)".into(),
        ))
    }

    async fn drop_table(&self) -> Result<(), DrillError> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        match self.sink.kind {
            SinkKind::Postgres => self
                .postgres()
                .await?
                .batch_execute(&sql)
                .await
                .map_err(|e| self.warehouse_error(SqlError(e))),
            SinkKind::Duckdb => self.duckdb_execute(&sql),
            SinkKind::Snowflake => Ok(()),
        }
    }

    #[cfg(feature = "duckdb")]
    fn duckdb_execute(&self, sql: &str) -> Result<(), DrillError> {
        duckdb::Connection::open(&self.sink.url)
            .and_then(|c| c.execute_batch(sql))
            .map_err(|e| self.warehouse_error(e))
    }

    #[cfg(not(feature = "duckdb"))]
    fn duckdb_execute(&self, _sql: &str) -> Result<(), DrillError> {
        Ok(())
    }
}
