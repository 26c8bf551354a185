//! Connector configuration: a TOML file, then `TIDEMARK_<SECTION>_<KEY>` environment
//! overrides (top-level keys as `TIDEMARK_<KEY>`), then the command line's
//! `--set section.key=value` flags, then [`Config::validate`]. One file per section
//! (`source`, `kafka`, `registry`, `sink`) and one for the environment and flag
//! overrides; everything is re-exported here, so a type is `config::KafkaConfig`.
//!
//! Environment values take the type of the key they override: numbers and booleans are
//! parsed, lists accept a TOML array (`["a","b"]`) or comma-separated text. Secrets (the source
//! password) are kept in [`Secret`], which never prints.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::secret::Secret;
use crate::pg::ConnectionSettings;

mod events;
mod kafka;
mod overrides;
mod registry;
mod sink;
mod source;

pub use events::*;
pub use kafka::*;
pub use registry::*;
pub use sink::*;
pub use source::*;

use overrides::{apply_env_override, apply_flag_override};

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

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connector name: the default topic prefix and the default slot/publication suffix.
    pub name: String,
    /// The PostgreSQL source.
    pub source: SourceConfig,
    /// What the change events look like (Debezium's settings, a preset).
    #[serde(default)]
    pub events: EventsConfig,
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

const SECTIONS: &[&str] = &["source", "events", "kafka", "registry", "sink", "metrics"];

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
        if let Some(primary) = &self.source.primary_url {
            ConnectionSettings::from_url(primary).map_err(|e| ConfigError::Invalid {
                field: "source.primary_url",
                rule: e.to_string(),
            })?;
        }
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
            if crate::domain::names::split_qualified(table).is_none() {
                return invalid(
                    "source.signal_table",
                    format!("{table:?} must be schema.table"),
                );
            }
        }
        if self.source.stream_memory_mb == 0 {
            return invalid("source.stream_memory_mb", "must be at least 1".into());
        }
        self.events.validate()?;
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
    /// The envelope's context for this connector: its name (the topic prefix), the
    /// source's database and the `[events]` settings the encoders follow.
    pub fn envelope_context(&self) -> Result<crate::domain::event::EnvelopeContext, ConfigError> {
        let settings = self.source_settings()?;
        let mut context = crate::domain::event::EnvelopeContext::new(&self.name, &settings.dbname);
        context.decimal_mode = self.events.decimal_mode();
        context.time_precision = self.events.time_precision();
        context.interval_mode = self.events.interval_mode();
        context.binary_mode = self.events.binary_handling_mode;
        context.hstore_mode = self.events.hstore_handling_mode;
        context.unavailable_value = self.events.unavailable_value()?.into();
        context.debezium_types = self.events.preset == Preset::Debezium;
        context.extended_headers = self.events.extended_headers();
        context.first_change_transaction_id = self.events.first_change_transaction_id();
        context.connect_avro = self.events.avro_mapping() == events::AvroMapping::Connect;
        context.transaction_block = self
            .events
            .transaction_block(self.kafka.as_ref().is_some_and(|k| k.transaction_metadata));
        Ok(context)
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
        self.settings_of(&self.source.url, "source.url")
    }

    /// Connection settings of `source.primary_url` (where tidemark writes when the source is
    /// a standby), with the configured password applied; `None` when unset.
    pub fn primary_settings(&self) -> Result<Option<ConnectionSettings>, ConfigError> {
        self.source
            .primary_url
            .as_ref()
            .map(|url| self.settings_of(url, "source.primary_url"))
            .transpose()
    }

    /// `url` (the config field `field`) parsed, with `source.password` and the connector's
    /// application name applied.
    fn settings_of(
        &self,
        url: &str,
        field: &'static str,
    ) -> Result<ConnectionSettings, ConfigError> {
        let mut settings = ConnectionSettings::from_url(url).map_err(|e| ConfigError::Invalid {
            field,
            rule: e.to_string(),
        })?;
        if let Some(password) = &self.source.password {
            settings.password = Some(password.clone());
        }
        settings.application_name = format!("tidemark-{}", self.name);
        Ok(settings)
    }

    /// SQL connections to the source and, when it is a standby, to the primary for
    /// tidemark's own writes (see [`crate::pg::source_sql`]).
    pub async fn connect_source_sql(
        &self,
    ) -> Result<crate::pg::SourceSql, crate::pg::ConnectionError> {
        let invalid = |e: ConfigError| crate::pg::ConnectionError::InvalidSettings(e.to_string());
        let source = self.source_settings().map_err(invalid)?;
        let primary = self.primary_settings().map_err(invalid)?;
        crate::pg::SourceSql::connect(&source, primary.as_ref()).await
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

/// The `Debug` form of a configuration section whose `url_fields` hold connection URLs: its
/// serialised fields (`Secret`s are never serialised) with the URLs' passwords replaced, and
/// any value under a key naming a password or a secret (`sasl.password` among
/// `kafka.properties`, say) shown as `***`.
pub(crate) fn debug_with_urls<T: Serialize>(
    name: &str,
    section: &T,
    url_fields: &[&str],
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    fn hide_secrets(value: &mut serde_json::Value) {
        if let serde_json::Value::Object(map) = value {
            for (key, inner) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if (key.contains("password") || key.contains("secret")) && inner.is_string() {
                    *inner = "***".into();
                } else {
                    hide_secrets(inner);
                }
            }
        }
    }
    let mut value = serde_json::to_value(section).map_err(|_| std::fmt::Error)?;
    for field in url_fields {
        if let Some(url) = value.get_mut(*field) {
            if let Some(text) = url.as_str() {
                *url = crate::domain::secret::redact_url(text).into();
            }
        }
    }
    hide_secrets(&mut value);
    write!(f, "{name} {value}")
}

#[cfg(test)]
mod tests;
