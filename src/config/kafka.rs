//! `[kafka]`: brokers, topics, routes, delivery and the record format.

use super::*;

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

/// `[kafka]`.
#[derive(Clone, Serialize, Deserialize)]
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
    /// Heartbeats go to `<heartbeat_topic_prefix>.<prefix>`; default `__debezium-heartbeat`,
    /// Debezium's `topic.heartbeat.prefix`, so they sit outside the change topics' namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_topic_prefix: Option<String>,
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

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_with_urls("KafkaConfig", self, &[], f)
    }
}

impl KafkaConfig {
    /// Settings for tidemark's auxiliary Kafka clients (admin, offsets reader, registry
    /// log, sink consumer): the brokers, every security, SASL and SSL property of
    /// `[kafka.properties]`, and no topic auto-creation, so asking for a topic's metadata
    /// never creates it with broker defaults.
    pub fn connection_config(&self) -> rdkafka::ClientConfig {
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

impl KafkaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if let Some(prefix) = &self.heartbeat_topic_prefix {
            if !valid_topic_name(prefix) {
                return invalid(
                    "kafka.heartbeat_topic_prefix",
                    format!("{prefix:?} may use only letters, digits, '.', '_' and '-'"),
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
