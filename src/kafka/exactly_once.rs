//! Exactly-once delivery with a transactional producer.
//!
//! Whole source transactions are batched into one Kafka transaction together with a record on
//! the compacted `<prefix>.offsets` topic (key: the connector; value: the end position of the
//! last source transaction in the batch). A Kafka transaction is committed only at a source
//! transaction boundary, so it never holds half a source transaction. Its commit is the
//! acknowledgement: only then may PostgreSQL be told the position.
//!
//! After a crash, PostgreSQL resends everything after the position it was told, which may
//! be older than what Kafka committed. On start, the stored position is read back with
//! `isolation.level=read_committed` (after `init_transactions`, which aborts whatever the
//! previous instance left open), and the reader skips every source transaction whose commit
//! LSN is below it. That is exact because a transaction's commit record ends at or before the
//! next transaction's commit record begins. A consumer reading with `read_committed` sees
//! every change once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;
use super::output::AckContext;
use crate::config::KafkaConfig;
use crate::lsn::Lsn;

/// The state of exactly-once delivery.
#[derive(Debug)]
pub struct ExactlyOnce {
    offsets_topic: String,
    connector: String,
    kafka_transaction_open: bool,
    source_transaction_open: bool,
    pending_end: Option<Lsn>,
    acknowledged: Lsn,
    resume: Lsn,
}

/// The `transactional.id` of a connector's producer.
pub(crate) fn transactional_id(connector: &str) -> String {
    format!("tidemark-{connector}")
}

/// The producer's fatal error, if it has one, named with what to do. A fenced producer (a
/// second instance with the same `transactional.id` called `init_transactions`) reports
/// `Fenced`, `ProducerFenced` or `InvalidProducerEpoch`.
pub(crate) fn fatal_error(
    producer: &ThreadedProducer<AckContext>,
    connector: &str,
) -> Option<KafkaError> {
    let (code, reason) = producer.client().fatal_error()?;
    let fenced = matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    );
    Some(KafkaError::ProducerFatal {
        transactional_id: transactional_id(connector),
        code,
        reason,
        remedy: if fenced {
            "another tidemark with the same connector name started and took over the transactional id; run one instance per connector (the other one goes on from what Kafka committed)"
        } else {
            "start tidemark again: it goes on from the last committed Kafka transaction"
        },
    })
}

fn client_error(context: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError + '_ {
    move |source| KafkaError::Client {
        context: context.to_owned(),
        source,
    }
}

impl ExactlyOnce {
    /// Initializes transactions (fencing any previous instance) and reads the stored position.
    pub async fn start(
        producer: &Arc<ThreadedProducer<AckContext>>,
        config: &KafkaConfig,
        offsets_topic: String,
        connector: &str,
    ) -> Result<Self, KafkaError> {
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
            .await
            .map_err(|e| KafkaError::Delivery(format!("initializing transactions: {e}")))?
            .map_err(|source| KafkaError::Client {
                context: "initializing transactions (does the broker support them?)".into(),
                source,
            })?;
        let (config, topic, name) = (config.clone(), offsets_topic.clone(), connector.to_owned());
        let resume = tokio::task::spawn_blocking(move || read_position(&config, &topic, &name))
            .await
            .map_err(|e| KafkaError::Delivery(format!("reading {offsets_topic}: {e}")))??;
        Ok(ExactlyOnce {
            offsets_topic,
            connector: connector.to_owned(),
            kafka_transaction_open: false,
            source_transaction_open: false,
            pending_end: None,
            acknowledged: resume,
            resume,
        })
    }

    /// The connector's name (its producer's `transactional.id` is `tidemark-<name>`).
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// The offsets topic.
    pub fn offsets_topic(&self) -> &str {
        &self.offsets_topic
    }

    /// Source transactions committed before this were delivered in an earlier run, or in a
    /// Kafka transaction committed before the last abort.
    pub fn resume(&self) -> Lsn {
        self.resume
    }

    /// The end of the last source transaction in a committed Kafka transaction.
    pub fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }

    /// Called before producing a record of a source transaction.
    pub fn before_record(
        &mut self,
        producer: &ThreadedProducer<AckContext>,
    ) -> Result<(), KafkaError> {
        self.begin_if_closed(producer)?;
        self.source_transaction_open = true;
        Ok(())
    }

    /// Begins a Kafka transaction unless one is open; true when it began one.
    fn begin_if_closed(
        &mut self,
        producer: &ThreadedProducer<AckContext>,
    ) -> Result<bool, KafkaError> {
        if self.kafka_transaction_open {
            return Ok(false);
        }
        producer.begin_transaction().map_err(|error| {
            fatal_error(producer, &self.connector)
                .unwrap_or_else(|| client_error("beginning a Kafka transaction")(error))
        })?;
        self.kafka_transaction_open = true;
        Ok(true)
    }

    /// Called before producing a record that belongs to no source transaction (snapshot
    /// progress): it joins the open Kafka transaction, or opens one that commits at the
    /// position already acknowledged.
    pub fn before_side_record(
        &mut self,
        producer: &ThreadedProducer<AckContext>,
    ) -> Result<(), KafkaError> {
        if self.begin_if_closed(producer)? {
            self.pending_end.get_or_insert(self.acknowledged);
        }
        Ok(())
    }

    /// A source transaction ended at `end`.
    pub fn source_committed(&mut self, end: Lsn) {
        self.source_transaction_open = false;
        if self.kafka_transaction_open {
            self.pending_end = Some(end);
        } else {
            // Nothing was produced for it (e.g. a skipped table): nothing to commit.
            self.acknowledged = self.acknowledged.max(end);
        }
    }

    /// The position to store and commit now, if the Kafka transaction may be committed.
    pub fn ready_to_commit(&self) -> Option<Lsn> {
        if self.kafka_transaction_open && !self.source_transaction_open {
            self.pending_end
        } else {
            None
        }
    }

    /// The offsets record for `end`: key and value.
    pub fn offsets_record(&self, end: Lsn) -> Result<(Vec<u8>, Vec<u8>), KafkaError> {
        let key = serde_json::to_vec(&serde_json::json!({ "connector": self.connector }))?;
        let value = serde_json::to_vec(
            &serde_json::json!({ "end_lsn": end.as_u64(), "position": end.to_string() }),
        )?;
        Ok((key, value))
    }

    /// Commits the Kafka transaction whose last source transaction ends at `end`.
    pub async fn commit(
        &mut self,
        producer: &Arc<ThreadedProducer<AckContext>>,
        end: Lsn,
    ) -> Result<(), KafkaError> {
        let committing = producer.clone();
        let result = tokio::task::spawn_blocking(move || {
            committing.commit_transaction(Duration::from_secs(60))
        })
        .await
        .map_err(|e| KafkaError::Delivery(format!("committing a Kafka transaction: {e}")))?;
        self.kafka_transaction_open = false;
        self.pending_end = None;
        match result {
            Ok(()) => {
                self.acknowledged = self.acknowledged.max(end);
                Ok(())
            }
            Err(error) => {
                let _ = producer.abort_transaction(Duration::from_secs(30));
                self.resume = self.acknowledged;
                let abortable = matches!(
                    &error,
                    rdkafka::error::KafkaError::Transaction(e) if e.txn_requires_abort()
                );
                if abortable {
                    // Not fatal: the producer goes on with a new transaction, and the
                    // source sends the aborted one again from its confirmed position.
                    return Err(KafkaError::DeliveryInterrupted(format!(
                        "the Kafka transaction was aborted ({error}); nothing in it was confirmed, and it is sent again"
                    )));
                }
                if let Some(fatal) = fatal_error(producer, &self.connector) {
                    return Err(fatal);
                }
                Err(KafkaError::Client {
                    context: "committing a Kafka transaction (it was aborted; nothing in it was confirmed)".into(),
                    source: error,
                })
            }
        }
    }

    /// Aborts the open Kafka transaction (a source transaction was interrupted).
    pub fn abort(&mut self, producer: &ThreadedProducer<AckContext>) {
        if self.kafka_transaction_open {
            if let Err(error) = producer.abort_transaction(Duration::from_secs(30)) {
                tracing::warn!(%error, "aborting the Kafka transaction failed; the next start fences it");
            }
        }
        self.kafka_transaction_open = false;
        self.source_transaction_open = false;
        self.pending_end = None;
        // What PostgreSQL sends again from its confirmed position is skipped up to the end
        // of the last committed Kafka transaction, as after a restart.
        self.resume = self.acknowledged;
    }

    /// Whether a source transaction is half written.
    pub fn source_transaction_open(&self) -> bool {
        self.source_transaction_open
    }
}

/// Reads the last committed position of `connector` from the offsets topic (zero if none).
fn read_position(config: &KafkaConfig, topic: &str, connector: &str) -> Result<Lsn, KafkaError> {
    let wanted_key = serde_json::json!({ "connector": connector });
    let mut position = Lsn::ZERO;
    read_records(config, topic, connector, |key, value| {
        if key == &wanted_key {
            let value: Option<serde_json::Value> =
                value.and_then(|v| serde_json::from_slice(v).ok());
            if let Some(end) = value.and_then(|v| v["end_lsn"].as_u64()) {
                position = position.max(Lsn(end));
            }
        }
    })?;
    Ok(position)
}

/// The value of the last committed record with `key` in the offsets topic, if any.
pub fn read_latest(
    config: &KafkaConfig,
    topic: &str,
    connector: &str,
    key: &serde_json::Value,
) -> Result<Option<Vec<u8>>, KafkaError> {
    let mut latest = None;
    read_records(config, topic, connector, |found, value| {
        if found == key {
            latest = value.map(<[u8]>::to_vec);
        }
    })?;
    Ok(latest)
}

/// Reads the offsets topic from the beginning to its end (committed records only), handing
/// each record with a JSON key to `each`.
fn read_records(
    config: &KafkaConfig,
    topic: &str,
    connector: &str,
    mut each: impl FnMut(&serde_json::Value, Option<&[u8]>),
) -> Result<(), KafkaError> {
    let mut client = super::connection_config(config);
    client
        .set("group.id", format!("tidemark-offsets-{connector}"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client
        .create()
        .map_err(client_error("creating the offsets reader"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(client_error("reading the offsets topic's metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(client_error("assigning the offsets topic"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(client_error("assigning the offsets topic"))?;
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(KafkaError::Delivery(format!(
                "could not read {topic} to its end within 60 s; the stored position is unknown, so nothing is skipped safely"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(message)) => {
                let key: Option<serde_json::Value> =
                    message.key().and_then(|k| serde_json::from_slice(k).ok());
                if let Some(key) = key {
                    each(&key, message.payload());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error))
                if error.rdkafka_error_code()
                    == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                return Ok(());
            }
            Some(Err(error)) => return Err(client_error("reading the offsets topic")(error)),
        }
    }
    Ok(())
}
