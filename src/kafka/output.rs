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
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use super::KafkaError;
use super::ack::AckTracker;
use super::avro_encoder::{AvroEncoder, InUse, position, schema_record};
use super::encode::{JsonEncoder, RecordEncoder};
use super::exactly_once::ExactlyOnce;
use super::topics::{TopicCreator, TopicKind, TopicRouter};
use crate::config::{Delivery, IncompatiblePolicy, KafkaConfig, RecordFormat};
use crate::event::{ChangeEvent, EnvelopeContext, Op, TableSchema, now_ms};
use crate::lsn::Lsn;
use crate::output::{EventOutput, OutputError};
use crate::schema::change::{
    CapturedDdl, DDL_MESSAGE_PREFIX, SchemaChangeRecord, columns_of_table, diff,
};
use crate::schema::fixed::FixedSchema;
use crate::schema::registry_client::RegistryClient;

/// How records are encoded.
enum Format {
    /// JSON; the shapes in use per topic, for schema-change records.
    Json(JsonEncoder, HashMap<Arc<str>, InUse>),
    /// Avro with a registry.
    Avro(Box<AvroEncoder>),
    /// Avro configured, but no registry given yet.
    AvroWithoutRegistry,
}

/// Delivery reports into the [`AckTracker`].
pub struct AckContext {
    tracker: Arc<AckTracker>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, ordinal: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, message)) => {
                use rdkafka::Message;
                let topic = message.topic().to_owned();
                let detail = match error.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => format!(
                        "topic {topic}: the broker rejected a record as too large ({error}); raise the topic's max.message.bytes"
                    ),
                    _ => format!("topic {topic}: {error}"),
                };
                Err(detail)
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
    producer: Arc<ThreadedProducer<AckContext>>,
    tracker: Arc<AckTracker>,
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
    /// DDL captured for a relation, waiting for the first row of its new shape.
    pending_ddl: HashMap<u32, CapturedDdl>,
    /// Columns of each relation as the last captured DDL left them (with nullability).
    captured_columns: HashMap<u32, Vec<crate::schema::change::ColumnInfo>>,
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

impl KafkaOutput {
    /// Connects to the brokers (failing early when they cannot be reached).
    pub async fn connect(
        config: &KafkaConfig,
        context: EnvelopeContext,
    ) -> Result<Self, KafkaError> {
        let tracker = Arc::new(AckTracker::default());
        let exactly_once = config.delivery == Delivery::ExactlyOnce;
        let mut client = client_config(config);
        if exactly_once {
            // A fixed id fences any earlier instance of this connector; a transactional
            // producer needs a finite message timeout within the transaction timeout.
            let transaction_timeout = config
                .properties
                .get("transaction.timeout.ms")
                .cloned()
                .unwrap_or_else(|| "60000".into());
            client
                .set(
                    "transactional.id",
                    format!("tidemark-{}", context.connector_name),
                )
                .set("message.timeout.ms", transaction_timeout);
        }
        let producer: ThreadedProducer<AckContext> = client
            .create_with_context(AckContext {
                tracker: tracker.clone(),
            })
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
        .map_err(|e| KafkaError::Unreachable {
            brokers: brokers.clone(),
            detail: e.to_string(),
        })?
        .map_err(|e| KafkaError::Unreachable {
            brokers: brokers.clone(),
            detail: e.to_string(),
        })?;
        let admin: AdminClient<DefaultClientContext> = super::connection_config(config)
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
        let format = match config.format {
            RecordFormat::Json => Format::Json(
                JsonEncoder::new(context.clone(), config.json_schemas),
                HashMap::new(),
            ),
            RecordFormat::Avro => Format::AvroWithoutRegistry,
        };
        Ok(KafkaOutput {
            producer,
            tracker,
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
            pending_ddl: HashMap::new(),
            captured_columns: HashMap::new(),
        })
    }

    /// The output a config asks for: `[kafka]` with, for Avro, the `[registry]` url or an
    /// embedded registry started here (returned: it serves while it lives).
    pub async fn from_config(
        config: &crate::config::Config,
        context: EnvelopeContext,
    ) -> Result<(Self, Option<crate::schema::registry_http::EmbeddedRegistry>), OutputError> {
        let kafka = config.kafka.as_ref().ok_or_else(|| {
            OutputError::Setup("the Kafka output needs a [kafka] section with brokers".into())
        })?;
        let output = KafkaOutput::connect(kafka, context).await?;
        if kafka.format == RecordFormat::Json {
            return Ok((output, None));
        }
        let registry = config.registry.clone().unwrap_or_default();
        let (url, embedded) = match &registry.url {
            Some(url) => (url.clone(), None),
            None => {
                let embedded =
                    crate::schema::registry_http::EmbeddedRegistry::start(kafka, &registry)
                        .await
                        .map_err(|e| OutputError::Setup(e.to_string()))?;
                (embedded.url(), Some(embedded))
            }
        };
        let client = RegistryClient::new(&url, &registry).map_err(KafkaError::from)?;
        Ok((
            output.with_registry(client, registry.on_incompatible),
            embedded,
        ))
    }

    /// Gives an Avro output its schema registry (no effect with `format = "json"`).
    pub fn with_registry(mut self, client: RegistryClient, policy: IncompatiblePolicy) -> Self {
        if !matches!(self.format, Format::Json(..)) {
            self.format = Format::Avro(Box::new(AvroEncoder::new(
                client,
                policy,
                self.context.clone(),
            )));
        }
        self
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
            Format::AvroWithoutRegistry => Err(KafkaError::NoRegistry),
            Format::Json(..) => {
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

    /// Writes a schema-change record to `<prefix>.schema-changes`.
    async fn write_schema_change(&mut self, record: &SchemaChangeRecord) -> Result<(), KafkaError> {
        let topic = self.router.schema_change_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
        let value = serde_json::to_value(record)?;
        self.encode_fixed(
            &topic,
            Some((FixedSchema::SchemaChangeKey, record.key())),
            FixedSchema::SchemaChange,
            value,
        )
        .await?;
        tracing::info!(table = %format!("{}.{}", record.schema, record.table), kind = record.kind, changes = record.changes.len(), "schema change");
        let (key, value) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        let result = self.produce(&topic, Some(&key), Some(&value), None).await;
        (self.key, self.value) = (key, value);
        result
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
        let mut records = Vec::new();
        let mut seen = Vec::new();
        for table in &ddl.tables {
            if seen.contains(&table.relid) {
                continue;
            }
            seen.push(table.relid);
            let topic = self.router.table_topic(&table.schema, &table.table);
            let previous = self.in_use(&topic);
            let after = table.column_infos();
            // The last capture knows nullability too; else the shape in use.
            let before = self
                .captured_columns
                .get(&table.relid)
                .cloned()
                .or_else(|| previous.as_ref().map(|p| p.columns.clone()));
            let renames = before
                .as_ref()
                .map(|b| ddl.renames(table.relid, b))
                .unwrap_or_default();
            let mut changes = before
                .as_ref()
                .map(|b| diff(b, &after, &renames))
                .unwrap_or_default();
            self.captured_columns.insert(table.relid, after.clone());
            if ddl.tag.eq_ignore_ascii_case("CREATE TABLE") {
                changes.push(crate::schema::change::Change {
                    kind: "create_table".into(),
                    column: None,
                    old: None,
                    new: None,
                });
            }
            records.push(SchemaChangeRecord {
                kind: "ddl",
                ts_ms: now_ms(),
                db: self.context.database.clone(),
                schema: table.schema.clone(),
                table: table.table.clone(),
                topic: Some(topic.to_string()),
                position: position(event),
                tag: Some(ddl.tag.clone()),
                ddl: Some(ddl.statement.clone()),
                changes,
                before,
                after: Some(after),
                old_key_schema_id: previous.as_ref().and_then(|p| p.key_id),
                old_value_schema_id: previous.as_ref().and_then(|p| p.value_id),
                ..Default::default()
            });
            self.pending_ddl.insert(table.relid, ddl.clone());
        }
        for dropped in &ddl.dropped {
            let topic = self.router.table_topic(&dropped.schema, &dropped.table);
            let previous = self.in_use(&topic);
            records.push(SchemaChangeRecord {
                kind: "ddl",
                ts_ms: now_ms(),
                db: self.context.database.clone(),
                schema: dropped.schema.clone(),
                table: dropped.table.clone(),
                topic: Some(topic.to_string()),
                position: position(event),
                tag: Some(ddl.tag.clone()),
                ddl: Some(ddl.statement.clone()),
                changes: vec![crate::schema::change::Change {
                    kind: "drop_table".into(),
                    column: None,
                    old: None,
                    new: None,
                }],
                before: previous.as_ref().map(|p| p.columns.clone()),
                after: None,
                old_key_schema_id: previous.as_ref().and_then(|p| p.key_id),
                old_value_schema_id: previous.as_ref().and_then(|p| p.value_id),
                ..Default::default()
            });
        }
        for record in &records {
            self.write_schema_change(record).await?;
        }
        Ok(())
    }

    /// The shape in use on a topic in this run.
    fn in_use(&self, topic: &Arc<str>) -> Option<InUse> {
        match &self.format {
            Format::Avro(encoder) => encoder.in_use(topic).cloned(),
            Format::Json(_, shapes) => shapes.get(topic).cloned(),
            Format::AvroWithoutRegistry => None,
        }
    }

    fn failure(&self) -> Result<(), KafkaError> {
        match self.tracker.failure() {
            Some(detail) => Err(KafkaError::Delivery(detail)),
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
                            Err(format!("record of {bytes} bytes for {topic} too large")),
                        );
                        return Err(KafkaError::TooLarge {
                            topic: topic.to_owned(),
                            bytes,
                            detail,
                        });
                    }
                    _ => {
                        self.tracker.delivered(ordinal, Err(error.to_string()));
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
        self.encode_fixed(
            &topic,
            Some((FixedSchema::TransactionKey, serde_json::json!({ "id": id }))),
            FixedSchema::TransactionMetadata,
            value,
        )
        .await?;
        let (key, value) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        let result = self.produce(&topic, Some(&key), Some(&value), None).await;
        (self.key, self.value) = (key, value);
        result
    }

    async fn send_event(&mut self, event: &ChangeEvent) -> Result<(), KafkaError> {
        self.failure()?;
        if event
            .message
            .as_ref()
            .is_some_and(|m| m.prefix == DDL_MESSAGE_PREFIX)
        {
            return self.captured_ddl(event).await;
        }
        let routed = self.router.topic(event);
        let relation = event.table.as_ref().map(|t| t.relation_id);
        let (topic, change) = match (&mut self.format, &event.table) {
            (Format::Avro(encoder), Some(_)) => {
                let ddl = relation.and_then(|r| self.pending_ddl.get(&r));
                let resolution = encoder.resolve(&routed, event, ddl).await?;
                (resolution.topic, resolution.change)
            }
            (Format::Json(_, shapes), Some(table)) => {
                let columns = columns_of_table(table);
                let change = match shapes.get(&routed) {
                    Some(previous) if previous.columns != columns => {
                        let renames = self
                            .pending_ddl
                            .get(&table.relation_id)
                            .map(|d| d.renames(table.relation_id, &previous.columns))
                            .unwrap_or_default();
                        Some(schema_record(
                            event,
                            &self.context,
                            &routed,
                            previous,
                            &columns,
                            &renames,
                        ))
                    }
                    _ => None,
                };
                if change.is_some() || !shapes.contains_key(&routed) {
                    shapes.insert(
                        routed.clone(),
                        InUse {
                            columns,
                            key_id: None,
                            value_id: None,
                        },
                    );
                }
                (routed, change)
            }
            (Format::AvroWithoutRegistry, _) => return Err(KafkaError::NoRegistry),
            _ => (routed, None),
        };
        if let Some(change) = change {
            self.write_schema_change(&change).await?;
            if let Some(relation) = relation {
                self.pending_ddl.remove(&relation);
            }
        }
        let kind = if event.table.is_some() {
            TopicKind::Change
        } else {
            TopicKind::Plain
        };
        self.topics.ensure(&topic, kind).await?;
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
        let has_key = match &mut self.format {
            Format::Json(encoder, _) => encoder.encode(event, &mut self.key, &mut self.value)?,
            Format::Avro(encoder) if event.table.is_some() => {
                encoder.encode_table(event, now_ms(), &mut self.key, &mut self.value)?
            }
            Format::Avro(_) => {
                let value = message_json(event, &self.context);
                self.encode_fixed(&topic, None, FixedSchema::Message, value)
                    .await?
            }
            Format::AvroWithoutRegistry => return Err(KafkaError::NoRegistry),
        };
        let commit_lsn = event.source.commit_lsn.as_u64().to_string();
        let seq = event.source.seq.to_string();
        let xid = event.source.xid.to_string();
        let headers = || {
            OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "tidemark.commit_lsn",
                    value: Some(commit_lsn.as_bytes()),
                })
                .insert(Header {
                    key: "tidemark.seq",
                    value: Some(seq.as_bytes()),
                })
                .insert(Header {
                    key: "tidemark.xid",
                    value: Some(xid.as_bytes()),
                })
        };
        let key = has_key.then_some(self.key.as_slice());
        self.produce(&topic, key, Some(&self.value), Some(headers()))
            .await?;
        if event.op == Op::Delete && self.tombstones && has_key {
            self.produce(&topic, key, None, Some(headers())).await?;
        }
        Ok(())
    }
}

impl EventOutput for KafkaOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        Ok(self.send_event(event).await?)
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
            eos.abort(&self.producer);
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
        let topic = self.router.heartbeat_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        if let Some(eos) = self.eos.as_mut() {
            eos.before_record(&self.producer)?;
        }
        let server = serde_json::json!({ "serverName": self.context.connector_name });
        self.encode_fixed(
            &topic,
            Some((FixedSchema::HeartbeatKey, server)),
            FixedSchema::Heartbeat,
            serde_json::json!({ "ts_ms": now_ms(), "lsn": position.as_u64() }),
        )
        .await?;
        let (key, value) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.value),
        );
        let produced = self.produce(&topic, Some(&key), Some(&value), None).await;
        (self.key, self.value) = (key, value);
        produced?;
        self.tracker.close_transaction(position);
        if let Some(eos) = self.eos.as_mut() {
            eos.source_committed(position);
        }
        Ok(())
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
