//! The producer's settings and its delivery reports: librdkafka's configuration as
//! tidemark sets it (idempotent, `acks=all`, never giving up on a record; transactional in
//! exactly-once mode), and the context whose delivery callback feeds the [`AckTracker`].

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::ack::{AckTracker, DeliveryFailure};
use super::delivered::DeliveredOffsets;
use crate::config::{Delivery, KafkaConfig};
use crate::observe::names;

/// Delivery reports into the [`AckTracker`].
pub(crate) struct AckContext {
    tracker: Arc<AckTracker>,
    offsets: Arc<DeliveredOffsets>,
    delivered: metrics::Counter,
    latency: metrics::Histogram,
    failed: metrics::Counter,
}

impl AckContext {
    pub fn new(tracker: Arc<AckTracker>, offsets: Arc<DeliveredOffsets>) -> Self {
        AckContext {
            tracker,
            offsets,
            delivered: metrics::counter!(names::KAFKA_RECORDS),
            latency: metrics::histogram!(names::KAFKA_DELIVERY_SECONDS),
            failed: metrics::counter!(names::KAFKA_DELIVERY_ERRORS),
        }
    }
}

impl ClientContext for AckContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the brokers it reaches.
    fn stats(&self, statistics: rdkafka::Statistics) {
        super::record_brokers_up("producer", &statistics);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, ordinal: usize) {
        use rdkafka::Message;
        let outcome = match result {
            Ok(message) => {
                self.delivered.increment(1);
                self.offsets
                    .record(message.topic(), message.partition(), message.offset());
                // The producer stamps each record with its create time (ms) at send.
                if let Some(created) = message.timestamp().to_millis() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    self.latency
                        .record(now.saturating_sub(created).max(0) as f64 / 1000.0);
                }
                Ok(())
            }
            Err((error, message)) => {
                self.failed.increment(1);
                let topic = message.topic().to_owned();
                let code = error.rdkafka_error_code();
                let detail = match code {
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => format!(
                        "topic {topic}: the broker rejected a record as too large ({error}); raise the topic's max.message.bytes"
                    ),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownPartition,
                    ) => format!(
                        "topic {topic} does not exist any more ({error}): was it deleted under the running connector? Its records from here on are not in Kafka. Start tidemark again (it creates missing topics with [kafka] partitions and replication_factor) or create the topic yourself; consumers of the old topic must start over on the new one"
                    ),
                    Some(RDKafkaErrorCode::KafkaStorageError) => format!(
                        "topic {topic}: a broker could not write the record to its disk ({error}); free space on the broker's log.dirs or replace the failed disk, then start tidemark again"
                    ),
                    _ => format!("topic {topic}: {error}"),
                };
                Err(DeliveryFailure {
                    detail,
                    // The same test as for any Kafka request: a broker away or restarting.
                    // Or, exactly once, a record purged because its Kafka transaction is
                    // being aborted after an abortable error (a coordinator that did not
                    // know a new partition yet, say): the source sends it again.
                    retriable: code.is_some_and(|code| {
                        super::is_outage(code)
                            || matches!(
                                code,
                                RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                            )
                    }),
                })
            }
        };
        self.tracker.delivered(ordinal, outcome);
    }
}

/// The librdkafka settings tidemark uses, then the user's `kafka.properties`.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        // A topic missing (deleted under the connector) is an error, never a topic the
        // broker creates with its own defaults (partition count, so per-key order).
        .set("allow.auto.create.topics", "false")
        // Statistics carry the brokers' connection states (tidemark_kafka_brokers_up).
        .set("statistics.interval.ms", "1000")
        .set(
            "queue.buffering.max.messages",
            config.max_in_flight.clamp(1, 10_000_000).to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// The producer's settings: [`client_config`], and for exactly once the transactional
/// ones (`transactional.id`, the transaction and message timeouts, `retry.backoff.ms`).
pub(crate) fn producer_config(config: &KafkaConfig, connector: &str) -> ClientConfig {
    let mut client = client_config(config);
    if config.delivery == Delivery::ExactlyOnce {
        // A fixed id fences any earlier instance of this connector; a transactional
        // producer needs a finite message timeout within the transaction timeout.
        let timeout_ms = super::exactly_once::transaction_timeout(config)
            .as_millis()
            .to_string();
        client
            .set(
                "transactional.id",
                super::exactly_once::transactional_id(connector),
            )
            .set("transaction.timeout.ms", &timeout_ms)
            .set("message.timeout.ms", &timeout_ms);
        if !config.properties.contains_key("retry.backoff.ms") {
            // A transaction begun right after the previous commit finds the coordinator
            // still writing that commit's markers (CONCURRENT_TRANSACTIONS), and
            // librdkafka retries after `retry.backoff.ms`, 100 ms by default: every
            // back-to-back Kafka transaction stalled that long. The Java producer
            // retries these after 20 ms (KAFKA-5477); so does tidemark.
            client.set(
                "retry.backoff.ms",
                super::exactly_once::RETRY_BACKOFF_MS.to_string(),
            );
        }
    }
    client
}
