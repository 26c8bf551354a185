//! Kafka delivery: events to topics keyed and partitioned like Debezium's, with the
//! position confirmed to PostgreSQL driven by the broker's acknowledgements.
//!
//! - [`topics`]: topic names (`<prefix>.<schema>.<table>`, routes) and creation.
//! - [`murmur2`]: the Java client's partitioner, which librdkafka's `murmur2_random` matches.
//! - [`ack`]: delivery reports into the acknowledged position.
//! - [`delivered`]: delivery reports into the last stored offset per partition.
//! - [`encode`]: the record encoder trait and the JSON encoder.
//! - [`avro_encoder`]: Avro in Confluent framing, schemas registered in the registry, and
//!   the incompatible-schema policies.
//! - [`producer`]: the producer's settings and its delivery reports (used by both of the
//!   next two).
//! - [`exactly_once`]: the transactional producer and the stored position.
//! - [`output`]: the idempotent producer as an [`crate::output::EventOutput`].

pub mod ack;
pub mod avro_encoder;
pub mod delivered;
pub mod encode;
pub mod exactly_once;
pub mod murmur2;
pub mod output;
pub mod producer;
pub mod topics;

pub use output::KafkaOutput;

/// Sets `tidemark_kafka_brokers_up{client}` from a client's librdkafka statistics: the
/// brokers (not the bootstrap entries, whose node id is -1) in state `UP`.
pub(crate) fn record_brokers_up(client: &'static str, statistics: &rdkafka::Statistics) {
    let up = statistics
        .brokers
        .values()
        .filter(|broker| broker.nodeid >= 0 && broker.state == "UP")
        .count();
    metrics::gauge!(crate::observe::names::KAFKA_BROKERS_UP, "client" => client).set(up as f64);
}

/// Kafka failures, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client could not be created or a request failed.
    #[error(
        "Kafka: {context}: {source}; check kafka.brokers, the security settings in [kafka.properties] and the brokers' logs; nothing after the last acknowledged transaction was confirmed to PostgreSQL"
    )]
    Client {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The brokers could not be reached at start.
    #[error(
        "cannot reach the Kafka brokers {brokers}: {detail}; check kafka.brokers and that the brokers are running"
    )]
    Unreachable {
        /// Configured brokers.
        brokers: String,
        /// librdkafka's error.
        detail: String,
    },
    /// A record is larger than the producer or the broker accepts.
    #[error(
        "a record for topic {topic} is {bytes} bytes, more than Kafka accepts ({detail}); raise the topic's max.message.bytes and message.max.bytes in [kafka.properties], or leave the large column out of the publication"
    )]
    TooLarge {
        /// Topic.
        topic: String,
        /// Size of key plus value.
        bytes: usize,
        /// librdkafka's error.
        detail: String,
    },
    /// A delivery failed for good; nothing after it is confirmed.
    #[error(
        "Kafka delivery failed: {0}; nothing from this record on was confirmed to PostgreSQL, so it will be sent again after a restart"
    )]
    Delivery(String),
    /// A delivery failed with an error a new attempt may not meet (a broker restarting
    /// under the request, an outage); the source sends again from its confirmed position.
    #[error(
        "Kafka delivery failed: {0}; nothing from this record on was confirmed to PostgreSQL, so the source sends it again"
    )]
    DeliveryInterrupted(String),
    /// The transactional producer met a fatal error and can write no more: typically it
    /// was fenced by another producer with the same `transactional.id`, that is another
    /// tidemark running with the same connector name. Definite: this instance stops.
    #[error(
        "the exactly-once producer (transactional.id {transactional_id}) can write no more: {reason} ({code:?}); {remedy}. Nothing after its last committed Kafka transaction was confirmed to PostgreSQL"
    )]
    ProducerFatal {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// librdkafka's code of the fatal error.
        code: rdkafka::types::RDKafkaErrorCode,
        /// librdkafka's reason.
        reason: String,
        /// What to do about it.
        remedy: &'static str,
    },
    /// The transaction coordinator timed out the Kafka transaction holding the same source
    /// transactions twice with nothing committed in between: it would time out for ever.
    #[error(
        "the transaction coordinator aborted the Kafka transaction after {position} twice: it was open longer than transaction.timeout.ms ({timeout_ms} ms) each time. A source transaction too large to deliver in that time, or a broker outage that long: raise kafka.properties \"transaction.timeout.ms\" (up to the brokers' transaction.max.timeout.ms, 900000 by default) or look at the brokers. Nothing after {position} was confirmed to PostgreSQL"
    )]
    TransactionTimedOut {
        /// The producer's `transaction.timeout.ms`.
        timeout_ms: u64,
        /// The end of the last committed Kafka transaction.
        position: crate::domain::lsn::Lsn,
    },
    /// A topic could not be created.
    #[error(
        "creating topic {topic} failed: {detail}; create it yourself or allow tidemark to create topics (CREATE on the cluster)"
    )]
    TopicCreation {
        /// Topic.
        topic: String,
        /// Broker's error.
        detail: String,
        /// The broker could not be reached or was restarting: worth another attempt.
        transient: bool,
    },
    /// An event could not be encoded.
    #[error(
        "encoding an event as JSON: {0}; nothing from this event on was confirmed to PostgreSQL; please report this"
    )]
    Encode(#[from] serde_json::Error),
    /// An event could not be encoded as Avro.
    #[error(
        "encoding an event as Avro: {0}; nothing from this event on was confirmed to PostgreSQL"
    )]
    Avro(#[from] crate::schema::avro::AvroError),
    /// The schema registry failed.
    #[error(transparent)]
    Registry(#[from] crate::schema::registry_client::RegistryClientError),
    /// The registry refused a table's new schema and the policy is `fail`.
    #[error(
        "the schema registry refused the new schema of {table} under subject {subject} as incompatible ({reasons}); the stream stopped before the first row with the new shape. Remedy: set [registry] on_incompatible = \"relax\" or \"new-topic\", or change the subject's compatibility level; a subject registered by an earlier tidemark in its own Avro mapping keeps it with [events] avro_mapping = \"tidemark\""
    )]
    Incompatible {
        /// `schema.table`.
        table: String,
        /// The subject.
        subject: String,
        /// What the registry said, naming columns and rules.
        reasons: String,
    },
    /// Avro output was asked for without a registry.
    #[error(
        "kafka.format = \"avro\" needs a schema registry: build the output with KafkaOutput::from_config (which uses [registry] url or starts the embedded registry), or set kafka.format = \"json\""
    )]
    NoRegistry,
}

impl KafkaError {
    /// Whether the source may go on after reconnecting, rather than stop: a delivery
    /// interrupted by a broker going away, or a request that failed on the network or on a
    /// broker that is restarting. Not a wrong setting, a refused permission or a bad record.
    pub fn is_transient(&self) -> bool {
        match self {
            KafkaError::DeliveryInterrupted(_) => true,
            KafkaError::TopicCreation { transient, .. } => *transient,
            KafkaError::Client { source, .. } => source.rdkafka_error_code().is_some_and(is_outage),
            _ => false,
        }
    }
}

impl From<KafkaError> for crate::output::OutputError {
    fn from(error: KafkaError) -> Self {
        let transient = error.is_transient();
        crate::output::OutputError::Destination(crate::output::DestinationError::new(
            error, transient,
        ))
    }
}

/// Codes of a broker that cannot be reached or answer for now: a request (or a record's
/// delivery) failed with one of these may succeed when sent again. Any other code, such as a
/// record too large, a refused permission or a fenced producer, needs a person.
pub(crate) fn is_outage(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | OperationTimedOut
            | RequestTimedOut
            | MessageTimedOut
            | TimedOutQueue
            | NetworkException
            | LeaderNotAvailable
            | NotLeaderForPartition
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | WaitingForCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | Retry
            | Unknown
    )
}
