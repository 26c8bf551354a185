//! Topic names and topic creation.
//!
//! Change topics are `<prefix>.<schema>.<table>` (prefix: `kafka.topic_prefix`, else the
//! connector name), unless a route in `kafka.routes` names another topic for the table.
//! Logical messages go to `kafka.message_topic` (default `<prefix>.message`), transaction
//! metadata to `<prefix>.transaction`, heartbeats to `__debezium-heartbeat.<prefix>`
//! (`kafka.heartbeat_topic_prefix`), as Debezium names them.
//!
//! tidemark's own topics sit outside the `<prefix>.` namespace, as Debezium's heartbeat
//! topic does, so a consumer subscribed to `<prefix>\..*` (a sink with Confluent's
//! AvroConverter, say) never meets a record it cannot decode: the offsets are
//! `__tidemark-offsets.<prefix>` (plain JSON in every format) and the schema changes
//! `__tidemark-schema-changes.<prefix>`. Earlier tidemark builds kept the offsets in
//! `<prefix>.offsets`; that topic is read when the new one holds nothing for the
//! connector, so an upgraded connector resumes where it stopped.
//!
//! Topics are created the first time a record is sent to them, with the configured partition
//! count, replication factor and configs (`cleanup.policy=compact` when `kafka.compact`),
//! and used once metadata shows every partition led: brokers learn of a new topic a moment
//! after the controller creates it, and a transaction coordinator that does not know it yet
//! refuses to add its partitions to a Kafka transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;
use crate::config::KafkaConfig;
use crate::domain::event::ChangeEvent;

/// Debezium's default `topic.heartbeat.prefix`.
const DEFAULT_HEARTBEAT_TOPIC_PREFIX: &str = "__debezium-heartbeat";

/// Maps events to topic names.
#[derive(Debug, Clone)]
pub(crate) struct TopicRouter {
    prefix: String,
    routes: HashMap<String, String>,
    /// The topics of tables named one by one to a sink ([`TopicRouter::with_tables`]).
    listed: Vec<String>,
    message_topic: Arc<str>,
    heartbeat_topic_prefix: String,
}

impl TopicRouter {
    /// A router for `config`, with `default_prefix` (the connector name) unless configured.
    pub fn new(config: &KafkaConfig, default_prefix: &str) -> Self {
        let routes = config
            .routes
            .iter()
            .flat_map(|route| {
                route.tables.iter().map(|t| {
                    // Keyed by the one spelling of `names::qualified`.
                    let key = crate::domain::names::split_qualified(t).map_or_else(
                        || t.clone(),
                        |(s, n)| crate::domain::names::qualified(&s, &n),
                    );
                    (key, route.topic.clone())
                })
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
        let heartbeat_topic_prefix = config
            .heartbeat_topic_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_HEARTBEAT_TOPIC_PREFIX.to_owned());
        TopicRouter {
            prefix,
            routes,
            listed: Vec::new(),
            message_topic,
            heartbeat_topic_prefix,
        }
    }

    /// Adds the topics of the tables `tables` names one by one (`sink.tables`; `schema.*`
    /// entries add nothing) to the change topics: a table whose name holds a dot has a topic
    /// of more than three parts, which the subscription's pattern cannot tell from another
    /// connector's under a longer prefix, so it is read when listed by name.
    pub fn with_tables(mut self, tables: &[String]) -> Self {
        use crate::config::TableSelector;
        for table in tables {
            if let Some(TableSelector::Table { schema, name }) = TableSelector::parse(table) {
                let topic = self.table_topic(&schema, &name).to_string();
                if !self.listed.contains(&topic) {
                    self.listed.push(topic);
                }
            }
        }
        self
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

    /// The topic of table `schema.name`: its route, else `<prefix>.<schema>.<name>` with the
    /// characters Kafka does not allow replaced as Debezium replaces them
    /// ([`crate::domain::names::topic_name`]).
    pub(crate) fn table_topic(&self, schema: &str, name: &str) -> Arc<str> {
        match self
            .routes
            .get(&crate::domain::names::qualified(schema, name))
        {
            Some(topic) => topic.as_str().into(),
            None => crate::domain::names::topic_name(&self.prefix, schema, name).into(),
        }
    }

    /// `__tidemark-schema-changes.<prefix>`.
    pub(crate) fn schema_change_topic(&self) -> String {
        format!("__tidemark-schema-changes.{}", self.prefix)
    }

    /// `<prefix>.transaction`.
    pub(crate) fn transaction_topic(&self) -> String {
        format!("{}.transaction", self.prefix)
    }

    /// `__tidemark-offsets.<prefix>`: the exactly-once position and the snapshot progress.
    pub(crate) fn offsets_topic(&self) -> String {
        format!("__tidemark-offsets.{}", self.prefix)
    }

    /// The offsets topics to read, in order: [`TopicRouter::offsets_topic`], then the name
    /// earlier tidemark builds used (`<prefix>.offsets`), read only when the first holds
    /// nothing.
    pub(crate) fn offsets_topics_to_read(&self) -> [String; 2] {
        [self.offsets_topic(), format!("{}.offsets", self.prefix)]
    }

    /// `<heartbeat_topic_prefix>.<prefix>`, by default `__debezium-heartbeat.<prefix>`.
    pub(crate) fn heartbeat_topic(&self) -> String {
        format!("{}.{}", self.heartbeat_topic_prefix, self.prefix)
    }

    /// The topics that routes send tables to, and those of tables listed by name.
    pub(crate) fn routed_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.routes.values().chain(&self.listed).cloned().collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The sink's subscription: the change topics `<prefix>.<schema>.<table>` (and the
    /// `-vN` topics of the new-topic policy) as a regular expression for the broker, and
    /// the routed topics.
    pub(crate) fn subscription(&self) -> Vec<String> {
        subscription(&self.prefix, &self.routed_topics())
    }

    /// Whether `topic` is one of the change topics: the rule [`TopicRouter::subscription`]
    /// spells for the broker, for code that lists topics itself.
    pub(crate) fn is_change_topic(&self, topic: &str) -> bool {
        self.routes
            .values()
            .chain(&self.listed)
            .any(|routed| routed == topic)
            || is_table_topic(&self.prefix, topic)
    }
}

/// The table (schema, name) a change topic `<prefix>.<schema>.<table>` is named after;
/// none for any other topic (a routed topic names no table).
pub(crate) fn table_of_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .split_once('.')
}

/// The subscription of a connector's change topics: `<prefix>.<schema>.<table>` (and
/// `-vN` topics of the new-topic policy) as a regular expression, plus routed topics.
fn subscription(prefix: &str, routed: &[String]) -> Vec<String> {
    let escaped: String = prefix
        .chars()
        .map(|c| match c {
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' | '\\' => {
                format!("\\{c}")
            }
            c => c.to_string(),
        })
        .collect();
    let mut topics = vec![format!("^{escaped}\\.[^.]+\\.[^.]+$")];
    topics.extend(routed.iter().cloned());
    topics
}

/// Whether `topic` is `<prefix>.<schema>.<table>` with neither part empty nor dotted.
fn is_table_topic(prefix: &str, topic: &str) -> bool {
    table_of_topic(prefix, topic).is_some_and(|(schema, table)| {
        !schema.is_empty() && !table.is_empty() && !table.contains('.')
    })
}

/// What a topic holds, which decides how it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicKind {
    /// A table's changes: the configured partitions and change-topic configs.
    Change,
    /// Messages, transaction metadata, heartbeats: the configured partitions only.
    Plain,
    /// The exactly-once offsets: one partition, `cleanup.policy=compact`.
    Compacted,
}

/// Creates topics once, on first use. The admin client must have
/// `allow.auto.create.topics=false`, so asking for a topic's metadata never creates it.
pub(crate) struct TopicCreator {
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
        self.wait_visible(topic, partitions).await;
        tracing::debug!(topic, "topic ready");
        self.known.insert(topic.to_owned());
        Ok(())
    }

    /// Waits (at most 30 s) until metadata answers show the new topic with every
    /// partition led, three answers in a row: brokers learn of a topic a moment after the
    /// controller creates it, and a transaction coordinator that does not know it yet
    /// refuses to add its partitions to a Kafka transaction (`UNKNOWN_TOPIC_OR_PART`), an
    /// abortable error. Each answer may come from another broker. Past the deadline the
    /// producer's own retries take over.
    async fn wait_visible(&self, topic: &str, partitions: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut in_a_row = 0;
        while in_a_row < 3 && std::time::Instant::now() < deadline {
            if self.led(topic, partitions).await {
                in_a_row += 1;
            } else {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Whether a metadata answer shows `topic` with `partitions` partitions, each led.
    async fn led(&self, topic: &str, partitions: i32) -> bool {
        self.metadata_shows(topic, move |t| {
            t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        })
        .await
    }

    /// Whether the broker knows `topic` (a metadata request; errors count as "no").
    async fn exists(&self, topic: &str) -> bool {
        self.metadata_shows(topic, |t| !t.partitions().is_empty())
            .await
    }

    /// Whether a metadata answer shows `topic` without error and as `check` wants it
    /// (errors count as "no").
    async fn metadata_shows(
        &self,
        topic: &str,
        check: impl Fn(&rdkafka::metadata::MetadataTopic) -> bool + Send + 'static,
    ) -> bool {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        let lookup = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .any(|t| t.name() == name && t.error().is_none() && check(t))
                })
        })
        .await;
        matches!(lookup, Ok(Ok(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule of [`TopicRouter::is_change_topic`] for a prefix and routed topics.
    fn is_change_topic(prefix: &str, routed: &[String], topic: &str) -> bool {
        routed.iter().any(|r| r == topic) || is_table_topic(prefix, topic)
    }

    #[test]
    fn change_topics_are_schema_and_table_under_the_prefix() {
        let routed = ["orders".to_string()];
        assert!(is_change_topic("shop.eu", &routed, "shop.eu.public.items"));
        assert!(is_change_topic(
            "shop.eu",
            &routed,
            "shop.eu.public.items-v2"
        ));
        assert!(is_change_topic("shop.eu", &routed, "orders"));
        assert!(!is_change_topic(
            "shop.eu",
            &routed,
            "shop.eu.schema-changes"
        ));
        assert!(!is_change_topic("shop.eu", &routed, "shop.eu.offsets"));
        assert!(!is_change_topic("shop.eu", &routed, "shop.eu.a.b.c"));
        assert!(!is_change_topic("shop.eu", &routed, "shop.other.t"));
    }

    #[test]
    fn tidemarks_own_topics_sit_outside_the_change_topic_namespace() {
        let config: KafkaConfig = toml::from_str("brokers = \"b:9092\"\ntopic_prefix = \"shop\"")
            .unwrap_or_else(|e| panic!("{e}"));
        let router = TopicRouter::new(&config, "unused");
        assert_eq!(router.heartbeat_topic(), "__debezium-heartbeat.shop");
        assert_eq!(router.offsets_topic(), "__tidemark-offsets.shop");
        assert_eq!(
            router.schema_change_topic(),
            "__tidemark-schema-changes.shop"
        );
        assert_eq!(router.transaction_topic(), "shop.transaction");
        assert_eq!(
            router.offsets_topics_to_read(),
            ["__tidemark-offsets.shop".to_string(), "shop.offsets".into()]
        );
        for topic in [
            router.heartbeat_topic(),
            router.offsets_topic(),
            router.schema_change_topic(),
        ] {
            assert!(!topic.starts_with("shop."), "{topic}");
            assert!(!router.is_change_topic(&topic), "{topic}");
        }
        let config: KafkaConfig =
            toml::from_str("brokers = \"b:9092\"\nheartbeat_topic_prefix = \"beats\"")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            TopicRouter::new(&config, "shop").heartbeat_topic(),
            "beats.shop"
        );
    }

    #[test]
    fn subscription_matches_table_topics_only() {
        let topics = subscription("shop.eu", &["orders".into()]);
        assert_eq!(topics, vec!["^shop\\.eu\\.[^.]+\\.[^.]+$", "orders"]);
    }
}
