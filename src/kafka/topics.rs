//! Topic names and topic creation.
//!
//! Change topics are `<prefix>.<schema>.<table>` (prefix: `kafka.topic_prefix`, else the
//! connector name), unless a route in `kafka.routes` names another topic for the table.
//! Logical messages go to `kafka.message_topic` (default `<prefix>.message`), transaction metadata to
//! `<prefix>.transaction`, heartbeats to `<prefix>.heartbeat`, as Debezium names them.
//! Topics are created the first time a record is sent to them, with the configured partition
//! count, replication factor and configs (`cleanup.policy=compact` when `kafka.compact`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;
use crate::config::KafkaConfig;
use crate::domain::event::ChangeEvent;

/// Maps events to topic names.
#[derive(Debug, Clone)]
pub struct TopicRouter {
    prefix: String,
    routes: HashMap<String, String>,
    message_topic: Arc<str>,
}

impl TopicRouter {
    /// A router for `config`, with `default_prefix` (the connector name) unless configured.
    pub fn new(config: &KafkaConfig, default_prefix: &str) -> Self {
        let routes = config
            .routes
            .iter()
            .flat_map(|route| {
                route
                    .tables
                    .iter()
                    .map(|t| (t.clone(), route.topic.clone()))
            })
            .collect();
        let prefix = config
            .topic_prefix
            .clone()
            .unwrap_or_else(|| default_prefix.to_owned());
        let message_topic = match &config.message_topic {
            Some(topic) => topic.as_str().into(),
            None => format!("{prefix}.message").into(),
        };
        TopicRouter {
            prefix,
            routes,
            message_topic,
        }
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic of an event. The output asks once per table description and keeps the
    /// answer, so this is not on the per-event path.
    pub fn topic(&self, event: &ChangeEvent) -> Arc<str> {
        match &event.table {
            Some(table) => self.table_topic(&table.schema, &table.name),
            None => self.message_topic.clone(),
        }
    }

    /// The topic of table `schema.name`: its route, else `<prefix>.<schema>.<name>`.
    pub fn table_topic(&self, schema: &str, name: &str) -> Arc<str> {
        let qualified = format!("{schema}.{name}");
        match self.routes.get(&qualified) {
            Some(topic) => topic.as_str().into(),
            None => format!("{}.{qualified}", self.prefix).into(),
        }
    }

    /// `<prefix>.schema-changes`.
    pub fn schema_change_topic(&self) -> String {
        format!("{}.schema-changes", self.prefix)
    }

    /// `kafka.message_topic`, else `<prefix>.message`.
    pub fn message_topic(&self) -> Arc<str> {
        self.message_topic.clone()
    }

    /// `<prefix>.transaction`.
    pub fn transaction_topic(&self) -> String {
        format!("{}.transaction", self.prefix)
    }

    /// `<prefix>.offsets`: the exactly-once position.
    pub fn offsets_topic(&self) -> String {
        format!("{}.offsets", self.prefix)
    }

    /// `<prefix>.heartbeat`.
    pub fn heartbeat_topic(&self) -> String {
        format!("{}.heartbeat", self.prefix)
    }
}

/// What a topic holds, which decides how it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A table's changes: the configured partitions and change-topic configs.
    Change,
    /// Messages, transaction metadata, heartbeats: the configured partitions only.
    Plain,
    /// The exactly-once offsets: one partition, `cleanup.policy=compact`.
    Compacted,
}

/// Creates topics once, on first use. The admin client must have
/// `allow.auto.create.topics=false`, so asking for a topic's metadata never creates it.
pub struct TopicCreator {
    admin: Arc<AdminClient<DefaultClientContext>>,
    known: HashSet<String>,
    partitions: i32,
    replication_factor: i32,
    change_configs: Vec<(String, String)>,
}

impl TopicCreator {
    /// A creator using `admin`, with the topic settings of `config`.
    pub fn new(admin: AdminClient<DefaultClientContext>, config: &KafkaConfig) -> Self {
        let admin = Arc::new(admin);
        let mut change_configs: Vec<(String, String)> = config
            .topic_config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if config.compact && !config.topic_config.contains_key("cleanup.policy") {
            change_configs.push(("cleanup.policy".into(), "compact".into()));
        }
        TopicCreator {
            admin,
            known: HashSet::new(),
            partitions: config.partitions,
            replication_factor: config.replication_factor,
            change_configs,
        }
    }

    /// Creates `topic` unless it exists, as a topic of `kind`.
    pub async fn ensure(&mut self, topic: &str, kind: TopicKind) -> Result<(), KafkaError> {
        if self.known.contains(topic) {
            return Ok(());
        }
        // Pre-created topics (clusters that deny CREATE) are used as they are.
        if self.exists(topic).await {
            self.known.insert(topic.to_owned());
            return Ok(());
        }
        let partitions = if kind == TopicKind::Compacted {
            1
        } else {
            self.partitions
        };
        let mut new_topic = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        match kind {
            TopicKind::Change => {
                for (key, value) in &self.change_configs {
                    new_topic = new_topic.set(key, value);
                }
            }
            TopicKind::Compacted => new_topic = new_topic.set("cleanup.policy", "compact"),
            TopicKind::Plain => {}
        }
        tracing::debug!(topic, "creating topic");
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| KafkaError::TopicCreation {
                topic: topic.to_owned(),
                detail: e.to_string(),
                transient: e.rdkafka_error_code().is_some_and(super::is_outage),
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(KafkaError::TopicCreation {
                        topic: topic.to_owned(),
                        detail: code.to_string(),
                        transient: super::is_outage(code),
                    });
                }
            }
        }
        tracing::debug!(topic, "topic ready");
        self.known.insert(topic.to_owned());
        Ok(())
    }

    /// Whether the broker knows `topic` (a metadata request; errors count as "no").
    async fn exists(&self, topic: &str) -> bool {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let lookup = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
        .await;
        matches!(lookup, Ok(Ok(true)))
    }
}
