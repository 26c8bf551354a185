//! Exactly-once delivery with a transactional producer.
//!
//! Whole source transactions are batched into one Kafka transaction together with a record on
//! the compacted `__tidemark-offsets.<prefix>` topic (key: the connector; value: the end
//! position of the last source transaction in the batch). A Kafka transaction is committed only at a source
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
//!
//! The transaction coordinator aborts a Kafka transaction open longer than
//! `transaction.timeout.ms` (tidemark's default is 900 s, the brokers' default
//! `transaction.max.timeout.ms`): a broker outage that lasts that long, or a source
//! transaction too large to deliver in that time. Its abort bumps the producer's epoch, so
//! librdkafka (2.12) reports the producer as fenced, a fatal state, or, when it learns of
//! the abort another way, refuses sends with `State` until the transaction is aborted. A
//! second tidemark with the same `transactional.id` is reported as fenced too; the two are
//! told apart by how long the Kafka transaction had been open. A timed-out transaction is a
//! clean retry: the reader's abort aborts it, or the output makes a new producer
//! (`init_transactions`) when the old one is fatal or its abort failed, and the source
//! sends again everything after the last committed Kafka transaction. A second time-out with nothing committed in between
//! is definite ([`KafkaError::TransactionTimedOut`]): the same source transaction would time
//! out for ever.
//!
//! librdkafka also makes a producer fatal on its own idempotence checks: when a partition's
//! leader fails over while a Kafka transaction is aborted, a produce request retried from
//! before the abort can carry a sequence number the new leader calls out of order
//! (`OutOfOrderSequenceNumber`). Nothing else holds the `transactional.id`, so a new
//! producer takes over exactly as after a time-out; only fencing by another instance, or
//! the same fatal error [`FATAL_RETRIES`] times with nothing committed in between, stops
//! the connector.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;
use super::producer::AckContext;
use crate::config::KafkaConfig;
use crate::domain::lsn::Lsn;

/// The state of exactly-once delivery.
#[derive(Debug)]
pub(crate) struct ExactlyOnce {
    offsets_topic: String,
    connector: String,
    kafka_transaction_open: bool,
    source_transaction_open: bool,
    pending_end: Option<Lsn>,
    acknowledged: Lsn,
    resume: Lsn,
    /// When the open Kafka transaction began.
    began: Option<Instant>,
    /// The producer's `transaction.timeout.ms`.
    timeout: Duration,
    /// The acknowledged position when the coordinator last timed a transaction out.
    timed_out_at: Option<Lsn>,
    /// Producers lost to a fatal error other than fencing since the acknowledged position
    /// last moved, with that position.
    fatal_without_progress: (Lsn, u32),
}

/// Producers lost in a row to a fatal error other than fencing (say librdkafka's
/// out-of-order sequence check after a partition leader failed over), with nothing
/// committed in between, before the error is taken as definite.
const FATAL_RETRIES: u32 = 3;

/// tidemark's `transaction.timeout.ms` unless `kafka.properties` sets one: the brokers'
/// default `transaction.max.timeout.ms`, so that a large source transaction has time.
pub(crate) const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 900_000;

/// The transactional producer's `retry.backoff.ms` unless `kafka.properties` sets one: what
/// the Java producer waits before retrying a `CONCURRENT_TRANSACTIONS` refusal (librdkafka's
/// default, 100 ms, would stall every Kafka transaction begun right after a commit).
pub(crate) const RETRY_BACKOFF_MS: u64 = 20;

/// The `transaction.timeout.ms` a config gives the producer.
pub(crate) fn transaction_timeout(config: &KafkaConfig) -> Duration {
    let ms = config
        .properties
        .get("transaction.timeout.ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT_MS);
    Duration::from_millis(ms)
}

/// The `transactional.id` of a connector's producer.
pub(crate) fn transactional_id(connector: &str) -> String {
    format!("tidemark-{connector}")
}

/// Whether a fatal error says another producer with the same `transactional.id` (or the
/// coordinator, on a time-out) took over.
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// The producer's fatal error, if it has one, named with what to do. A fenced producer (a
/// second instance with the same `transactional.id` called `init_transactions`) reports
/// `Fenced`, `ProducerFenced` or `InvalidProducerEpoch`.
pub(crate) fn fatal_error(
    producer: &ThreadedProducer<AckContext>,
    connector: &str,
) -> Option<KafkaError> {
    let (code, reason) = producer.client().fatal_error()?;
    let fenced = is_fencing(code);
    Some(KafkaError::ProducerFatal {
        transactional_id: transactional_id(connector),
        code,
        reason,
        remedy: if fenced {
            "another tidemark with the same connector name started and took over the transactional id; run one instance per connector (the other one goes on from what Kafka committed). If no other instance runs, the transaction coordinator aborted a transaction (transaction.timeout.ms): start tidemark again"
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
    /// Initializes transactions (fencing any previous instance) and reads the stored
    /// position from the first of `offsets_topics` that holds one; records go to the first.
    pub async fn start(
        producer: &Arc<ThreadedProducer<AckContext>>,
        config: &KafkaConfig,
        offsets_topics: [String; 2],
        connector: &str,
    ) -> Result<Self, KafkaError> {
        init_transactions(producer).await?;
        let timeout = transaction_timeout(config);
        let offsets_topic = offsets_topics[0].clone();
        let (config, name) = (config.clone(), connector.to_owned());
        let resume =
            tokio::task::spawn_blocking(move || read_position(&config, &offsets_topics, &name))
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
            began: None,
            timeout,
            timed_out_at: None,
            fatal_without_progress: (resume, 0),
        })
    }

    /// Goes on with a new producer after the coordinator timed a transaction out: fences
    /// the old one and starts from the last committed Kafka transaction.
    pub async fn restart(
        &mut self,
        producer: &Arc<ThreadedProducer<AckContext>>,
    ) -> Result<(), KafkaError> {
        init_transactions(producer).await?;
        self.kafka_transaction_open = false;
        self.source_transaction_open = false;
        self.pending_end = None;
        self.began = None;
        self.resume = self.acknowledged;
        Ok(())
    }

    /// Whether the open Kafka transaction has been open longer than
    /// `transaction.timeout.ms`: the coordinator has aborted it, or is about to.
    fn timed_out(&self) -> bool {
        self.began
            .is_some_and(|began| began.elapsed() >= self.timeout)
    }

    /// The error for a Kafka transaction the coordinator timed out: transient the first
    /// time (the source sends it again), definite when the last time-out came with nothing
    /// committed since.
    fn time_out_error(&self, detail: &str) -> KafkaError {
        if self.timed_out_at == Some(self.acknowledged) {
            return KafkaError::TransactionTimedOut {
                timeout_ms: self.timeout.as_millis() as u64,
                position: self.acknowledged,
            };
        }
        KafkaError::DeliveryInterrupted(format!(
            "the transaction coordinator aborted the Kafka transaction, open longer than transaction.timeout.ms ({} ms): {detail}; it is sent again",
            self.timeout.as_millis()
        ))
    }

    /// The producer's fatal error, if it has one, as the error to stop or retry with: a
    /// fenced producer whose Kafka transaction had been open longer than
    /// `transaction.timeout.ms` was timed out by the coordinator (see the module docs); a
    /// fenced one otherwise lost to another instance, which is definite. Any other fatal
    /// error (librdkafka's idempotence checks after a partition leader failed over:
    /// `OutOfOrderSequenceNumber`, `UnknownProducerId`) is the producer's alone: a new one
    /// (`init_transactions`, which aborts the open Kafka transaction) goes on from the last
    /// committed Kafka transaction, and the source sends the rest again; definite only
    /// after [`FATAL_RETRIES`] producers were lost with nothing committed in between.
    pub(crate) fn fatal(&self, producer: &ThreadedProducer<AckContext>) -> Option<KafkaError> {
        let error = fatal_error(producer, &self.connector)?;
        match &error {
            KafkaError::ProducerFatal { code, reason, .. } if is_fencing(*code) => self
                .timed_out()
                .then(|| self.time_out_error(reason))
                .or(Some(error)),
            KafkaError::ProducerFatal { code, reason, .. }
                if self.fatal_without_progress.0 != self.acknowledged
                    || self.fatal_without_progress.1 < FATAL_RETRIES =>
            {
                Some(KafkaError::DeliveryInterrupted(format!(
                    "the exactly-once producer met a fatal error: {reason} ({code:?}); a new producer aborts the open Kafka transaction"
                )))
            }
            _ => Some(error),
        }
    }

    /// A request refused because the Kafka transaction must be aborted (librdkafka's
    /// abortable state, `State` on a send): the coordinator timed it out, or a broker
    /// refused one of its requests. The source sends it again after the abort.
    pub(crate) fn abortable(&self, detail: &str) -> KafkaError {
        if self.timed_out() {
            self.time_out_error(detail)
        } else {
            KafkaError::DeliveryInterrupted(format!(
                "the Kafka transaction must be aborted: {detail}; it is sent again"
            ))
        }
    }

    /// The offsets topic.
    pub(crate) fn offsets_topic(&self) -> &str {
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
    pub(crate) fn before_record(
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
            self.fatal(producer)
                .unwrap_or_else(|| client_error("beginning a Kafka transaction")(error))
        })?;
        self.kafka_transaction_open = true;
        self.began = Some(Instant::now());
        Ok(true)
    }

    /// Called before producing a record that belongs to no source transaction (snapshot
    /// progress): it joins the open Kafka transaction, or opens one that commits at the
    /// position already acknowledged.
    pub(crate) fn before_side_record(
        &mut self,
        producer: &ThreadedProducer<AckContext>,
    ) -> Result<(), KafkaError> {
        if self.begin_if_closed(producer)? {
            self.pending_end.get_or_insert(self.acknowledged);
        }
        Ok(())
    }

    /// A source transaction ended at `end`.
    pub(crate) fn source_committed(&mut self, end: Lsn) {
        self.source_transaction_open = false;
        if self.kafka_transaction_open {
            self.pending_end = Some(end);
        } else {
            // Nothing was produced for it (e.g. a skipped table): nothing to commit.
            self.acknowledged = self.acknowledged.max(end);
        }
    }

    /// The position to store and commit now, if the Kafka transaction may be committed.
    pub(crate) fn ready_to_commit(&self) -> Option<Lsn> {
        if self.kafka_transaction_open && !self.source_transaction_open {
            self.pending_end
        } else {
            None
        }
    }

    /// The offsets record for `end`: key and value.
    pub(crate) fn offsets_record(&self, end: Lsn) -> Result<(Vec<u8>, Vec<u8>), KafkaError> {
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
        match result {
            Ok(()) => {
                self.kafka_transaction_open = false;
                self.pending_end = None;
                self.began = None;
                self.acknowledged = self.acknowledged.max(end);
                Ok(())
            }
            // The transaction stays open here: the reader aborts it ([`Self::abort`]) on
            // any error, and the source sends it again from its confirmed position.
            Err(error) => {
                if let Some(fatal) = self.fatal(producer) {
                    return Err(fatal);
                }
                let abortable = matches!(
                    &error,
                    rdkafka::error::KafkaError::Transaction(e) if e.txn_requires_abort()
                );
                if abortable {
                    return Err(self.abortable(&format!("committing: {error}")));
                }
                Err(KafkaError::Client {
                    context: "committing a Kafka transaction (nothing in it was confirmed; it is aborted)".into(),
                    source: error,
                })
            }
        }
    }

    /// Aborts the open Kafka transaction (a source transaction was interrupted). True when
    /// the producer must be replaced before the next record: it is in a fatal state, or
    /// its abort failed.
    pub fn abort(&mut self, producer: &ThreadedProducer<AckContext>) -> bool {
        if self.timed_out() {
            self.timed_out_at = Some(self.acknowledged);
        }
        let fatal = producer.client().fatal_error();
        if let Some((code, _)) = &fatal
            && !is_fencing(*code)
        {
            let (at, lost) = self.fatal_without_progress;
            let lost = if at == self.acknowledged { lost + 1 } else { 1 };
            self.fatal_without_progress = (self.acknowledged, lost);
        }
        let mut replace = fatal.is_some();
        if !replace && self.kafka_transaction_open {
            if let Err(error) = producer.abort_transaction(Duration::from_secs(30)) {
                tracing::warn!(%error, "aborting the Kafka transaction failed; a new producer fences it");
                replace = true;
            }
        }
        self.kafka_transaction_open = false;
        self.source_transaction_open = false;
        self.pending_end = None;
        self.began = None;
        // What PostgreSQL sends again from its confirmed position is skipped up to the end
        // of the last committed Kafka transaction, as after a restart.
        self.resume = self.acknowledged;
        replace
    }

    /// Whether a source transaction is half written.
    pub(crate) fn source_transaction_open(&self) -> bool {
        self.source_transaction_open
    }
}

/// `init_transactions`: fences any earlier producer with the same `transactional.id` and
/// aborts what it left open.
async fn init_transactions(producer: &Arc<ThreadedProducer<AckContext>>) -> Result<(), KafkaError> {
    let init = producer.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
        .await
        .map_err(|e| KafkaError::Delivery(format!("initializing transactions: {e}")))?
        .map_err(|source| {
            let context = if source.rdkafka_error_code()
                == Some(RDKafkaErrorCode::InvalidTransactionTimeout)
            {
                "initializing transactions: the brokers' transaction.max.timeout.ms is below the producer's transaction.timeout.ms; lower kafka.properties \"transaction.timeout.ms\" or raise the brokers' limit"
            } else {
                "initializing transactions (does the broker support them?)"
            };
            KafkaError::Client {
                context: context.into(),
                source,
            }
        })
}

/// Reads the last committed position of `connector` from the first of `topics` (the
/// offsets topic, then its name in older releases) that holds one; zero if none does.
fn read_position(
    config: &KafkaConfig,
    topics: &[String],
    connector: &str,
) -> Result<Lsn, KafkaError> {
    let wanted_key = serde_json::json!({ "connector": connector });
    for topic in topics {
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
        if position != Lsn::ZERO {
            return Ok(position);
        }
    }
    Ok(Lsn::ZERO)
}

/// The value of the last committed record with `key` in the first of `topics` (the
/// offsets topic, then its name in older releases) that holds one, with that topic.
pub(crate) fn read_latest(
    config: &KafkaConfig,
    topics: &[String],
    connector: &str,
    key: &serde_json::Value,
) -> Result<Option<(String, Vec<u8>)>, KafkaError> {
    for topic in topics {
        let mut latest = None;
        read_records(config, topic, connector, |found, value| {
            if found == key {
                latest = value.map(<[u8]>::to_vec);
            }
        })?;
        if let Some(value) = latest {
            return Ok(Some((topic.clone(), value)));
        }
    }
    Ok(None)
}

/// Reads the offsets topic from the beginning to its end (committed records only), handing
/// each record with a JSON key to `each`.
fn read_records(
    config: &KafkaConfig,
    topic: &str,
    connector: &str,
    mut each: impl FnMut(&serde_json::Value, Option<&[u8]>),
) -> Result<(), KafkaError> {
    let mut client = config.connection_config();
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
