//! The Kafka output: an idempotent producer (`acks=all`) whose delivery reports drive the
//! acknowledged position.
//!
//! - Format: Avro in Confluent framing by default (see [`super::avro_encoder`]; schema
//!   changes are written to `__tidemark-schema-changes.<prefix>` before the first row of the new
//!   shape, and captured DDL at its own place); or JSON: key `{"id":1}`, value the Debezium
//!   envelope, with `kafka.json_schemas` each wrapped as `{"schema":…,"payload":…}` (see
//!   [`crate::schema::connect_schema`]). A delete is followed by a tombstone (same key, null value)
//!   unless disabled.
//! - Partitioning: librdkafka's `murmur2_random`, the Java client's algorithm (see
//!   [`super::murmur2`]), so every event of a key lands on one partition, in commit order
//!   (the idempotent producer keeps order per partition across retries). A record without
//!   a key (a truncate; a table under `REPLICA IDENTITY FULL` without a primary key) goes
//!   to partition 0, so a keyless table's changes keep their order too; a delete without
//!   a key gets no tombstone (a null-key tombstone deletes nothing, and a compacted topic
//!   refuses it).
//! - Headers: `tidemark.commit_lsn`, `tidemark.seq`, `tidemark.xid` (decimal text).
//! - Backpressure: at most `kafka.max_in_flight` records are unacknowledged; beyond that,
//!   and when librdkafka's queue is full, `send` waits, so reading from PostgreSQL pauses
//!   and memory stays bounded. `message.timeout.ms` is 0 (never give up), so a broker outage
//!   of any length only pauses the connector; a definite failure (a record too large, no
//!   authorization) stops it with nothing after the failed record confirmed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use super::KafkaError;
use super::ack::{AckTracker, DeliveryFailure};
use super::avro_encoder::AvroEncoder;
use super::delivered::DeliveredOffsets;
use super::encode::{JsonEncoder, RecordEncoder};
use super::exactly_once::ExactlyOnce;
use super::producer::{AckContext, producer_config};
use super::topics::{TopicCreator, TopicKind, TopicRouter};
use crate::config::{Delivery, IncompatiblePolicy, KafkaConfig, RecordFormat};
use crate::domain::event::{ChangeEvent, EnvelopeContext, Op, SourceJson, TableSchema, now_ms};
use crate::domain::lsn::Lsn;
use crate::observe::names;
use crate::output::{EventOutput, OffsetStore, OutputError, parallel};
use crate::schema::avro::AvroError;
use crate::schema::change::{
    CapturedDdl, DDL_MESSAGE_PREFIX, SchemaChangeRecord, ShapeInUse, columns_of_table,
};
use crate::schema::fixed::FixedSchema;
use crate::schema::registry_client::RegistryClient;
use crate::schema::registry_http::EmbeddedRegistry;
use crate::schema::tracker::SchemaTracker;

/// How records are encoded.
enum Format {
    /// Debezium's JSON shapes.
    Json(Box<JsonEncoder>),
    /// Avro with a registry.
    Avro(Box<AvroEncoder>),
}

/// The delivery guarantee in force, with what exactly once needs: the behaviour that
/// differs by mode is asked of this, not tested for at each use.
enum Mode {
    /// The idempotent producer's acknowledgements make the acknowledged position.
    AtLeastOnce,
    /// Kafka transactions carry the records and the source position together.
    ExactlyOnce(ExactlyOnce),
}

impl Mode {
    fn exactly_once(&self) -> Option<&ExactlyOnce> {
        match self {
            Mode::ExactlyOnce(eos) => Some(eos),
            Mode::AtLeastOnce => None,
        }
    }

    fn exactly_once_mut(&mut self) -> Option<&mut ExactlyOnce> {
        match self {
            Mode::ExactlyOnce(eos) => Some(eos),
            Mode::AtLeastOnce => None,
        }
    }

    /// Before a record is produced: exactly once, the Kafka transaction it goes in is open.
    fn before_record(&mut self, producer: &ThreadedProducer<AckContext>) -> Result<(), KafkaError> {
        match self {
            Mode::ExactlyOnce(eos) => eos.before_record(producer),
            Mode::AtLeastOnce => Ok(()),
        }
    }

    /// A source transaction ending at `end` has all its records produced.
    fn source_committed(&mut self, end: Lsn) {
        if let Mode::ExactlyOnce(eos) = self {
            eos.source_committed(end);
        }
    }
}

/// A relation's current description: where its events go and their schema ids.
struct Description {
    table: Arc<TableSchema>,
    topic: Arc<str>,
    key_id: Option<u32>,
    value_id: Option<u32>,
}

/// Source transaction being written, for transaction metadata.
struct OpenTransaction {
    xid: u32,
    commit_lsn: Lsn,
    /// The LSN of its id ([`EnvelopeContext::transaction_id_lsn`]).
    id_lsn: Lsn,
    /// Events per relation (names are built only for the END record).
    counts: HashMap<u32, (Arc<TableSchema>, u64)>,
    total: u64,
}

impl OpenTransaction {
    /// The transaction id, `xid:<lsn>`.
    fn id(&self) -> String {
        format!("{}:{}", self.xid, self.id_lsn.as_u64())
    }
}

/// Events into Kafka. See the module docs.
pub struct KafkaOutput {
    config: KafkaConfig,
    /// The producer's settings, for a new producer after a timed-out transaction.
    client: ClientConfig,
    producer: Arc<ThreadedProducer<AckContext>>,
    /// Exactly once: the producer is fatal (its transaction timed out) and is replaced
    /// before the next record.
    replace_producer: bool,
    tracker: Arc<AckTracker>,
    offsets: Arc<DeliveredOffsets>,
    mode: Mode,
    router: TopicRouter,
    topics: TopicCreator,
    context: EnvelopeContext,
    /// Debezium's context headers, when `events.extended_headers` is on.
    context_headers: Option<ContextHeaders>,
    tombstones: bool,
    transaction_metadata: bool,
    max_in_flight: usize,
    open: Option<OpenTransaction>,
    key: Vec<u8>,
    value: Vec<u8>,
    format: Format,
    /// Each relation's description, valid while it is the same `Arc` (a Relation message
    /// gives a new one): the per-event lookup of topic and schema ids.
    descriptions: HashMap<u32, Description>,
    /// Schema-change tracking: shapes in use, captured DDL (pure, see `schema::tracker`).
    schema: SchemaTracker,
}

impl KafkaOutput {
    /// Connects to the brokers (failing early when they cannot be reached), for
    /// `format = "json"`; Avro needs a registry: see [`KafkaOutput::from_config`].
    pub async fn connect(
        config: &KafkaConfig,
        context: EnvelopeContext,
    ) -> Result<Self, KafkaError> {
        Self::connect_with(config, context, None).await
    }

    /// [`KafkaOutput::connect`], with the registry that Avro needs.
    async fn connect_with(
        config: &KafkaConfig,
        context: EnvelopeContext,
        registry: Option<(RegistryClient, IncompatiblePolicy)>,
    ) -> Result<Self, KafkaError> {
        let format = match (config.format, registry) {
            (RecordFormat::Json, _) => Format::Json(Box::new(JsonEncoder::new(
                context.clone(),
                config.json_schemas,
            ))),
            (RecordFormat::Avro, Some((client, policy))) => {
                Format::Avro(Box::new(AvroEncoder::new(client, policy, context.clone())))
            }
            (RecordFormat::Avro, None) => return Err(KafkaError::NoRegistry),
        };
        let tracker = Arc::new(AckTracker::default());
        let offsets = Arc::new(DeliveredOffsets::default());
        let exactly_once = config.delivery == Delivery::ExactlyOnce;
        let client = producer_config(config, &context.connector_name);
        let producer: ThreadedProducer<AckContext> = client
            .create_with_context(AckContext::new(tracker.clone(), offsets.clone()))
            .map_err(|source| KafkaError::Client {
                context: "creating the producer".into(),
                source,
            })?;
        let producer = Arc::new(producer);
        let probe = producer.clone();
        let brokers = config.brokers.clone();
        tokio::task::spawn_blocking(move || {
            probe.client().fetch_metadata(None, Duration::from_secs(10))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|probed| probed.map_err(|e| e.to_string()))
        .map_err(|detail| KafkaError::Unreachable {
            brokers: brokers.clone(),
            detail,
        })?;
        let admin: AdminClient<DefaultClientContext> = config
            .connection_config()
            .create()
            .map_err(|source| KafkaError::Client {
                context: "creating the admin client".into(),
                source,
            })?;
        let router = TopicRouter::new(config, &context.prefix);
        let mut topics = TopicCreator::new(admin, config);
        let mode = if exactly_once {
            let offsets_topic = router.offsets_topic();
            topics.ensure(&offsets_topic, TopicKind::Compacted).await?;
            let eos = ExactlyOnce::start(
                &producer,
                config,
                router.offsets_topics_to_read(),
                &context.connector_name,
            )
            .await?;
            tracing::info!(resume = %eos.resume(), topic = eos.offsets_topic(), "exactly-once delivery: position read back from Kafka");
            Mode::ExactlyOnce(eos)
        } else {
            Mode::AtLeastOnce
        };
        Ok(KafkaOutput {
            config: config.clone(),
            client,
            producer,
            replace_producer: false,
            tracker,
            offsets,
            mode,
            router,
            topics,
            context_headers: context
                .extended_headers
                .then(|| ContextHeaders::new(&context)),
            context,
            tombstones: config.tombstones,
            transaction_metadata: config.transaction_metadata,
            max_in_flight: config.max_in_flight,
            open: None,
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(4096),
            format,
            descriptions: HashMap::new(),
            schema: SchemaTracker::default(),
        })
    }

    /// The output a config asks for: `[kafka]` with, for Avro, the `[registry]` url or an
    /// embedded registry started here (returned: it serves while it lives).
    pub async fn from_config(
        config: &crate::config::Config,
        context: EnvelopeContext,
    ) -> Result<(Self, Option<EmbeddedRegistry>), OutputError> {
        let kafka = config.kafka.as_ref().ok_or_else(|| {
            OutputError::Setup("the Kafka output needs a [kafka] section with brokers".into())
        })?;
        if kafka.format == RecordFormat::Json {
            return Ok((KafkaOutput::connect(kafka, context).await?, None));
        }
        let registry = config.registry.clone().unwrap_or_default();
        let (url, embedded) = match &registry.url {
            Some(url) => (url.clone(), None),
            None => {
                let embedded = EmbeddedRegistry::start(kafka, &registry)
                    .await
                    .map_err(|e| OutputError::Setup(e.to_string()))?;
                (embedded.url(), Some(embedded))
            }
        };
        let client = RegistryClient::new(&url, &registry).map_err(KafkaError::from)?;
        let output =
            KafkaOutput::connect_with(kafka, context, Some((client, registry.on_incompatible)))
                .await?;
        Ok((output, embedded))
    }

    /// The last offset the brokers acknowledged per partition, kept up to date by the
    /// delivery reports (see [`DeliveredOffsets`]).
    pub fn delivered_offsets(&self) -> Arc<DeliveredOffsets> {
        self.offsets.clone()
    }
}

impl KafkaOutput {
    async fn send_event(&mut self, event: &ChangeEvent) -> Result<(), KafkaError> {
        self.replace_producer_if_fatal().await?;
        self.failure()?;
        if event
            .message
            .as_ref()
            .is_some_and(|m| m.prefix == DDL_MESSAGE_PREFIX)
        {
            return self.captured_ddl(event).await;
        }
        // A table's topic is created when its description is first seen (`describe`).
        let (topic, key_id, value_id) = match &event.table {
            Some(table) => self.describe(event, table).await?,
            None => {
                let topic = self.router.topic(event);
                self.topics.ensure(&topic, TopicKind::Plain).await?;
                (topic, None, None)
            }
        };
        self.mode.before_record(&self.producer)?;
        if self.transaction_metadata && event.in_streamed_transaction() {
            let (xid, commit_lsn) = (event.source.xid, event.source.commit_lsn);
            if self
                .open
                .as_ref()
                .is_none_or(|o| (o.xid, o.commit_lsn) != (xid, commit_lsn))
            {
                let open = OpenTransaction {
                    xid,
                    commit_lsn,
                    id_lsn: self.context.transaction_id_lsn(&event.source),
                    counts: HashMap::new(),
                    total: 0,
                };
                self.transaction_record("BEGIN", &open).await?;
                self.open = Some(open);
            }
            if let (Some(open), Some(table)) = (self.open.as_mut(), &event.table) {
                open.counts
                    .entry(table.relation_id)
                    .or_insert_with(|| (table.clone(), 0))
                    .1 += 1;
                open.total += 1;
            }
        }
        let has_key = match (&mut self.format, value_id) {
            (Format::Json(encoder), _) => encoder.encode(event, &mut self.key, &mut self.value)?,
            (Format::Avro(encoder), Some(value_id)) => encoder.encode_table(
                event,
                (key_id, value_id),
                now_ms(),
                &mut self.key,
                &mut self.value,
            )?,
            (Format::Avro(encoder), None) if encoder.connect_messages() => {
                encoder
                    .encode_message(&topic, event, now_ms(), &mut self.key, &mut self.value)
                    .await?
            }
            (Format::Avro(_), None) => {
                let value = message_json(event, &self.context);
                self.encode_fixed(&topic, None, FixedSchema::Message, value)
                    .await?
            }
        };
        let key = has_key.then_some(self.key.as_slice());
        self.produce(
            &topic,
            key,
            Some(&self.value),
            Some(self.event_headers(event)?),
        )
        .await?;
        if event.op == Op::Delete && self.tombstones && has_key {
            let headers = self.event_headers(event)?;
            self.produce(&topic, key, None, Some(headers)).await?;
        }
        Ok(())
    }

    /// Rows in a batch (the snapshot's): described one by one (a lookup once a description
    /// is known), encoded on several threads ([`parallel::encode_batch`]), produced in the
    /// batch's order. Batches with anything else in them (messages, captured DDL, rows whose
    /// transaction metadata is written) go one by one.
    async fn send_rows(&mut self, events: &[ChangeEvent]) -> Result<(), KafkaError> {
        let rows_only = events.iter().all(|e| {
            e.table.is_some()
                && e.message.is_none()
                && !(self.transaction_metadata && e.source.xid != 0)
        });
        if !rows_only || events.len() < 2 * parallel::MIN_PART {
            for event in events {
                self.send_event(event).await?;
            }
            return Ok(());
        }
        self.replace_producer_if_fatal().await?;
        self.failure()?;
        let mut targets = Vec::with_capacity(events.len());
        for event in events {
            if let Some(table) = &event.table {
                targets.push(self.describe(event, table).await?);
            }
        }
        self.mode.before_record(&self.producer)?;
        let batch = match &mut self.format {
            Format::Json(encoder) => {
                for event in events {
                    if let Some(table) = &event.table {
                        encoder.prepare(table);
                    }
                }
                parallel::encode_batch(events, &*encoder, |encoder, event, key, value| {
                    encoder.encode(event, key, value)
                })?
            }
            Format::Avro(encoder) => {
                let now = now_ms();
                let items: Vec<(&ChangeEvent, Option<u32>, Option<u32>)> = events
                    .iter()
                    .zip(&targets)
                    .map(|(event, (_, key_id, value_id))| (event, *key_id, *value_id))
                    .collect();
                parallel::encode_batch(
                    &items,
                    &encoder.table_writer(),
                    |writer, (event, key_id, value_id), key, value| {
                        let value_id = value_id.ok_or_else(|| {
                            AvroError::Encode(
                                "a table event without its registered value schema".into(),
                            )
                        })?;
                        writer.encode(event, (*key_id, value_id), now, key, value)
                    },
                )?
            }
        };
        for ((event, (topic, _, _)), (key, value)) in
            events.iter().zip(&targets).zip(batch.records())
        {
            let headers = self.event_headers(event)?;
            self.produce(topic, key, Some(value), Some(headers)).await?;
            if event.op == Op::Delete && self.tombstones && key.is_some() {
                let headers = self.event_headers(event)?;
                self.produce(topic, key, None, Some(headers)).await?;
            }
        }
        Ok(())
    }
}

impl KafkaOutput {
    /// The headers of a streamed event's record (and its tombstone): the position, the
    /// other key of a primary-key change (`__debezium.newkey`/`__debezium.oldkey`), and
    /// the context headers, which Debezium writes on every change but logical messages.
    fn event_headers(&self, event: &ChangeEvent) -> Result<OwnedHeaders, KafkaError> {
        let mut headers = position_headers(event);
        if let (Some(change), Some(table)) = (&event.key_change, &event.table) {
            let value = key_change_header(table, change.key(), &self.context)?;
            headers = headers.insert(Header {
                key: change.header(),
                value: Some(&value),
            });
        }
        Ok(match &self.context_headers {
            Some(context) if event.message.is_none() => context.append(headers),
            _ => headers,
        })
    }
}

/// The value of a key-change header: the other key as Kafka Connect's default header
/// converter (`SimpleHeaderConverter`, a worker's `header.converter` unless set) writes the
/// struct Debezium puts there, compact JSON of the key's fields without a schema, whatever
/// the record format: a Debezium consumer in a Connect worker reads it back with that
/// converter (`{"schema":…,"payload":…}` there is parsed as a map and fails Debezium's JDBC
/// sink).
fn key_change_header(
    table: &TableSchema,
    key: &[crate::domain::value::Value],
    context: &EnvelopeContext,
) -> Result<Vec<u8>, KafkaError> {
    let columns = table
        .record_key_columns()
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .zip(key)
        .collect();
    Ok(serde_json::to_vec(
        &crate::domain::event::KeyJson::Columns {
            columns,
            mode: context.wire_mode(),
        },
    )?)
}

/// The source position of `event` as record headers (`tidemark.commit_lsn`, `tidemark.seq`,
/// `tidemark.xid`), its numbers formatted on the stack.
fn position_headers(event: &ChangeEvent) -> OwnedHeaders {
    let (mut commit_lsn, mut seq, mut xid) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    OwnedHeaders::new_with_capacity(8)
        .insert(Header {
            key: "tidemark.commit_lsn",
            value: Some(
                commit_lsn
                    .format(event.source.commit_lsn.as_u64())
                    .as_bytes(),
            ),
        })
        .insert(Header {
            key: "tidemark.seq",
            value: Some(seq.format(event.source.seq).as_bytes()),
        })
        .insert(Header {
            key: "tidemark.xid",
            value: Some(xid.format(event.source.xid).as_bytes()),
        })
}

/// Debezium 3's context headers (`extended.headers.enabled`), as Kafka Connect's default
/// header converter writes strings: UTF-8 bytes. Debezium's `connectorName` is the connector
/// type (`postgresql`), not the configured name; the run id is new for each output.
struct ContextHeaders {
    logical_name: String,
    run_id: String,
}

impl ContextHeaders {
    fn new(context: &EnvelopeContext) -> Self {
        ContextHeaders {
            logical_name: context.prefix.clone(),
            run_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn append(&self, headers: OwnedHeaders) -> OwnedHeaders {
        headers
            .insert(Header {
                key: "__debezium.context.connectorLogicalName",
                value: Some(self.logical_name.as_bytes()),
            })
            .insert(Header {
                key: "__debezium.context.taskId",
                value: Some("0".as_bytes()),
            })
            .insert(Header {
                key: "__debezium.context.connectorName",
                value: Some(b"postgresql"),
            })
            .insert(Header {
                key: "__debezium.context.runId",
                value: Some(self.run_id.as_bytes()),
            })
    }
}

/// The offsets-topic key of a connector's snapshot progress.
fn snapshot_progress_key(connector: &str) -> serde_json::Value {
    serde_json::json!({ "connector": connector, "snapshot": true })
}

/// A logical message event in `schemas/message.avsc`'s shape.
fn message_json(event: &ChangeEvent, context: &EnvelopeContext) -> serde_json::Value {
    let (prefix, content, transactional) = event
        .message
        .as_ref()
        .map_or((String::new(), Vec::new(), false), |m| {
            (m.prefix.clone(), m.content.to_vec(), m.transactional)
        });
    serde_json::json!({
        "op": "m",
        "ts_ms": now_ms(),
        "source": SourceJson::message(event, context),
        "message": {"prefix": prefix, "content": content, "transactional": transactional},
    })
}

mod event_output;
mod produce;
mod schema_changes;

#[cfg(test)]
mod tests;
