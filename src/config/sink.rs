//! `[sink]`: the warehouse, its batches and the schema-evolution policies.

use super::*;

/// Warehouse kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// An embedded DuckDB file.
    #[default]
    Duckdb,
    /// A PostgreSQL database (MERGE, PostgreSQL 15+).
    Postgres,
    /// Snowflake.
    Snowflake,
}

impl SinkConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if self.url.trim().is_empty() {
            return invalid(
                "sink.url",
                "must name the warehouse (a DuckDB file path or a connection URL)".into(),
            );
        }
        let scheme_ok = match self.kind {
            SinkKind::Duckdb => !self.url.contains("://"),
            SinkKind::Postgres => {
                self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
            }
            SinkKind::Snowflake => self.url.starts_with("snowflake://"),
        };
        if !scheme_ok {
            let want = match self.kind {
                SinkKind::Duckdb => "a file path (no scheme), e.g. warehouse.duckdb",
                SinkKind::Postgres => "postgres://user@host:port/dbname",
                SinkKind::Snowflake => {
                    "snowflake://user@account/database/schema?warehouse=W&role=R"
                }
            };
            return invalid(
                "sink.url",
                format!(
                    "{:?} does not fit kind = {:?}: use {want}",
                    self.url, self.kind
                ),
            );
        }
        if self.batch_rows == 0 {
            return invalid(
                "sink.batch_rows",
                "must be at least 1 (default 10000)".into(),
            );
        }
        if self.batch_ms == 0 {
            return invalid("sink.batch_ms", "must be at least 1 (default 1000)".into());
        }
        for name in self.table.keys().chain(self.tables.iter()) {
            if crate::domain::names::split_qualified(name).is_none() {
                return invalid(
                    "sink.table",
                    format!("{name:?} must be schema.table (or schema.* in sink.tables)"),
                );
            }
        }
        Ok(())
    }

    /// Whether deletes of `schema.table` are soft.
    pub fn soft_delete_for(&self, schema: &str, table: &str) -> bool {
        self.table_config(schema, table)
            .and_then(|t| t.soft_delete)
            .unwrap_or(self.soft_delete)
    }

    /// The `[sink.table."schema.table"]` section of a table, its key spelled either way
    /// [`crate::domain::names::split_qualified`] reads.
    pub fn table_config(&self, schema: &str, table: &str) -> Option<&SinkTableConfig> {
        self.table.iter().find_map(|(key, config)| {
            crate::domain::names::split_qualified(key)
                .is_some_and(|(s, t)| s == schema && t == table)
                .then_some(config)
        })
    }
}

/// `[sink]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Warehouse kind.
    #[serde(default)]
    pub kind: SinkKind,
    /// Warehouse location: a DuckDB file path, a `postgres://` URL, or for Snowflake
    /// `snowflake://user@account/database/schema?warehouse=W&role=R`.
    pub url: String,
    /// Warehouse password (PostgreSQL, Snowflake); better `TIDEMARK_SINK_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "secret_opt")]
    pub password: Option<Secret>,
    /// File whose first line is the warehouse password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Snowflake key-pair auth: a PKCS#8 PEM private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// Consumer group; default `tidemark-sink-<name>`.
    #[serde(default)]
    pub group: String,
    /// Warehouse schema the tables go into; default: the source table's own schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Source tables to apply (`schema.table` or `schema.*`); empty: every table on the
    /// connector's topics.
    #[serde(default)]
    pub tables: Vec<String>,
    /// A table's batch closes at this many changes …
    #[serde(default = "defaults::batch_rows")]
    pub batch_rows: usize,
    /// … or when its oldest change has waited this long, whichever comes first.
    #[serde(default = "defaults::batch_ms")]
    pub batch_ms: u64,
    /// Keep deleted rows, marked by `__deleted` and `__deleted_at`, instead of deleting.
    #[serde(default)]
    pub soft_delete: bool,
    /// What a column dropped at the source becomes in the warehouse.
    #[serde(default)]
    pub on_dropped_column: DroppedColumnPolicy,
    /// What a type change that cannot be widened safely does.
    #[serde(default)]
    pub on_type_change: TypeChangePolicy,
    /// Per-table overrides, keyed by `schema.table`.
    #[serde(default)]
    pub table: std::collections::BTreeMap<String, SinkTableConfig>,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_with_urls("SinkConfig", self, &["url"], f)
    }
}

/// `[sink.table."schema.table"]`: one table's overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTableConfig {
    /// Soft deletes for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete: Option<bool>,
    /// Warehouse table name (`table` or `schema.table`) instead of the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a column dropped at the source becomes in the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DroppedColumnPolicy {
    /// Keep it, nullable; new rows carry null in it.
    #[default]
    Keep,
    /// Drop it from the warehouse table too.
    Drop,
}

/// What a type change that cannot be widened safely does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeChangePolicy {
    /// Stop the sink with an error naming the column and the remedy (nothing applied).
    #[default]
    Fail,
    /// Rename the old column to `<column>__<old type>` (its values kept) and add the
    /// column with the new type.
    RenameOld,
}
