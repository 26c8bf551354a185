//! The SQL the sink runs, generated once for the three warehouses: DuckDB, PostgreSQL and
//! Snowflake differ in type names, identifier and literal quoting, and how a staged column
//! becomes a target column; the MERGE itself is one statement shape for all three.
//!
//! Every managed table carries the position of the change that last wrote each row,
//! `__tidemark_lsn` and `__tidemark_seq`, and with soft deletes `__deleted` and
//! `__deleted_at`. The MERGE applies a staged change only when it is newer than the row's
//! stored position, so redelivered and replayed changes leave the table as it is:
//!
//! ```text
//! MERGE INTO target t USING stage s ON t.k = s.k
//! WHEN MATCHED AND s.__op = 'd' AND <s newer than t> THEN DELETE        -- soft: UPDATE SET __deleted
//! WHEN MATCHED AND s.__op = 'u' AND <s newer than t> THEN UPDATE SET c = s.c, …, position
//! WHEN NOT MATCHED AND s.__op = 'u' THEN INSERT (c, …, position) VALUES (s.c, …)
//! ```
//!
//! A column whose TOASTed value the source did not send (listed in the staged row's
//! `__unchanged`, as `,a,b,`) keeps the target's value: `CASE WHEN POSITION(',c,' IN
//! s.__unchanged) > 0 THEN t.c ELSE s.c END`. A truncate deletes (or marks) the rows older
//! than its position. A table without a key is not merged: its staged deletes (and the old
//! rows of its `REPLICA IDENTITY FULL` updates) each remove one equal row
//! ([`Dialect::remove_equal`]), then its inserts are appended. The consumed Kafka offsets, and each table's applied shape and
//! truncate position, live in `__tidemark_offsets` and `__tidemark_tables`, written in the
//! same transaction as the MERGE.

use std::collections::BTreeSet;

use super::evolve::Step;
use super::record::Position;
use super::shape::{ColumnKind, SinkColumn, TableShape};

/// Column holding the commit position of the change that last wrote the row.
pub(crate) const LSN_COLUMN: &str = "__tidemark_lsn";
/// Column holding that change's index in its transaction.
pub(crate) const SEQ_COLUMN: &str = "__tidemark_seq";
/// Soft delete flag.
pub(crate) const DELETED_COLUMN: &str = "__deleted";
/// Soft delete time.
pub(crate) const DELETED_AT_COLUMN: &str = "__deleted_at";
/// Consumed offsets, per consumer group, topic and partition.
pub(crate) const OFFSETS_TABLE: &str = "__tidemark_offsets";
/// Each managed table's applied shape and truncate position.
pub(crate) const TABLES_TABLE: &str = "__tidemark_tables";
/// The columns of the claims a flush's offsets statements read.
pub(super) const OFFSET_CLAIM_COLUMNS: &str =
    "consumer_group, topic, kafka_partition, expected_offset, next_offset";

/// A warehouse's SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB 1.4 or later.
    DuckDb,
    /// PostgreSQL 15 or later.
    Postgres,
    /// Snowflake.
    Snowflake,
}

/// A warehouse table: schema and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::domain::names::qualified(&self.schema, &self.name))
    }
}

/// How one batch of one table is merged.
#[derive(Debug, Clone)]
pub struct MergeSpec<'a> {
    /// The target.
    pub target: &'a Target,
    /// The staging table (already qualified).
    pub stage: &'a str,
    /// The batch's shape.
    pub shape: &'a TableShape,
    /// Deletes mark rows instead of removing them.
    pub soft_delete: bool,
    /// Columns some staged row lists as unchanged TOAST.
    pub unchanged: &'a BTreeSet<String>,
}

impl Dialect {
    /// A quoted identifier.
    pub fn quote(self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    /// A string literal.
    pub fn literal(self, text: &str) -> String {
        let doubled = text.replace('\'', "''");
        match self {
            // Snowflake treats backslash as an escape inside literals.
            Dialect::Snowflake => format!("'{}'", doubled.replace('\\', "\\\\")),
            _ => format!("'{doubled}'"),
        }
    }

    /// `schema.table`, quoted.
    pub fn table(self, target: &Target) -> String {
        format!(
            "{}.{}",
            self.quote(&target.schema),
            self.quote(&target.name)
        )
    }

    /// The warehouse type of a column kind.
    pub(crate) fn type_of(self, kind: &ColumnKind) -> String {
        use ColumnKind::*;
        match (self, kind) {
            (_, Bool) => "BOOLEAN".into(),
            (Dialect::Snowflake, Int16) => "NUMBER(5,0)".into(),
            (Dialect::Snowflake, Int32) => "NUMBER(10,0)".into(),
            (Dialect::Snowflake, Int64) => "NUMBER(19,0)".into(),
            (_, Int16) => "SMALLINT".into(),
            (_, Int32) => "INTEGER".into(),
            (_, Int64) => "BIGINT".into(),
            (Dialect::Snowflake, Float32 | Float64) => "FLOAT".into(),
            (_, Float32) => "REAL".into(),
            (Dialect::Postgres, Float64) => "DOUBLE PRECISION".into(),
            (_, Float64) => "DOUBLE".into(),
            (Dialect::Postgres, Decimal { precision, scale }) => {
                format!("NUMERIC({precision},{scale})")
            }
            (Dialect::Snowflake, Decimal { precision, scale }) if *precision <= 38 => {
                format!("NUMBER({precision},{scale})")
            }
            (Dialect::DuckDb, Decimal { precision, scale }) if *precision <= 38 => {
                format!("DECIMAL({precision},{scale})")
            }
            // Wider than 38 digits, or unconstrained: exact text.
            (Dialect::Postgres, Numeric) => "NUMERIC".into(),
            (_, Decimal { .. } | Numeric | Text) => "VARCHAR".into(),
            (Dialect::Postgres, Json) => "JSONB".into(),
            (Dialect::Snowflake, Json) => "VARIANT".into(),
            (_, Json) => "VARCHAR".into(),
            (Dialect::Postgres, Bytes) => "BYTEA".into(),
            (Dialect::Snowflake, Bytes) => "BINARY".into(),
            (_, Bytes) => "BLOB".into(),
            (_, Date) => "DATE".into(),
            (Dialect::Snowflake, Time) => "TIME(6)".into(),
            (_, Time) => "TIME".into(),
            (Dialect::Snowflake, Timestamp) => "TIMESTAMP_NTZ(6)".into(),
            (Dialect::Snowflake, TimestampTz) => "TIMESTAMP_TZ(6)".into(),
            (_, Timestamp) => "TIMESTAMP".into(),
            (_, TimestampTz) => "TIMESTAMPTZ".into(),
            (Dialect::Snowflake, Uuid) => "VARCHAR(36)".into(),
            (_, Uuid) => "UUID".into(),
            (Dialect::Snowflake, Array(_)) => "ARRAY".into(),
            (_, Array(inner)) => format!("{}[]", self.type_of(inner)),
            // PostgreSQL has the source's own type; the others keep its text form. Not
            // `xml`: PostgreSQL stores xml values (from `xmlelement`, say) that its own
            // input refuses, so it is kept as text rather than stop the sink. A shape
            // names `bit` without its length, and a bare `bit` column is `bit(1)`: bit
            // strings of any length land in `varbit`.
            (Dialect::Postgres, Other(name)) if name == "bit" => "VARBIT".into(),
            (Dialect::Postgres, Other(name)) if name != "xml" => name.clone(),
            (Dialect::Postgres, Other(_)) => "TEXT".into(),
            (_, Other(_)) => "VARCHAR".into(),
        }
    }

    /// The type a staged column has: the target type, except where the staging path
    /// carries the value as text to be cast in the MERGE (DuckDB's UUIDs arrive from Arrow
    /// as strings; Snowflake stages semi-structured values as text).
    pub(crate) fn stage_type_of(self, kind: &ColumnKind) -> String {
        match (self, kind) {
            (Dialect::DuckDb, ColumnKind::Uuid) => "VARCHAR".into(),
            (Dialect::DuckDb, ColumnKind::Array(inner)) => {
                format!("{}[]", self.stage_type_of(inner))
            }
            (Dialect::Snowflake, ColumnKind::Json | ColumnKind::Array(_)) => "VARCHAR".into(),
            _ => self.type_of(kind),
        }
    }

    /// `expr` (a staged column) as the target column's type.
    fn staged_as_target(self, expr: &str, kind: &ColumnKind) -> String {
        if self.stage_type_of(kind) == self.type_of(kind) {
            return expr.to_owned();
        }
        match (self, kind) {
            (Dialect::Snowflake, ColumnKind::Array(_)) => format!("PARSE_JSON({expr})::ARRAY"),
            (Dialect::Snowflake, _) => format!("PARSE_JSON({expr})"),
            _ => format!("CAST({expr} AS {})", self.type_of(kind)),
        }
    }

    fn column_def(self, column: &SinkColumn) -> String {
        format!(
            "{} {}",
            self.quote(&column.name),
            self.type_of(&column.kind)
        )
    }

    /// The bookkeeping columns every managed table has.
    fn position_defs(self, soft_delete: bool) -> Vec<String> {
        let mut defs = vec![
            format!("{} BIGINT", self.quote(LSN_COLUMN)),
            format!("{} BIGINT", self.quote(SEQ_COLUMN)),
        ];
        if soft_delete {
            defs.push(format!("{} BOOLEAN", self.quote(DELETED_COLUMN)));
            defs.push(format!(
                "{} {}",
                self.quote(DELETED_AT_COLUMN),
                self.type_of(&ColumnKind::TimestampTz)
            ));
        }
        defs
    }

    /// The statements of one evolution step.
    pub fn step(self, target: &Target, step: &Step, soft_delete: bool) -> Vec<String> {
        let table = self.table(target);
        match step {
            Step::Create(shape) => {
                let mut defs: Vec<String> =
                    shape.columns.iter().map(|c| self.column_def(c)).collect();
                defs.extend(self.position_defs(soft_delete));
                let mut statements = vec![
                    format!("CREATE SCHEMA IF NOT EXISTS {}", self.quote(&target.schema)),
                    format!("CREATE TABLE IF NOT EXISTS {table} ({})", defs.join(", ")),
                ];
                if self == Dialect::Postgres && !shape.key.is_empty() {
                    let keys: Vec<String> = shape.key.iter().map(|k| self.quote(k)).collect();
                    statements.push(format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                        self.quote(&format!("{}__tidemark_key", target.name)),
                        keys.join(", ")
                    ));
                }
                statements
            }
            // Re-runnable: Snowflake commits DDL by itself, ahead of the flush's transaction.
            Step::Add(column) => vec![format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {}",
                self.column_def(column)
            )],
            Step::Drop(name) => vec![format!(
                "ALTER TABLE {table} DROP COLUMN IF EXISTS {}",
                self.quote(name)
            )],
            // PostgreSQL: only while the old column is there, so a second sink instance
            // that planned the same rename (it waited on the first's lock) does nothing.
            Step::Rename { from, to } if self == Dialect::Postgres => vec![format!(
                "DO $tidemark$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = {} AND table_name = {} AND column_name = {}) THEN ALTER TABLE {table} RENAME COLUMN {} TO {}; END IF; END $tidemark$",
                self.literal(&target.schema),
                self.literal(&target.name),
                self.literal(from),
                self.quote(from),
                self.quote(to)
            )],
            Step::Rename { from, to } => vec![format!(
                "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                self.quote(from),
                self.quote(to)
            )],
            Step::Widen(column) => {
                let name = self.quote(&column.name);
                let new_type = self.type_of(&column.kind);
                vec![match self {
                    Dialect::Postgres => format!(
                        "ALTER TABLE {table} ALTER COLUMN {name} TYPE {new_type} USING {name}::{new_type}"
                    ),
                    Dialect::Snowflake => {
                        format!("ALTER TABLE {table} ALTER COLUMN {name} SET DATA TYPE {new_type}")
                    }
                    Dialect::DuckDb => {
                        format!("ALTER TABLE {table} ALTER COLUMN {name} TYPE {new_type}")
                    }
                }]
            }
        }
    }

    /// The staged columns: operation, position, unchanged list, then the shape's columns.
    pub fn stage_columns(self, shape: &TableShape) -> Vec<String> {
        let mut columns = vec![
            "__op VARCHAR".to_string(),
            "__lsn BIGINT".to_string(),
            "__seq BIGINT".to_string(),
            "__unchanged VARCHAR".to_string(),
        ];
        columns.extend(
            shape
                .columns
                .iter()
                .map(|c| format!("{} {}", self.quote(&c.name), self.stage_type_of(&c.kind))),
        );
        columns
    }

    /// `CREATE` of a staging table named `stage` (temporary where the warehouse has them).
    pub(crate) fn create_stage(self, stage: &str, shape: &TableShape) -> String {
        let columns = self.stage_columns(shape).join(", ");
        match self {
            Dialect::DuckDb => format!("CREATE OR REPLACE TABLE {stage} ({columns})"),
            Dialect::Postgres => {
                format!("CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ({columns}) ON COMMIT DROP")
            }
            Dialect::Snowflake => format!("CREATE OR REPLACE TEMPORARY TABLE {stage} ({columns})"),
        }
    }

    fn newer(self) -> String {
        let (lsn, seq) = (self.quote(LSN_COLUMN), self.quote(SEQ_COLUMN));
        format!(
            "(t.{lsn} IS NULL OR s.__lsn > t.{lsn} OR (s.__lsn = t.{lsn} AND s.__seq > t.{seq}))"
        )
    }

    /// The MERGE of a staged batch into its target.
    pub fn merge(self, spec: &MergeSpec<'_>) -> String {
        let q = |name: &str| self.quote(name);
        let table = self.table(spec.target);
        let on = if spec.shape.key.is_empty() {
            "FALSE".to_string()
        } else {
            spec.shape
                .key
                .iter()
                .map(|k| {
                    let kind = spec.shape.column(k).map(|c| c.kind.clone());
                    let source = kind.map_or_else(
                        || format!("s.{}", q(k)),
                        |kind| self.staged_as_target(&format!("s.{}", q(k)), &kind),
                    );
                    format!("t.{} = {source}", q(k))
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let newer = self.newer();
        let value = |column: &SinkColumn| {
            self.staged_as_target(&format!("s.{}", q(&column.name)), &column.kind)
        };
        let sets: Vec<String> = spec
            .shape
            .columns
            .iter()
            .filter(|c| !spec.shape.key.contains(&c.name))
            .map(|c| {
                let name = q(&c.name);
                if spec.unchanged.contains(&c.name) {
                    let marker = self.literal(&format!(",{},", c.name));
                    format!(
                        "{name} = CASE WHEN s.__unchanged IS NOT NULL AND POSITION({marker} IN s.__unchanged) > 0 THEN t.{name} ELSE {} END",
                        value(c)
                    )
                } else {
                    format!("{name} = {}", value(c))
                }
            })
            .chain([
                format!("{} = s.__lsn", q(LSN_COLUMN)),
                format!("{} = s.__seq", q(SEQ_COLUMN)),
            ])
            .chain(spec.soft_delete.then(|| {
                [
                    format!("{} = FALSE", q(DELETED_COLUMN)),
                    format!("{} = NULL", q(DELETED_AT_COLUMN)),
                ]
            }).into_iter().flatten())
            .collect();
        let mut insert_columns: Vec<String> =
            spec.shape.columns.iter().map(|c| q(&c.name)).collect();
        insert_columns.push(q(LSN_COLUMN));
        insert_columns.push(q(SEQ_COLUMN));
        let mut insert_values: Vec<String> = spec.shape.columns.iter().map(value).collect();
        insert_values.push("s.__lsn".into());
        insert_values.push("s.__seq".into());
        if spec.soft_delete {
            insert_columns.push(q(DELETED_COLUMN));
            insert_values.push("FALSE".into());
        }
        let delete = if spec.soft_delete {
            let keys: Vec<String> = spec.shape.key.iter().map(|k| q(k)).collect();
            let key_values: Vec<String> = spec
                .shape
                .key
                .iter()
                .filter_map(|k| spec.shape.column(k))
                .map(value)
                .collect();
            format!(
                "WHEN MATCHED AND s.__op = 'd' AND {newer} THEN UPDATE SET {deleted} = TRUE, {deleted_at} = CURRENT_TIMESTAMP, {lsn} = s.__lsn, {seq} = s.__seq \
                 WHEN NOT MATCHED AND s.__op = 'd' THEN INSERT ({keys}, {lsn}, {seq}, {deleted}, {deleted_at}) VALUES ({key_values}, s.__lsn, s.__seq, TRUE, CURRENT_TIMESTAMP)",
                deleted = q(DELETED_COLUMN),
                deleted_at = q(DELETED_AT_COLUMN),
                lsn = q(LSN_COLUMN),
                seq = q(SEQ_COLUMN),
                keys = keys.join(", "),
                key_values = key_values.join(", "),
            )
        } else {
            format!("WHEN MATCHED AND s.__op = 'd' AND {newer} THEN DELETE")
        };
        format!(
            "MERGE INTO {table} AS t USING {stage} AS s ON {on} \
             {delete} \
             WHEN MATCHED AND s.__op = 'u' AND {newer} THEN UPDATE SET {sets} \
             WHEN NOT MATCHED AND s.__op = 'u' THEN INSERT ({columns}) VALUES ({values})",
            stage = spec.stage,
            sets = sets.join(", "),
            columns = insert_columns.join(", "),
            values = insert_values.join(", "),
        )
    }

    /// An `INSERT … SELECT` of a keyless table's staged rows (appended, never merged).
    /// For a keyless table, the statement that removes, for each staged delete (`__op =
    /// 'd'`, the whole old row), one target row equal to it, NULLs equal to NULLs; with
    /// soft deletes it marks the row instead. Equal staged rows remove as many target rows:
    /// the target rows are numbered within each group of equal staged rows (by their
    /// physical row id: PostgreSQL's `ctid`, DuckDB's `rowid`). Snowflake has no row id, so
    /// there every equal target row goes (or is marked): exact duplicate rows of a keyless
    /// table are not told apart.
    pub fn remove_equal(
        self,
        target: &Target,
        stage: &str,
        shape: &TableShape,
        soft_delete: bool,
    ) -> String {
        let q = |name: &str| self.quote(name);
        let table = self.table(target);
        // PostgreSQL compares and groups types without equality (point, xml) by their text.
        let comparable = |expr: String, kind: &ColumnKind| -> String {
            let textual = matches!(kind, ColumnKind::Other(_))
                || matches!(kind, ColumnKind::Array(inner) if matches!(**inner, ColumnKind::Other(_)));
            if self == Dialect::Postgres && textual {
                format!("CAST({expr} AS TEXT)")
            } else {
                expr
            }
        };
        let staged: Vec<String> = shape
            .columns
            .iter()
            .map(|c| {
                comparable(
                    self.staged_as_target(&format!("s.{}", q(&c.name)), &c.kind),
                    &c.kind,
                )
            })
            .collect();
        let equal: Vec<String> = shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let left = comparable(format!("t.{}", q(&c.name)), &c.kind);
                match self {
                    Dialect::Snowflake => format!("EQUAL_NULL({left}, r.__c{i})"),
                    _ => format!("{left} IS NOT DISTINCT FROM r.__c{i}"),
                }
            })
            .collect();
        let mut on = equal.join(" AND ");
        if soft_delete {
            on.push_str(&format!(" AND t.{} IS NOT TRUE", q(DELETED_COLUMN)));
        }
        let named: Vec<String> = staged
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{e} AS __c{i}"))
            .collect();
        let mark = format!(
            "UPDATE {table} SET {} = TRUE, {} = CURRENT_TIMESTAMP",
            q(DELETED_COLUMN),
            q(DELETED_AT_COLUMN)
        );
        let rowid = match self {
            Dialect::Postgres => "ctid",
            Dialect::DuckDb => "rowid",
            Dialect::Snowflake => {
                let rows = format!(
                    "(SELECT {} FROM {stage} AS s WHERE s.__op = 'd') AS r",
                    named.join(", ")
                );
                return if soft_delete {
                    format!(
                        "UPDATE {table} AS t SET {} = TRUE, {} = CURRENT_TIMESTAMP FROM {rows} WHERE {on}",
                        q(DELETED_COLUMN),
                        q(DELETED_AT_COLUMN)
                    )
                } else {
                    format!("DELETE FROM {table} AS t USING {rows} WHERE {on}")
                };
            }
        };
        let groups = format!(
            "SELECT {}, count(*) AS __n, row_number() OVER () AS __g FROM {stage} AS s \
             WHERE s.__op = 'd' GROUP BY {}",
            named.join(", "),
            staged.join(", ")
        );
        let chosen = format!(
            "SELECT m.__id FROM (SELECT t.{rowid} AS __id, r.__n, \
             row_number() OVER (PARTITION BY r.__g ORDER BY t.{rowid}) AS __rn \
             FROM {table} AS t JOIN ({groups}) AS r ON {on}) AS m WHERE m.__rn <= m.__n"
        );
        if soft_delete {
            format!("{mark} WHERE {rowid} IN ({chosen})")
        } else {
            format!("DELETE FROM {table} WHERE {rowid} IN ({chosen})")
        }
    }

    /// For a keyless table, the append of its staged inserts (`__op = 'u'`).
    pub fn append(self, target: &Target, stage: &str, shape: &TableShape) -> String {
        let mut columns: Vec<String> = shape.columns.iter().map(|c| self.quote(&c.name)).collect();
        let mut values: Vec<String> = shape
            .columns
            .iter()
            .map(|c| self.staged_as_target(&format!("s.{}", self.quote(&c.name)), &c.kind))
            .collect();
        columns.extend([self.quote(LSN_COLUMN), self.quote(SEQ_COLUMN)]);
        values.extend(["s.__lsn".to_string(), "s.__seq".to_string()]);
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {stage} AS s WHERE s.__op = 'u'",
            self.table(target),
            columns.join(", "),
            values.join(", ")
        )
    }

    /// Empties `target` as of `position`: rows written before it go (or are marked).
    pub fn truncate(self, target: &Target, position: Position, soft_delete: bool) -> String {
        let (lsn, seq) = (self.quote(LSN_COLUMN), self.quote(SEQ_COLUMN));
        let older = format!(
            "({lsn} IS NULL OR {lsn} < {l} OR ({lsn} = {l} AND {seq} < {s}))",
            l = position.commit_lsn,
            s = position.seq
        );
        if soft_delete {
            format!(
                "UPDATE {} SET {} = TRUE, {} = CURRENT_TIMESTAMP WHERE {older} AND {} IS NOT TRUE",
                self.table(target),
                self.quote(DELETED_COLUMN),
                self.quote(DELETED_AT_COLUMN),
                self.quote(DELETED_COLUMN)
            )
        } else {
            format!("DELETE FROM {} WHERE {older}", self.table(target))
        }
    }
}

mod bookkeeping;
#[cfg(test)]
mod tests;
