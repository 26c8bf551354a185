//! The sink's Kafka consumer: a consumer group whose partitions start where the warehouse
//! says, not where Kafka says.
//!
//! On every assignment the rebalance callback reads the group's offsets from the
//! warehouse (`__tidemark_offsets`, written in the same transaction as the rows) and
//! assigns each partition from there, or from the beginning when the warehouse has none.
//! Kafka's committed offsets are written after each warehouse commit for monitoring tools
//! only; if the warehouse cannot be read during a rebalance, the consumer falls back to
//! them, which can only replay changes the warehouse already has (harmless: the MERGE
//! applies only newer positions). Revoked partitions are reported to the runner, which
//! drops their pending changes: their new owner starts from the warehouse's offsets.

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::record::TopicPartition;
use super::warehouse::OffsetsReader;

/// The consumer's callbacks.
pub struct SinkContext {
    reader: OffsetsReader,
    group: String,
    revoked: Mutex<Vec<TopicPartition>>,
}

impl SinkContext {
    /// Callbacks that read `group`'s offsets with `reader`.
    pub fn new(reader: OffsetsReader, group: &str) -> Self {
        SinkContext {
            reader,
            group: group.to_owned(),
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<TopicPartition> {
        std::mem::take(
            &mut *self
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn assign_from_warehouse(&self, tpl: &mut TopicPartitionList) {
        match (self.reader)(&self.group) {
            Ok(stored) => {
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for key in assigned {
                    let offset = stored
                        .get(&key)
                        .map_or(Offset::Beginning, |next| Offset::Offset(*next));
                    let _ = tpl.set_partition_offset(&key.0, key.1, offset);
                }
                tracing::info!(
                    partitions = tpl.count(),
                    stored = stored.len(),
                    "partitions assigned; starting from the offsets stored in the warehouse"
                );
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot read the warehouse's offsets; starting from Kafka's committed offsets (changes the warehouse already has are skipped by position)"
            ),
        }
    }
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign_from_warehouse(tpl);
                if let Err(error) = base_consumer.assign(tpl) {
                    tracing::error!(%error, "assigning partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| TopicPartition {
                        topic: e.topic().to_owned(),
                        partition: e.partition(),
                    })
                    .collect();
                tracing::info!(partitions = revoked.len(), "partitions revoked");
                self.revoked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(revoked);
                if let Err(error) = base_consumer.unassign() {
                    tracing::error!(%error, "unassigning partitions");
                }
            }
            other => tracing::error!(error = ?other, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::debug!(%error, "advisory Kafka offset commit failed (the warehouse's offsets are the ones that count)");
        }
    }
}

/// The subscription of a connector's change topics: `<prefix>.<schema>.<table>` (and
/// `-vN` topics of the new-topic policy) as a regular expression, plus routed topics.
pub fn subscription(prefix: &str, routed: &[String]) -> Vec<String> {
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

/// Whether `topic` is one of the connector's change topics: the rule [`subscription`]
/// spells as a regular expression for the broker, for code that lists topics itself.
pub fn is_change_topic(prefix: &str, routed: &[String], topic: &str) -> bool {
    routed.iter().any(|r| r == topic)
        || topic
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(schema, table)| {
                !schema.is_empty() && !table.is_empty() && !table.contains('.')
            })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn subscription_matches_table_topics_only() {
        let topics = subscription("shop.eu", &["orders".into()]);
        assert_eq!(topics, vec!["^shop\\.eu\\.[^.]+\\.[^.]+$", "orders"]);
    }
}
