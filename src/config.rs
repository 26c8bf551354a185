//! Connector configuration: a TOML file, then `TIDEMARK_<SECTION>_<KEY>` environment
//! overrides (top-level keys as `TIDEMARK_<KEY>`), then the command line's
//! `--set section.key=value` flags, then [`Config::validate`].
//!
//! Environment values take the type of the key they override: numbers and booleans are
//! parsed, lists accept a TOML array (`["a","b"]`) or comma-separated text. Secrets (the source
//! password) are kept in [`Secret`], which never prints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::secret::Secret;
use crate::pg::ConnectionSettings;

/// Configuration errors, each naming the field and the rule it breaks.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config {origin}: {message}")]
    Parse {
        /// File or environment.
        origin: String,
        /// What the parser says (names the key).
        message: String,
    },
    /// A value breaks a rule.
    #[error("config field {field}: {rule}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// The rule and the remedy.
        rule: String,
    },
}

/// When to take the initial snapshot (the snapshot itself is the snapshot issue's work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot when there is no committed position, then stream.
    #[default]
    Initial,
    /// Never snapshot; stream from the slot's position.
    Never,
    /// Snapshot, then stop.
    InitialOnly,
    /// Snapshot again when the slot is missing or invalidated.
    WhenNeeded,
}

/// Kafka delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Idempotent producer, `acks=all`; duplicates possible after a crash.
    #[default]
    AtLeastOnce,
    /// Transactional producer with the position stored beside the events.
    ExactlyOnce,
}

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

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connector name: the default topic prefix and the default slot/publication suffix.
    pub name: String,
    /// The PostgreSQL source.
    pub source: SourceConfig,
    /// Kafka (used by the Kafka stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    /// Schema registry (used by the Avro stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryConfig>,
    /// Warehouse sink (used by the sink stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkConfig>,
    /// The HTTP endpoint for Prometheus and orchestrators (`/metrics`, `/healthz`,
    /// `/readyz`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics`, `/healthz` and `/readyz` on, e.g. `0.0.0.0:9187`.
    #[serde(default = "defaults::metrics_listen")]
    pub listen: String,
}

/// `[source]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://user[:password]@host:port/dbname?sslmode=…` (see the README for parameters).
    pub url: String,
    /// Password, overriding one in the URL; best set as `TIDEMARK_SOURCE_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "secret_opt")]
    pub password: Option<Secret>,
    /// File whose first line is the password (for mounted secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Replication slot; default `tidemark_<name>`.
    #[serde(default)]
    pub slot: String,
    /// Publication; default `tidemark_<name>`.
    #[serde(default)]
    pub publication: String,
    /// Tables to capture: `schema.table` or `schema.*`; empty or `["*"]` means all tables.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Snapshot mode.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Connections reading the snapshot in parallel.
    #[serde(default = "defaults::snapshot_workers")]
    pub snapshot_workers: usize,
    /// Heap pages (8 KiB each) per snapshot chunk: large tables are read as ranges of this
    /// many pages in parallel; a chunk read against the running stream is held in memory
    /// until it is reconciled, so this bounds memory too.
    #[serde(default = "defaults::snapshot_chunk_pages")]
    pub snapshot_chunk_pages: u64,
    /// Milliseconds between stores of snapshot progress while chunks are delivered (each
    /// waits for the output to acknowledge what was sent; a crash re-reads at most this much).
    #[serde(default = "defaults::snapshot_checkpoint_ms")]
    pub snapshot_checkpoint_ms: u64,
    /// A file to keep snapshot progress in; by default it is kept with the output's offsets
    /// (the Kafka output's `<prefix>.offsets` topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress_file: Option<PathBuf>,
    /// A table (`schema.table`, in the publication) whose inserted rows are signals, for
    /// example `{"type": "execute-snapshot", "data": {"data-collections": ["public.a"]}}`
    /// in a column named `data`; see `tidemark snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_table: Option<String>,
    /// Milliseconds between standby status updates sent to the server (well below
    /// `wal_sender_timeout`).
    #[serde(default = "defaults::status_interval_ms")]
    pub status_interval_ms: u64,
    /// Milliseconds between heartbeat messages written to the source (`0`: off). Each is a
    /// `pg_logical_emit_message` that moves the slot forward on a database with no writes.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// Megabytes of streamed in-progress transactions held in memory before spilling to disk.
    #[serde(default = "defaults::stream_memory_mb")]
    pub stream_memory_mb: u64,
    /// Directory for spill files; the system temporary directory by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    /// An update or delete on a table that cannot identify its rows: `fail` or `skip`.
    #[serde(default)]
    pub unidentified_rows: UnidentifiedRowPolicy,
    /// Install (with `tidemark setup`) and follow DDL capture: an event trigger that writes
    /// each DDL command into the WAL as a logical message, so schema changes are known in
    /// order with the data and renames are told from a drop plus an add.
    #[serde(default)]
    pub ddl_capture: bool,
}

/// `[kafka]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Delivery guarantee.
    #[serde(default)]
    pub delivery: Delivery,
    /// Topic prefix; the connector name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Wire format of records: `avro` (Confluent framing, schemas in the registry) or `json`.
    #[serde(default)]
    pub format: RecordFormat,
    /// JSON in Debezium's JsonConverter shape with `schemas.enable=true`: every key and
    /// value is `{"schema": …, "payload": …}`. False: the bare payloads.
    #[serde(default)]
    pub json_schemas: bool,
    /// Follow each delete with a tombstone (same key, null value) so compaction forgets the key.
    #[serde(default = "defaults::yes")]
    pub tombstones: bool,
    /// Partitions of topics tidemark creates.
    #[serde(default = "defaults::partitions")]
    pub partitions: i32,
    /// Replication factor of topics tidemark creates (`-1`: the broker's default).
    #[serde(default = "defaults::replication_factor")]
    pub replication_factor: i32,
    /// Create change topics with `cleanup.policy=compact`.
    #[serde(default)]
    pub compact: bool,
    /// Extra configs for created change topics, e.g. `{ "retention.ms" = "604800000" }`.
    #[serde(default)]
    pub topic_config: std::collections::BTreeMap<String, String>,
    /// Per-table topic overrides: rename a table's topic or send several tables to one.
    #[serde(default)]
    pub routes: Vec<TopicRoute>,
    /// Topic for `pg_logical_emit_message` events (`op = m`); default `<prefix>.message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_topic: Option<String>,
    /// Write BEGIN/END records with per-table event counts to `<prefix>.transaction`.
    #[serde(default)]
    pub transaction_metadata: bool,
    /// Records produced but not yet acknowledged before reading from PostgreSQL pauses.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Any librdkafka property (SASL, SSL, compression, …), e.g.
    /// `{ "security.protocol" = "SASL_SSL", "sasl.mechanism" = "SCRAM-SHA-512" }`.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Settings for tidemark's auxiliary Kafka clients (admin, offsets reader, registry
    /// log, sink consumer): the brokers, every security, SASL and SSL property of
    /// `[kafka.properties]`, and no topic auto-creation, so asking for a topic's metadata
    /// never creates it with broker defaults.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            .set("allow.auto.create.topics", "false");
        for (key, value) in &self.properties {
            if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
                client.set(key, value);
            }
        }
        client
    }
}

/// A topic override for some tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRoute {
    /// Tables as `schema.table`.
    pub tables: Vec<String>,
    /// Their topic.
    pub topic: String,
}

impl SinkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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
            if name.split('.').count() != 2 {
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
        self.table
            .get(&format!("{schema}.{table}"))
            .and_then(|t| t.soft_delete)
            .unwrap_or(self.soft_delete)
    }
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if self.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must list at least one host:port".into());
        }
        if self.partitions < 1 {
            return invalid(
                "kafka.partitions",
                format!("{} must be at least 1", self.partitions),
            );
        }
        if self.replication_factor < 1 && self.replication_factor != -1 {
            return invalid(
                "kafka.replication_factor",
                format!(
                    "{} must be at least 1, or -1 for the broker's default",
                    self.replication_factor
                ),
            );
        }
        if self.max_in_flight == 0 {
            return invalid("kafka.max_in_flight", "must be at least 1".into());
        }
        if let Some(prefix) = &self.topic_prefix {
            if !valid_topic_name(prefix) {
                return invalid(
                    "kafka.topic_prefix",
                    format!("{prefix:?} may use only letters, digits, '.', '_' and '-'"),
                );
            }
        }
        if let Some(topic) = &self.message_topic {
            if !valid_topic_name(topic) {
                return invalid(
                    "kafka.message_topic",
                    format!("{topic:?} may use only letters, digits, '.', '_' and '-'"),
                );
            }
        }
        for route in &self.routes {
            if !valid_topic_name(&route.topic) {
                return invalid(
                    "kafka.routes",
                    format!(
                        "topic {:?} may use only letters, digits, '.', '_' and '-' (at most 249)",
                        route.topic
                    ),
                );
            }
            for table in &route.tables {
                if !matches!(
                    TableSelector::parse(table),
                    Some(TableSelector::Table { .. })
                ) {
                    return invalid("kafka.routes", format!("{table:?} is not schema.table"));
                }
            }
        }
        for key in [
            "bootstrap.servers",
            "transactional.id",
            "enable.idempotence",
        ] {
            if self.properties.contains_key(key) {
                return invalid(
                    "kafka.properties",
                    format!(
                        "{key} is set by tidemark (from kafka.brokers and kafka.delivery); remove it from kafka.properties"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Kafka's rule for topic names.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// URL of an external Confluent-compatible registry; absent: the embedded registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Listen address of the embedded registry (`host:0` picks a free port).
    #[serde(default = "defaults::registry_listen")]
    pub listen: String,
    /// Kafka topic holding the embedded registry's schemas, in Confluent's format.
    #[serde(default = "defaults::registry_topic")]
    pub topic: String,
    /// Basic-auth user for an external registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password (also `TIDEMARK_REGISTRY_PASSWORD`).
    #[serde(default, with = "secret_opt", skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// PEM file of the CA that signed an external registry's certificate (besides the
    /// system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Attempts of a registry call that fails for a transient reason (connection refused,
    /// timeout, 5xx) before the connector stops.
    #[serde(default = "defaults::registry_attempts")]
    pub attempts: u32,
    /// What to do when the registry rejects a new schema version as incompatible.
    #[serde(default)]
    pub on_incompatible: IncompatiblePolicy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: None,
            listen: defaults::registry_listen(),
            topic: defaults::registry_topic(),
            username: None,
            password: None,
            ca_file: None,
            attempts: defaults::registry_attempts(),
            on_incompatible: IncompatiblePolicy::default(),
        }
    }
}

impl RegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return invalid(
                        "registry.url",
                        format!("{url:?} is not an http:// or https:// URL"),
                    );
                }
            }
        }
        if self.url.is_none() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "registry.listen",
                format!("{:?} is not host:port with an IP address", self.listen),
            );
        }
        if self.attempts == 0 {
            return invalid("registry.attempts", "must be at least 1".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return invalid(
                "registry.username",
                "registry.password is set but registry.username is not; set both for basic auth"
                    .into(),
            );
        }
        if !valid_topic_name(&self.topic) {
            return invalid(
                "registry.topic",
                format!("{:?} is not a valid Kafka topic name", self.topic),
            );
        }
        Ok(())
    }
}

/// Wire format of Kafka records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// Avro in Confluent's wire format, schemas registered under `<topic>-key`/`-value`.
    #[default]
    Avro,
    /// Debezium's JsonConverter shapes.
    Json,
}

/// What happens when the registry refuses a table's new schema as incompatible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncompatiblePolicy {
    /// Stop, naming the column and the rule; nothing after the change is confirmed.
    #[default]
    Fail,
    /// Set the subject's compatibility to NONE, register, and say so in the schema-change
    /// event.
    Relax,
    /// Move the table to a new topic `<topic>-v<N>` whose subjects start afresh.
    NewTopic,
}

/// `[sink]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

mod defaults {
    pub fn yes() -> bool {
        true
    }
    pub fn partitions() -> i32 {
        1
    }
    pub fn replication_factor() -> i32 {
        1
    }
    pub fn max_in_flight() -> usize {
        100_000
    }
    pub fn status_interval_ms() -> u64 {
        10_000
    }
    pub fn stream_memory_mb() -> u64 {
        64
    }
    pub fn snapshot_workers() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
    }
    pub fn snapshot_chunk_pages() -> u64 {
        2048
    }
    pub fn snapshot_checkpoint_ms() -> u64 {
        5000
    }
    pub fn metrics_listen() -> String {
        "127.0.0.1:9187".into()
    }
    pub fn registry_listen() -> String {
        "127.0.0.1:8081".into()
    }
    pub fn registry_topic() -> String {
        "_schemas".into()
    }
    pub fn registry_attempts() -> u32 {
        8
    }
    pub fn batch_rows() -> usize {
        10_000
    }
    pub fn batch_ms() -> u64 {
        1000
    }
}

mod secret_opt {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(_) => s.serialize_str("***"),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

const SECTIONS: &[&str] = &["source", "kafka", "registry", "sink", "metrics"];

impl Config {
    /// Reads `path`, applies the process environment, fills defaults and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses TOML text, applies `TIDEMARK_*` variables from `env`, fills defaults, validates.
    ///
    /// ```
    /// use tidemark::config::Config;
    /// let toml = "name = \"shop\"\n[source]\nurl = \"postgres://cdc@db/shop\"\n";
    /// let env = [("TIDEMARK_SOURCE_TABLES".to_string(), "sales.*".to_string())];
    /// let config = Config::from_toml_with_env(toml, "example", env)?;
    /// assert_eq!(config.source.slot, "tidemark_shop");
    /// assert_eq!(config.source.tables, vec!["sales.*"]);
    /// # Ok::<(), tidemark::config::ConfigError>(())
    /// ```
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_layers(text, origin, env, &[])
    }

    /// Reads `path`, then the process environment, then `flags` (`section.key=value`, the
    /// CLI's `--set`): each layer overrides the one before. Fills defaults and validates.
    pub fn load_with_flags(path: &Path, flags: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_layers(&text, &path.display().to_string(), std::env::vars(), flags)
    }

    /// The config file's text, then `TIDEMARK_*` variables from `env`, then `flags`.
    ///
    /// ```
    /// use tidemark::config::Config;
    /// let toml = "name = \"shop\"\n[source]\nurl = \"postgres://cdc@db/shop\"\n";
    /// let env = [("TIDEMARK_SOURCE_SLOT".to_string(), "from_env".to_string())];
    /// let flags = ["source.slot=from_flag".to_string()];
    /// let config = Config::from_layers(toml, "example", env, &flags)?;
    /// assert_eq!(config.source.slot, "from_flag");
    /// # Ok::<(), tidemark::config::ConfigError>(())
    /// ```
    pub fn from_layers(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut from_env = Vec::new();
        for (var, value) in env {
            if let Some(path) = apply_env_override(&mut table, &var, &value)? {
                from_env.push((path, format!("environment variable {var}")));
            }
        }
        for flag in flags {
            let path = apply_flag_override(&mut table, flag)?;
            from_env.retain(|(p, _)| *p != path);
            from_env.push((path, format!("--set {flag}")));
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let source = from_env
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, layer)| format!(" (set by {layer})"))
                    .unwrap_or_default();
                ConfigError::Parse {
                    origin: origin.to_owned(),
                    message: format!("{path}{source}: {}", e.into_inner().message()),
                }
            })?;
        config.fill_defaults()?;
        config.validate()?;
        Ok(config)
    }

    fn fill_defaults(&mut self) -> Result<(), ConfigError> {
        let suffix = identifier_safe(&self.name);
        if self.source.slot.is_empty() {
            self.source.slot = format!("tidemark_{suffix}");
        }
        if self.source.publication.is_empty() {
            self.source.publication = format!("tidemark_{suffix}");
        }
        if let Some(path) = &self.source.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                field: "source.password_file",
                rule: format!("cannot read {}: {e}", path.display()),
            })?;
            let first = text.lines().next().unwrap_or_default().to_owned();
            self.source.password = Some(Secret::new(first));
        }
        if let Some(sink) = &mut self.sink {
            if sink.group.is_empty() {
                sink.group = format!("tidemark-sink-{}", self.name);
            }
            if let Some(path) = &sink.password_file {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    field: "sink.password_file",
                    rule: format!("cannot read {}: {e}", path.display()),
                })?;
                let first = text.lines().next().unwrap_or_default().to_owned();
                sink.password = Some(Secret::new(first));
            }
        }
        Ok(())
    }

    /// Checks every rule; the error names the field, the rule and how to fix it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return invalid(
                "name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, '_', '.', '-'",
                    self.name
                ),
            );
        }
        ConnectionSettings::from_url(&self.source.url).map_err(|e| ConfigError::Invalid {
            field: "source.url",
            rule: e.to_string(),
        })?;
        let slot = &self.source.slot;
        if slot.len() > 63
            || !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return invalid(
                "source.slot",
                format!(
                    "{slot:?} must be at most 63 characters of lower-case letters, digits and '_' (PostgreSQL's rule for slot names)"
                ),
            );
        }
        if self.source.publication.len() > 63 {
            return invalid(
                "source.publication",
                "must be at most 63 bytes (PostgreSQL truncates longer names)".into(),
            );
        }
        for pattern in &self.source.tables {
            if TableSelector::parse(pattern).is_none() {
                return invalid(
                    "source.tables",
                    format!("{pattern:?} is not schema.table, schema.* or *"),
                );
            }
        }
        if !(100..=3_600_000).contains(&self.source.status_interval_ms) {
            return invalid(
                "source.status_interval_ms",
                format!(
                    "{} must be between 100 and 3600000; keep it well below the server's wal_sender_timeout",
                    self.source.status_interval_ms
                ),
            );
        }
        if self.source.heartbeat_interval_ms != 0 && self.source.heartbeat_interval_ms < 100 {
            return invalid(
                "source.heartbeat_interval_ms",
                "must be 0 (off) or at least 100".into(),
            );
        }
        if !(1..=64).contains(&self.source.snapshot_workers) {
            return invalid(
                "source.snapshot_workers",
                format!(
                    "{} must be between 1 and 64 (each is a connection to the source)",
                    self.source.snapshot_workers
                ),
            );
        }
        if self.source.snapshot_chunk_pages == 0 {
            return invalid(
                "source.snapshot_chunk_pages",
                "must be at least 1 (2048 pages = 16 MiB of table)".into(),
            );
        }
        if let Some(table) = &self.source.signal_table {
            if table.split('.').count() != 2 {
                return invalid(
                    "source.signal_table",
                    format!("{table:?} must be schema.table"),
                );
            }
        }
        if self.source.stream_memory_mb == 0 {
            return invalid("source.stream_memory_mb", "must be at least 1".into());
        }
        if let Some(kafka) = &self.kafka {
            kafka.validate()?;
        }
        if let Some(registry) = &self.registry {
            registry.validate()?;
        }
        if let Some(sink) = &self.sink {
            sink.validate()?;
        }
        if let Some(metrics) = &self.metrics {
            if metrics.listen.parse::<std::net::SocketAddr>().is_err() {
                return invalid(
                    "metrics.listen",
                    format!(
                        "{:?} is not an address to listen on: use IP:PORT, e.g. 0.0.0.0:9187",
                        metrics.listen
                    ),
                );
            }
        }
        Ok(())
    }
    /// A SQL connection to the source this configuration names.
    pub async fn connect_source(
        &self,
    ) -> Result<tokio_postgres::Client, crate::pg::ConnectionError> {
        let settings = self
            .source_settings()
            .map_err(|e| crate::pg::ConnectionError::InvalidSettings(e.to_string()))?;
        crate::pg::connect_sql(&settings).await
    }

    /// Connection settings of the source, with the configured password applied.
    pub fn source_settings(&self) -> Result<ConnectionSettings, ConfigError> {
        let mut settings =
            ConnectionSettings::from_url(&self.source.url).map_err(|e| ConfigError::Invalid {
                field: "source.url",
                rule: e.to_string(),
            })?;
        if let Some(password) = &self.source.password {
            settings.password = Some(password.clone());
        }
        settings.application_name = format!("tidemark-{}", self.name);
        Ok(settings)
    }

    /// The parsed table selection.
    pub fn table_selectors(&self) -> Vec<TableSelector> {
        self.source
            .tables
            .iter()
            .filter_map(|p| TableSelector::parse(p))
            .collect()
    }
}

/// Lower-cases `text` and replaces every character that is not an ASCII letter or digit
/// with `_`, giving a string usable in slot and database names.
pub fn identifier_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// One entry of `source.tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSelector {
    /// Every table.
    All,
    /// Every table of a schema.
    Schema(String),
    /// One table.
    Table {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
    },
}

impl TableSelector {
    /// Whether `schema.table` is selected.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        match self {
            TableSelector::All => true,
            TableSelector::Schema(s) => s == schema,
            TableSelector::Table { schema: s, name } => s == schema && name == table,
        }
    }

    /// Parses `*`, `schema.*` or `schema.table`.
    pub fn parse(pattern: &str) -> Option<TableSelector> {
        if pattern == "*" {
            return Some(TableSelector::All);
        }
        let (schema, name) = pattern.split_once('.')?;
        if schema.is_empty() || name.is_empty() || name.contains('.') || schema == "*" {
            return None;
        }
        Some(if name == "*" {
            TableSelector::Schema(schema.to_owned())
        } else {
            TableSelector::Table {
                schema: schema.to_owned(),
                name: name.to_owned(),
            }
        })
    }
}

/// Applies one environment variable; returns the dotted key it set, if it is a config key.
fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(rest) = var.strip_prefix("TIDEMARK_") else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    let (section, key) = match rest.split_once('_') {
        Some((section, key)) if SECTIONS.contains(&section) => (Some(section), key),
        _ if rest == "name" => (None, rest.as_str()),
        _ => return Ok(None),
    };
    set_key(
        table,
        section,
        key,
        value,
        &format!("environment variable {var}"),
    )
    .map(Some)
}

/// Applies one `--set section.key=value` flag; returns the dotted key it set.
fn apply_flag_override(table: &mut toml::Table, flag: &str) -> Result<String, ConfigError> {
    let origin = format!("--set {flag}");
    let bad = |message: String| ConfigError::Parse {
        origin: origin.clone(),
        message,
    };
    let (path, value) = flag.split_once('=').ok_or_else(|| {
        bad("use --set section.key=value, e.g. --set sink.batch_rows=5000".into())
    })?;
    let path = path.trim();
    match path.split_once('.') {
        Some((section, key)) if SECTIONS.contains(&section) && !key.is_empty() => {
            set_key(table, Some(section), key, value, &origin)
        }
        None if path == "name" => set_key(table, None, path, value, &origin),
        _ => Err(bad(format!(
            "{path:?} is not a config key: use name or <section>.<key> with a section of {}",
            SECTIONS.join(", ")
        ))),
    }
}

/// Sets `section.key` (a top-level key without a section) to `value`, typed as the key is.
fn set_key(
    table: &mut toml::Table,
    section: Option<&str>,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<String, ConfigError> {
    let path = match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    };
    let target = match section {
        None => table,
        Some(section) => table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Parse {
                origin: origin.to_owned(),
                message: format!("[{section}] is not a table in the config file"),
            })?,
    };
    let typed = typed_env_value(section, key, value);
    target.insert(key.to_owned(), typed);
    Ok(path)
}

/// Gives an environment value the type its key has.
fn typed_env_value(section: Option<&str>, key: &str, value: &str) -> toml::Value {
    const INTEGERS: &[&str] = &[
        "source.status_interval_ms",
        "source.heartbeat_interval_ms",
        "source.stream_memory_mb",
        "source.snapshot_workers",
        "source.snapshot_chunk_pages",
        "source.snapshot_checkpoint_ms",
        "kafka.partitions",
        "kafka.replication_factor",
        "kafka.max_in_flight",
        "registry.attempts",
        "sink.batch_rows",
        "sink.batch_ms",
    ];
    const BOOLEANS: &[&str] = &[
        "source.ddl_capture",
        "kafka.tombstones",
        "kafka.compact",
        "kafka.transaction_metadata",
        "kafka.json_schemas",
        "sink.soft_delete",
    ];
    const LISTS: &[&str] = &["source.tables", "sink.tables"];
    let path = format!("{}.{key}", section.unwrap_or(""));
    let path = path.as_str();
    match path {
        _ if INTEGERS.contains(&path) => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(value.to_owned())),
        _ if BOOLEANS.contains(&path) => value
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| toml::Value::String(value.to_owned())),
        _ if LISTS.contains(&path) => {
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(toml::Value::is_array);
            parsed.unwrap_or_else(|| {
                toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                )
            })
        }
        _ => toml::Value::String(value.to_owned()),
    }
}

/// What to do with an update or delete that cannot identify its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnidentifiedRowPolicy {
    /// Stop with an error naming the table and the remedy.
    #[default]
    Fail,
    /// Skip the change with a warning.
    Skip,
}

#[cfg(test)]
mod tests;
