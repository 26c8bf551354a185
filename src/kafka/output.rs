//! The Kafka output: an idempotent producer (`acks=all`) whose delivery reports drive the
//! acknowledged position.
//!
//! - Format: Avro in Confluent framing by default (see [`super::avro_encoder`]; schema
//!   changes are written to `<prefix>.schema-changes` before the first row of the new
//!   shape, and captured DDL at its own place); or JSON: key `{"id":1}`, value the Debezium
//!   envelope, with `kafka.json_schemas` each wrapped as `{"schema":…,"payload":…}` (see
//!   [`super::connect_schema`]). A delete is followed by a tombstone (same key, null value)
//!   unless disabled.
//! - Partitioning: librdkafka's `murmur2_random`, the Java client's algorithm (see
//!   [`super::murmur2`]), so every event of a key lands on one partition, in commit order
//!   (the idempotent producer keeps order per partition across retries).
//! - Headers: `tidemark.commit_lsn`, `tidemark.seq`, `tidemark.xid` (decimal text).
//! - Backpressure: at most `kafka.max_in_flight` records are unacknowledged; beyond that,
//!   and when librdkafka's queue is full, `send` waits, so reading from PostgreSQL pauses
//!   and memory stays bounded. `message.timeout.ms` is 0 (never give up), so a broker outage
//!   of any length only pauses the connector; a definite failure (a record too large, no
//!   authorization) stops it with nothing after the failed record confirmed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use super::KafkaError;
use super::ack::{AckTracker, DeliveryFailure};
use super::avro_encoder::AvroEncoder;
use super::delivered::DeliveredOffsets;
use super::encode::{JsonEncoder, RecordEncoder};
use super::exactly_once::ExactlyOnce;
use super::topics::{TopicCreator, TopicKind, TopicRouter};
use crate::config::{Delivery, IncompatiblePolicy, KafkaConfig, RecordFormat};
use crate::domain::event::{ChangeEvent, EnvelopeContext, Op, TableSchema, now_ms};
use crate::domain::lsn::Lsn;
use crate::observe::names;
use crate::output::{EventOutput, OutputError, parallel};
use crate::schema::avro::AvroError;
use crate::schema::change::{
    CapturedDdl, Change, ColumnInfo, DDL_MESSAGE_PREFIX, SchemaChangeRecord, ShapeInUse,
    columns_of_table, diff,
};
use crate::schema::fixed::FixedSchema;
use crate::schema::registry_client::RegistryClient;
use crate::schema::registry_http::EmbeddedRegistry;

/// How records are encoded.
enum Format {
    /// Debezium's JSON shapes.
    Json(JsonEncoder),
    /// Avro with a registry.
    Avro(Box<AvroEncoder>),
}

/// A relation's current description: where its events go and their schema ids.
struct Description {
    table: Arc<TableSchema>,
    topic: Arc<str>,
    key_id: Option<u32>,
    value_id: Option<u32>,
}

/// Delivery reports into the [`AckTracker`].
pub struct AckContext {
    tracker: Arc<AckTracker>,
    offsets: Arc<DeliveredOffsets>,
    delivered: metrics::Counter,
    latency: metrics::Histogram,
    failed: metrics::Counter,
}

impl AckContext {
    fn new(tracker: Arc<AckTracker>, offsets: Arc<DeliveredOffsets>) -> Self {
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

/// Source transaction being written, for transaction metadata.
struct OpenTransaction {
    xid: u32,
    commit_lsn: Lsn,
    /// Events per relation (names are built only for the END record).
    counts: HashMap<u32, (Arc<TableSchema>, u64)>,
    total: u64,
}

impl OpenTransaction {
    /// Debezium's transaction id, `xid:commit_lsn`.
    fn id(&self) -> String {
        format!("{}:{}", self.xid, self.commit_lsn.as_u64())
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
    eos: Option<ExactlyOnce>,
    router: TopicRouter,
    topics: TopicCreator,
    context: EnvelopeContext,
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
    /// The shape in use on each topic, which a new description is compared with.
    shapes: HashMap<Arc<str>, ShapeInUse>,
    /// DDL captured for a relation, waiting for the first row of its new shape.
    pending_ddl: HashMap<u32, CapturedDdl>,
    /// Columns of each relation as the last captured DDL left them (with nullability).
    captured_columns: HashMap<u32, Vec<ColumnInfo>>,
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
pub fn producer_config(config: &KafkaConfig, connector: &str) -> ClientConfig {
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
            (RecordFormat::Json, _) => {
                Format::Json(JsonEncoder::new(context.clone(), config.json_schemas))
            }
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
        let admin: AdminClient<DefaultClientContext> =
            config
                .client_config()
                .create()
                .map_err(|source| KafkaError::Client {
                    context: "creating the admin client".into(),
                    source,
                })?;
        let router = TopicRouter::new(config, &context.prefix);
        let mut topics = TopicCreator::new(admin, config);
        let eos = if exactly_once {
            let offsets_topic = router.offsets_topic();
            topics.ensure(&offsets_topic, TopicKind::Compacted).await?;
            let eos = ExactlyOnce::start(&producer, config, offsets_topic, &context.connector_name)
                .await?;
            tracing::info!(resume = %eos.resume(), topic = eos.offsets_topic(), "exactly-once delivery: position read back from Kafka");
            Some(eos)
        } else {
            None
        };
        Ok(KafkaOutput {
            config: config.clone(),
            client,
            producer,
            replace_producer: false,
            tracker,
            offsets,
            eos,
            router,
            topics,
            context,
            tombstones: config.tombstones,
            transaction_metadata: config.transaction_metadata,
            max_in_flight: config.max_in_flight,
            open: None,
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(4096),
            format,
            descriptions: HashMap::new(),
            shapes: HashMap::new(),
            pending_ddl: HashMap::new(),
            captured_columns: HashMap::new(),
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

    /// Encodes a fixed-shape record (heartbeat, transaction metadata, message, schema
    /// change) into `self.key`/`self.value`, as JSON or with its `schemas/` Avro schema.
    async fn encode_fixed(
        &mut self,
        topic: &str,
        key: Option<(FixedSchema, serde_json::Value)>,
        value_schema: FixedSchema,
        value: serde_json::Value,
    ) -> Result<bool, KafkaError> {
        match &mut self.format {
            Format::Avro(encoder) => {
                encoder
                    .encode_fixed(
                        topic,
                        key,
                        value_schema,
                        value,
                        &mut self.key,
                        &mut self.value,
                    )
                    .await
            }
            Format::Json(_) => {
                self.key.clear();
                let has_key = match key {
                    Some((_, json)) => {
                        serde_json::to_writer(&mut self.key, &json)?;
                        true
                    }
                    None => false,
                };
                self.value.clear();
                serde_json::to_writer(&mut self.value, &value)?;
                Ok(has_key)
            }
        }
    }

    /// Encodes a keyed fixed-shape record and produces it to `topic`.
    async fn produce_fixed(
        &mut self,
        topic: &str,
        key: (FixedSchema, serde_json::Value),
        value_schema: FixedSchema,
        value: serde_json::Value,
    ) -> Result<(), KafkaError> {
        self.encode_fixed(topic, Some(key), value_schema, value)
            .await?;
        self.produce(topic, Some(&self.key), Some(&self.value), None)
            .await
    }

    /// Writes a schema-change record to `<prefix>.schema-changes`.
    async fn write_schema_change(&mut self, record: &SchemaChangeRecord) -> Result<(), KafkaError> {
        let topic = self.router.schema_change_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
        tracing::info!(table = %format!("{}.{}", record.schema, record.table), kind = record.kind, changes = record.changes.len(), "schema change");
        let key = (FixedSchema::SchemaChangeKey, record.key());
        let value = serde_json::to_value(record)?;
        self.produce_fixed(&topic, key, FixedSchema::SchemaChange, value)
            .await
    }

    /// The topic and schema ids of a table event. A new description of the relation is
    /// routed, registered (Avro) and compared with the shape in use on its topic (after a
    /// restart, with Avro, the registry's latest); a different shape is written as a
    /// `schema` record first.
    async fn describe(
        &mut self,
        event: &ChangeEvent,
        table: &Arc<TableSchema>,
    ) -> Result<(Arc<str>, Option<u32>, Option<u32>), KafkaError> {
        // The same `Arc` (every event of a Relation message), or an equal description from
        // elsewhere (a snapshot chunk, a Relation message resent after a reconnect): nothing
        // to register or compare. The `Arc` is kept so its next events take the first check.
        if let Some(known) = self.descriptions.get_mut(&table.relation_id)
            && (Arc::ptr_eq(&known.table, table) || *known.table == **table)
        {
            known.table = table.clone();
            return Ok((known.topic.clone(), known.key_id, known.value_id));
        }
        let routed = self.router.topic(event);
        let (topic, key_id, value_id, note, previous) = match &mut self.format {
            Format::Json(_) => (
                routed.clone(),
                None,
                None,
                None,
                self.shapes.get(&routed).cloned(),
            ),
            Format::Avro(encoder) => {
                let current = encoder.redirect(&routed);
                let previous = match self.shapes.get(&current) {
                    Some(shape) => Some(shape.clone()),
                    None => encoder.registered(&current).await?,
                };
                // Columns renamed by captured DDL carry their old name as an Avro alias.
                let renames = match (self.pending_ddl.get(&table.relation_id), &previous) {
                    (Some(ddl), Some(previous)) => {
                        ddl.renames(table.relation_id, &previous.columns)
                    }
                    _ => Vec::new(),
                };
                let registered = encoder.register_table(&routed, table, &renames).await?;
                (
                    registered.topic,
                    registered.key_id,
                    Some(registered.value_id),
                    registered.note,
                    previous,
                )
            }
        };
        let shape = ShapeInUse {
            columns: columns_of_table(table),
            key_id,
            value_id,
        };
        let ddl = self.pending_ddl.remove(&table.relation_id);
        if let Some(previous) = previous.filter(|p| *p != shape || note.is_some()) {
            let renames = ddl
                .map(|d| d.renames(table.relation_id, &previous.columns))
                .unwrap_or_default();
            let record = SchemaChangeRecord::schema(
                event,
                &self.context.database,
                &topic,
                &previous,
                &shape,
                &renames,
                note,
            );
            self.write_schema_change(&record).await?;
        }
        self.topics.ensure(&topic, TopicKind::Change).await?;
        if topic != routed {
            self.shapes.insert(routed, shape.clone());
        }
        self.shapes.insert(topic.clone(), shape);
        self.descriptions.insert(
            table.relation_id,
            Description {
                table: table.clone(),
                topic: topic.clone(),
                key_id,
                value_id,
            },
        );
        Ok((topic, key_id, value_id))
    }

    /// A DDL command captured by the event trigger: written at once as `ddl` records for
    /// the tables it touched, and kept so the `schema` record that follows can tell renames.
    async fn captured_ddl(&mut self, event: &ChangeEvent) -> Result<(), KafkaError> {
        let Some(message) = &event.message else {
            return Ok(());
        };
        let ddl: CapturedDdl = match serde_json::from_slice(&message.content) {
            Ok(ddl) => ddl,
            Err(error) => {
                tracing::warn!(%error, "a tidemark.ddl message that is not a captured DDL command; ignored (was it emitted by hand?)");
                return Ok(());
            }
        };
        let db = &self.context.database;
        let mut records = Vec::new();
        let mut seen = Vec::new();
        for table in &ddl.tables {
            if seen.contains(&table.relid) {
                continue;
            }
            seen.push(table.relid);
            let topic = self.router.table_topic(&table.schema, &table.table);
            let names = (table.schema.as_str(), table.table.as_str(), &*topic);
            let mut record =
                SchemaChangeRecord::ddl(event, db, names, &ddl, self.shapes.get(&topic));
            let after = table.column_infos();
            // The last capture knows nullability too; else the shape in use.
            if let Some(captured) = self.captured_columns.insert(table.relid, after.clone()) {
                record.before = Some(captured);
            }
            if let Some(before) = &record.before {
                record.changes = diff(before, &after, &ddl.renames(table.relid, before));
            }
            if ddl.tag.eq_ignore_ascii_case("CREATE TABLE") {
                record.changes.push(Change::table("create_table"));
            }
            record.after = Some(after);
            records.push(record);
            self.pending_ddl.insert(table.relid, ddl.clone());
        }
        for dropped in &ddl.dropped {
            let topic = self.router.table_topic(&dropped.schema, &dropped.table);
            let names = (dropped.schema.as_str(), dropped.table.as_str(), &*topic);
            let mut record =
                SchemaChangeRecord::ddl(event, db, names, &ddl, self.shapes.get(&topic));
            record.changes.push(Change::table("drop_table"));
            records.push(record);
        }
        for record in &records {
            self.write_schema_change(record).await?;
        }
        Ok(())
    }

    /// Waits until Kafka has acknowledged (or failed) every record in flight. A slow or
    /// overloaded broker is backpressure, not a failure: the wait goes on as long as it
    /// takes, logged every 30 s and counted in `tidemark_kafka_slow_flushes_total`. It ends
    /// early with the error of a delivery that failed; a broker that stays unreachable fails
    /// the records in flight after `message.timeout.ms` (librdkafka's default 300 s), which
    /// ends the wait with a transient error, as any outage.
    async fn wait_in_flight(&self) -> Result<(), KafkaError> {
        const STEP: Duration = Duration::from_secs(10);
        const LOG_EVERY: Duration = Duration::from_secs(30);
        let started = Instant::now();
        let mut logged: Option<Instant> = None;
        loop {
            let producer = self.producer.clone();
            let flushed = tokio::task::spawn_blocking(move || producer.flush(STEP))
                .await
                .map_err(|e| KafkaError::Delivery(format!("waiting for acknowledgements: {e}")))?;
            self.failure()?;
            let Err(error) = flushed else {
                if logged.is_some() {
                    tracing::info!(
                        waited_s = started.elapsed().as_secs(),
                        "Kafka acknowledged every record in flight again"
                    );
                }
                return Ok(());
            };
            metrics::counter!(names::KAFKA_SLOW_FLUSHES).increment(1);
            if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                tracing::warn!(
                    in_flight = self.producer.in_flight_count(),
                    waited_s = started.elapsed().as_secs(),
                    %error,
                    "Kafka has not acknowledged every record yet; waiting (a slow or overloaded broker is backpressure; deliveries fail after message.timeout.ms if it is unreachable)"
                );
                logged = Some(Instant::now());
            }
        }
    }

    fn failure(&self) -> Result<(), KafkaError> {
        let failure = self.tracker.failure();
        // Runs for every record: the producer's fatal state is asked (a call into
        // librdkafka with a buffer) only once a delivery failed.
        if failure.is_some()
            && let Some(eos) = self.eos.as_ref()
            && let Some(fatal) = eos.fatal(&self.producer)
        {
            return Err(fatal);
        }
        match failure {
            // Sent again from the confirmed position after a reconnect; exactly once, with
            // what the last committed Kafka transaction holds skipped (`abort`).
            Some(failure) if failure.retriable => {
                Err(KafkaError::DeliveryInterrupted(failure.detail))
            }
            Some(failure) => Err(KafkaError::Delivery(failure.detail)),
            None => Ok(()),
        }
    }

    /// Produces one record, waiting while too much is in flight or the queue is full.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        while self.tracker.in_flight() >= self.max_in_flight {
            self.failure()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ordinal = self.tracker.record_produced();
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, ordinal);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, returned)) => match error.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => {
                        record = returned;
                        self.failure()?;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                        let bytes = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
                        let detail = error.to_string();
                        self.tracker.delivered(
                            ordinal,
                            Err(DeliveryFailure {
                                detail: format!("record of {bytes} bytes for {topic} too large"),
                                retriable: false,
                            }),
                        );
                        return Err(KafkaError::TooLarge {
                            topic: topic.to_owned(),
                            bytes,
                            detail,
                        });
                    }
                    _ => {
                        let failure = DeliveryFailure {
                            detail: error.to_string(),
                            retriable: false,
                        };
                        self.tracker.delivered(ordinal, Err(failure));
                        if let Some(eos) = self.eos.as_ref() {
                            if let Some(fatal) = eos.fatal(&self.producer) {
                                return Err(fatal);
                            }
                            // librdkafka refuses records while the transaction awaits its
                            // abort (the coordinator timed it out, say).
                            if error.rdkafka_error_code() == Some(RDKafkaErrorCode::State) {
                                return Err(
                                    eos.abortable(&format!("producing to {topic}: {error}"))
                                );
                            }
                        }
                        return Err(KafkaError::Client {
                            context: format!("producing to {topic}"),
                            source: error,
                        });
                    }
                },
            }
        }
    }

    async fn transaction_record(
        &mut self,
        status: &str,
        open: &OpenTransaction,
    ) -> Result<(), KafkaError> {
        let topic = self.router.transaction_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        #[derive(Serialize)]
        struct Collection<'a> {
            data_collection: &'a str,
            event_count: u64,
        }
        let id = open.id();
        let value = if status == "BEGIN" {
            serde_json::json!({"status": "BEGIN", "id": id, "event_count": null, "data_collections": null, "ts_ms": now_ms()})
        } else {
            let names: BTreeMap<String, u64> = open
                .counts
                .values()
                .map(|(table, count)| (table.qualified_name(), *count))
                .collect();
            let collections: Vec<Collection> = names
                .iter()
                .map(|(name, count)| Collection {
                    data_collection: name,
                    event_count: *count,
                })
                .collect();
            serde_json::json!({"status": "END", "id": id, "event_count": open.total, "data_collections": collections, "ts_ms": now_ms()})
        };
        let key = (FixedSchema::TransactionKey, serde_json::json!({ "id": id }));
        self.produce_fixed(&topic, key, FixedSchema::TransactionMetadata, value)
            .await
    }

    /// Exactly once, after a timed-out transaction: a new producer (the old one is fatal),
    /// whose `init_transactions` fences the old one. Its late delivery reports are void.
    async fn replace_producer_if_fatal(&mut self) -> Result<(), KafkaError> {
        if !self.replace_producer {
            return Ok(());
        }
        let Some(eos) = self.eos.as_mut() else {
            return Ok(());
        };
        let producer: ThreadedProducer<AckContext> = self
            .client
            .create_with_context(AckContext::new(self.tracker.clone(), self.offsets.clone()))
            .map_err(|source| KafkaError::Client {
                context: "creating a new producer".into(),
                source,
            })?;
        let producer = Arc::new(producer);
        eos.restart(&producer).await?;
        self.producer = producer;
        self.tracker.recover();
        self.replace_producer = false;
        tracing::info!(resume = %eos.resume(), "exactly-once delivery goes on with a new producer");
        Ok(())
    }

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
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
        if self.transaction_metadata && event.source.xid != 0 {
            let (xid, commit_lsn) = (event.source.xid, event.source.commit_lsn);
            if self
                .open
                .as_ref()
                .is_none_or(|o| (o.xid, o.commit_lsn) != (xid, commit_lsn))
            {
                let open = OpenTransaction {
                    xid,
                    commit_lsn,
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
            Some(position_headers(event)),
        )
        .await?;
        if event.op == Op::Delete && self.tombstones && has_key {
            self.produce(&topic, key, None, Some(position_headers(event)))
                .await?;
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
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
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
            self.produce(topic, key, Some(value), Some(position_headers(event)))
                .await?;
            if event.op == Op::Delete && self.tombstones && key.is_some() {
                self.produce(topic, key, None, Some(position_headers(event)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The source position of `event` as record headers (`tidemark.commit_lsn`, `tidemark.seq`,
/// `tidemark.xid`), its numbers formatted on the stack.
fn position_headers(event: &ChangeEvent) -> OwnedHeaders {
    let (mut commit_lsn, mut seq, mut xid) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    OwnedHeaders::new_with_capacity(3)
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

impl EventOutput for KafkaOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        Ok(self.send_event(event).await?)
    }

    async fn send_batch(&mut self, events: &[ChangeEvent]) -> Result<(), OutputError> {
        Ok(self.send_rows(events).await?)
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        if let Some(open) = self.open.take() {
            self.transaction_record("END", &open).await?;
        }
        self.tracker.close_transaction(end_lsn);
        if let Some(eos) = self.eos.as_mut() {
            eos.source_committed(end_lsn);
        }
        Ok(())
    }

    fn abort(&mut self) {
        // At least once: records already produced cannot be taken back; the transaction's
        // slot stays open and closes when the retransmitted transaction is delivered.
        // Exactly once: the Kafka transaction holding the partial source transaction aborts.
        self.open = None;
        if let Some(eos) = self.eos.as_mut() {
            self.replace_producer |= eos.abort(&self.producer);
            // The aborted transaction's records are void: late reports for them are
            // ignored, and its source transactions are sent again.
            self.tracker.recover();
        }
        // After a delivery the brokers failed (a restart under the request): everything not
        // acknowledged is sent again, from the position confirmed to PostgreSQL.
        if self.tracker.failure().is_some_and(|f| f.retriable) {
            tracing::warn!(
                acknowledged = %self.tracker.acknowledged(),
                "a Kafka delivery failed; sending again everything not acknowledged"
            );
            self.tracker.recover();
        }
    }

    fn acknowledged(&self) -> Lsn {
        match &self.eos {
            Some(eos) => eos.acknowledged(),
            None => self.tracker.acknowledged(),
        }
    }

    fn resume_position(&self) -> Lsn {
        self.eos.as_ref().map_or(Lsn::ZERO, ExactlyOnce::resume)
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        self.replace_producer_if_fatal().await?;
        self.failure()?;
        let Some(end) = self.eos.as_ref().and_then(ExactlyOnce::ready_to_commit) else {
            return Ok(());
        };
        if let Some(eos) = self.eos.as_ref() {
            let (key, value) = eos.offsets_record(end)?;
            let topic = eos.offsets_topic().to_owned();
            self.produce(&topic, Some(&key), Some(&value), None).await?;
        }
        if let Some(eos) = self.eos.as_mut() {
            eos.commit(&self.producer, end).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self, position: Lsn) -> Result<(), OutputError> {
        self.replace_producer_if_fatal().await?;
        let topic = self.router.heartbeat_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
        let server = serde_json::json!({ "serverName": self.context.connector_name });
        let value = serde_json::json!({ "ts_ms": now_ms(), "lsn": position.as_u64() });
        self.produce_fixed(
            &topic,
            (FixedSchema::HeartbeatKey, server),
            FixedSchema::Heartbeat,
            value,
        )
        .await?;
        self.tracker.close_transaction(position);
        if let Some(eos) = self.eos.as_mut() {
            eos.source_committed(position);
        }
        Ok(())
    }

    async fn wait_acknowledged(&mut self) -> Result<(), OutputError> {
        self.flush().await?;
        if self.eos.is_none() {
            self.wait_in_flight().await?;
        }
        Ok(self.failure()?)
    }

    async fn load_snapshot_progress(&mut self) -> Result<Option<Vec<u8>>, OutputError> {
        let topic = self.router.offsets_topic();
        self.topics.ensure(&topic, TopicKind::Compacted).await?;
        let (config, name) = (self.config.clone(), self.context.connector_name.clone());
        let key = snapshot_progress_key(&name);
        let read = tokio::task::spawn_blocking(move || {
            super::exactly_once::read_latest(&config, &topic, &name, &key)
        })
        .await
        .map_err(|e| KafkaError::Delivery(format!("reading snapshot progress: {e}")))??;
        Ok(read)
    }

    async fn store_snapshot_progress(&mut self, progress: &[u8]) -> Result<bool, OutputError> {
        let topic = self.router.offsets_topic();
        self.topics.ensure(&topic, TopicKind::Compacted).await?;
        let key = serde_json::to_vec(&snapshot_progress_key(&self.context.connector_name))
            .map_err(KafkaError::from)?;
        self.replace_producer_if_fatal().await?;
        match self.eos.as_mut() {
            // Exactly once: in the same Kafka transaction as the rows it counts.
            Some(eos) => eos.before_side_record(&self.producer)?,
            // At least once: only after those rows are acknowledged.
            None => self.wait_acknowledged().await?,
        }
        self.produce(&topic, Some(&key), Some(progress), None)
            .await?;
        if self.eos.is_none() {
            self.tracker.close_transaction(self.tracker.acknowledged());
        }
        Ok(true)
    }

    async fn shutdown(&mut self) -> Result<(), OutputError> {
        if self
            .eos
            .as_ref()
            .is_some_and(ExactlyOnce::source_transaction_open)
        {
            self.abort();
        } else {
            self.flush().await?;
        }
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, in_flight = self.tracker.in_flight(), "not every record was acknowledged before shutdown; they are not confirmed and will be sent again")
            }
            Err(error) => tracing::warn!(%error, "flushing the producer failed"),
        }
        Ok(self.failure()?)
    }
}

/// The offsets-topic key of a connector's snapshot progress.
fn snapshot_progress_key(connector: &str) -> serde_json::Value {
    serde_json::json!({ "connector": connector, "snapshot": true })
}

/// A logical message event in `schemas/message.avsc`'s shape.
fn message_json(event: &ChangeEvent, context: &EnvelopeContext) -> serde_json::Value {
    let position = &event.source;
    let (prefix, content, transactional) = event
        .message
        .as_ref()
        .map_or((String::new(), Vec::new(), false), |m| {
            (m.prefix.clone(), m.content.to_vec(), m.transactional)
        });
    serde_json::json!({
        "op": "m",
        "ts_ms": now_ms(),
        "source": {
            "version": env!("CARGO_PKG_VERSION"),
            "connector": "postgresql",
            "name": context.connector_name,
            "ts_ms": position.commit_time_micros.div_euclid(1000),
            "db": context.database,
            "txId": position.xid,
            "lsn": position.lsn.as_u64(),
            "commit_lsn": position.commit_lsn.as_u64(),
            "seq": position.seq,
        },
        "message": {"prefix": prefix, "content": content, "transactional": transactional},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &str) -> KafkaConfig {
        let text = format!(
            "name = \"shop\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"b:9092\"\n{extra}"
        );
        crate::config::Config::from_toml_with_env(&text, "test", std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"))
            .kafka
            .unwrap_or_else(|| panic!("no [kafka]"))
    }

    #[test]
    fn the_transactional_producer_retries_concurrent_transactions_after_20_ms() {
        let eos = producer_config(&kafka("delivery = \"exactly_once\"\n"), "shop");
        assert_eq!(eos.get("retry.backoff.ms"), Some("20"));
        assert_eq!(eos.get("transactional.id"), Some("tidemark-shop"));
        let user = producer_config(
            &kafka(
                "delivery = \"exactly_once\"\n[kafka.properties]\n\"retry.backoff.ms\" = \"250\"\n",
            ),
            "shop",
        );
        assert_eq!(user.get("retry.backoff.ms"), Some("250"));
        let at_least_once = producer_config(&kafka(""), "shop");
        assert_eq!(at_least_once.get("retry.backoff.ms"), None);
        assert_eq!(at_least_once.get("transactional.id"), None);
    }
}
