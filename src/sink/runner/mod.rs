//! The sink's loop: consume, decode, fold into per-table batches, and apply a flush when a
//! batch is full or old enough, on a new shape, at the end of a bounded replay, and at
//! shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::SinkError;
use super::batch::TableBatch;
use super::consumer::{PartitionChange, SinkContext};
use super::consumer_errors::ConsumerErrors;
use super::decode::{Decoder, RawRecord, SchemaLookup};
use super::dialect::Target;
use super::evolve::{self, Policies};
use super::record::{OffsetClaim, Position, SinkRecord, SourceTable, TopicPartition};
use super::shape::TableShape;
use super::warehouse::{
    Flush, OffsetsReader, StoredTable, TableFlush, Warehouse, WarehouseError, failpoint,
};
use crate::config::{Config, KafkaConfig, SinkConfig, TableSelector};
use crate::domain::backoff::Backoff;
use crate::observe::health::{Health, Part, Readiness};
use crate::observe::names;
use crate::schema::registry_client::RegistryClient;

/// How a sink run starts and ends.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// A registry URL to use instead of `[registry] url` (e.g. the embedded registry that
    /// `run` started).
    pub registry_url: Option<String>,
    /// A consumer group instead of `sink.group`.
    pub group: Option<String>,
    /// Only these source tables (`schema.table`, `schema.*`), on top of `sink.tables`.
    pub tables: Vec<String>,
    /// Appended to every warehouse table name (replay builds `<table><suffix>`).
    pub target_suffix: String,
    /// Read these partitions from these offsets up to these ends, then stop (replay);
    /// none: follow the consumer group.
    pub bounded: Option<Vec<(String, i32, Offset, i64)>>,
    /// A progress bar advanced per record (replay).
    pub progress: Option<indicatif::ProgressBar>,
    /// Where to publish the offsets each committed warehouse transaction stored (a
    /// caller waiting for the sink to catch up).
    pub applied: Option<Arc<AppliedOffsets>>,
    /// Where the sink reports its readiness (its pipeline's).
    pub health: Health,
}

/// The next offset to apply per partition, as of the sink's last committed warehouse
/// transaction.
#[derive(Debug, Default)]
pub struct AppliedOffsets(std::sync::Mutex<HashMap<(String, i32), i64>>);

impl AppliedOffsets {
    fn record(&self, claims: &[OffsetClaim]) {
        let mut applied = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for claim in claims {
            applied.insert((claim.topic.clone(), claim.partition), claim.next);
        }
    }

    /// The offsets now: `(topic, partition)` to the next offset to apply.
    pub fn snapshot(&self) -> HashMap<(String, i32), i64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    /// Records consumed.
    pub records: u64,
    /// Changes applied after folding.
    pub applied: u64,
    /// Warehouse transactions.
    pub flushes: u64,
    /// The warehouse tables written, with their source tables.
    pub targets: Vec<(SourceTable, Target)>,
}

/// The schema-id lookup the config implies: the registry URL, or the embedded registry's
/// topic.
pub(crate) async fn schema_lookup(
    config: &Config,
    kafka: &KafkaConfig,
    url: Option<&str>,
) -> Result<Option<SchemaLookup>, SinkError> {
    if kafka.format == crate::config::RecordFormat::Json {
        return Ok(None);
    }
    let registry = config.registry.clone().unwrap_or_default();
    let url = url.map(str::to_owned).or_else(|| registry.url.clone());
    Ok(Some(match url {
        Some(url) => SchemaLookup::Registry(
            RegistryClient::new(&url, &registry).map_err(|e| SinkError::Config(e.to_string()))?,
        ),
        None => SchemaLookup::Topic {
            kafka: kafka.clone(),
            topic: registry.topic.clone(),
            store: Box::default(),
        },
    }))
}

fn parse_selectors(patterns: &[String]) -> Vec<TableSelector> {
    patterns
        .iter()
        .filter_map(|t| TableSelector::parse(t))
        .collect()
}

/// Whether `table` is in the selection (an empty one selects every table).
fn selected(selectors: &[TableSelector], table: &SourceTable) -> bool {
    selectors.is_empty()
        || selectors
            .iter()
            .any(|s| s.matches(&table.schema, &table.name))
}

/// The warehouse table of a source table.
pub(crate) fn target_of(sink: &SinkConfig, table: &SourceTable, suffix: &str) -> Target {
    let override_target = sink
        .table_config(&table.schema, &table.name)
        .and_then(|t| t.target.clone());
    let default_schema = sink.schema.clone().unwrap_or_else(|| table.schema.clone());
    let (schema, name) = match override_target {
        Some(target) => match crate::domain::names::split_qualified(&target) {
            Some((schema, name)) => (schema, name),
            None => (default_schema, target),
        },
        None => (default_schema, table.name.clone()),
    };
    Target {
        schema,
        name: format!("{name}{suffix}"),
    }
}

/// Whether the consumer's current assignment has `partition`.
fn holds(consumer: &StreamConsumer<SinkContext>, partition: &TopicPartition) -> bool {
    consumer.assignment().is_ok_and(|assigned| {
        assigned
            .find_partition(&partition.topic, partition.partition)
            .is_some()
    })
}

fn header_position(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Position> {
    let headers = message.headers()?;
    let mut position = (None, None);
    for header in headers.iter() {
        let value = header
            .value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        match header.key {
            "tidemark.commit_lsn" => position.0 = value,
            "tidemark.seq" => position.1 = value,
            _ => {}
        }
    }
    Some(Position {
        commit_lsn: position.0?,
        seq: position.1?,
    })
}

struct Sink<'a> {
    sink: &'a SinkConfig,
    options: &'a SinkOptions,
    group: String,
    warehouse: Warehouse,
    stored: HashMap<Target, StoredTable>,
    batches: HashMap<SourceTable, TableBatch>,
    /// Each source table's warehouse table, worked out once.
    targets: HashMap<SourceTable, Target>,
    /// The next offset of each partition, consumed and taken into a batch.
    offsets: HashMap<Arc<TopicPartition>, i64>,
    /// The offset the warehouse stores for each partition this instance holds, as far as
    /// it knows (none: nothing stored): where its next flush moves the offset from. A
    /// consumer group only; a bounded run stores no offsets.
    claims: HashMap<TopicPartition, Option<i64>>,
    /// Reads the stored offsets (a resync).
    reader: OffsetsReader,
    /// Partitions read again from the warehouse's offsets while the current record was
    /// handled: that record comes again and is not taken now.
    resynced: Vec<TopicPartition>,
    /// The partitions seen (few): records point at these instead of owning names.
    partitions: Vec<Arc<TopicPartition>>,
    stats: SinkStats,
}

impl Sink<'_> {
    fn pending_changes(&self) -> usize {
        self.batches
            .values()
            .map(TableBatch::len)
            .max()
            .unwrap_or(0)
    }

    /// A record this instance must not take: of a partition it does not hold (fetched
    /// before a revocation, or seen before the partition was read again), or before the
    /// offset the warehouse already stores for it.
    fn stale(&self, partition: &TopicPartition, offset: i64) -> bool {
        match self.claims.get(partition) {
            None => true,
            Some(stored) => stored.is_some_and(|next| offset < next),
        }
    }

    fn oldest(&self) -> Option<std::time::Instant> {
        self.batches.values().map(|b| b.opened).min()
    }

    /// The shared handle of a partition.
    fn partition(&mut self, topic: &str, partition: i32) -> Arc<TopicPartition> {
        if let Some(known) = self
            .partitions
            .iter()
            .find(|p| p.partition == partition && p.topic == topic)
        {
            return known.clone();
        }
        let new = Arc::new(TopicPartition {
            topic: topic.to_owned(),
            partition,
        });
        self.partitions.push(new.clone());
        new
    }

    /// The warehouse table of `table`.
    fn target(&mut self, table: &SourceTable) -> &Target {
        if !self.targets.contains_key(table) {
            let target = target_of(self.sink, table, &self.options.target_suffix);
            self.targets.insert(table.clone(), target);
        }
        &self.targets[table]
    }
}

/// Runs the sink until `shutdown` (or, when bounded, until every partition reached its
/// end), applying the topics of `config`'s connector to `[sink]`'s warehouse.
pub async fn run_sink(
    config: &Config,
    options: SinkOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<SinkStats, SinkError> {
    let result = sink_loop(config, options, shutdown).await;
    if let Err(error) = &result {
        tracing::error!(%error, "the sink stopped");
    }
    result
}

async fn sink_loop(
    config: &Config,
    options: SinkOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SinkStats, SinkError> {
    let sink_config = config.sink.as_ref().ok_or_else(|| {
        SinkError::Config("the sink needs a [sink] section (kind and url of the warehouse)".into())
    })?;
    let kafka = config.kafka.as_ref().ok_or_else(|| {
        SinkError::Config("the sink reads Kafka: add a [kafka] section with brokers".into())
    })?;
    if options.bounded.is_none() {
        options.health.set(Part::Sink, Readiness::Starting);
    }
    let router = crate::kafka::topics::TopicRouter::new(kafka, &config.name)
        .with_tables(&sink_config.tables);
    let lookup = schema_lookup(config, kafka, options.registry_url.as_deref()).await?;
    let placeholder = config
        .events
        .unavailable_value()
        .map_err(|e| SinkError::Config(e.to_string()))?;
    let mut decoder = Decoder::new(router.prefix(), lookup).with_placeholder(&placeholder);
    // A table must be in both selections (`sink.tables` and the run's own).
    let configured = parse_selectors(&sink_config.tables);
    let requested = parse_selectors(&options.tables);
    let warehouse = Warehouse::open(sink_config).await?;
    let group = options
        .group
        .clone()
        .unwrap_or_else(|| sink_config.group.clone());
    let reader = warehouse.offsets_reader();
    let context = SinkContext::new(reader.clone(), &group);
    let consumer: StreamConsumer<SinkContext> = kafka
        .connection_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        // As Kafka Connect: a crashed instance's partitions move after 10 s, not 45.
        .set("session.timeout.ms", "10000")
        // The subscription is a pattern: new tables' topics are found on metadata refresh.
        .set("topic.metadata.refresh.interval.ms", "5000")
        // A fetch waits for data at most as long as a batch may stay open: a broker that
        // holds a fetch for its whole wait when too little data arrives (Apache Kafka
        // does below fetch.min.bytes) would otherwise add librdkafka's 500 ms to every
        // row's latency.
        .set(
            "fetch.wait.max.ms",
            sink_config.batch_ms.clamp(1, 500).to_string(),
        )
        // Statistics carry each partition's consumer lag (tidemark_sink_consumer_lag) and
        // the brokers' connection states (tidemark_kafka_brokers_up).
        .set("statistics.interval.ms", "1000")
        .create_with_context(context)?;
    // Every way out of the loop passes through the close below.
    let result: Result<SinkStats, SinkError> = async {
        let mut ends: HashMap<TopicPartition, i64> = HashMap::new();
        match &options.bounded {
            Some(partitions) => {
                let mut tpl = TopicPartitionList::new();
                for (topic, partition, start, end) in partitions {
                    if let Offset::Offset(start) = start {
                        if start >= end {
                            continue;
                        }
                    }
                    let _ = tpl.add_partition_offset(topic, *partition, *start);
                    ends.insert(
                        TopicPartition {
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        *end,
                    );
                }
                consumer.assign(&tpl)?;
            }
            None => {
                let topics = router.subscription();
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics)?;
            }
        }
        let mut sink = Sink {
            sink: sink_config,
            options: &options,
            group,
            stored: HashMap::new(),
            warehouse,
            batches: HashMap::new(),
            targets: HashMap::new(),
            offsets: HashMap::new(),
            claims: HashMap::new(),
            reader,
            resynced: Vec::new(),
            partitions: Vec::new(),
            stats: SinkStats::default(),
        };
        sink.stored = sink.warehouse.load_tables().await?;
        if !options.target_suffix.is_empty() {
            sink.stored
                .retain(|t, _| t.name.ends_with(&options.target_suffix));
        }
        let batch_wait = Duration::from_millis(sink_config.batch_ms);
        let bounded = options.bounded.is_some();
        tracing::info!(group = %sink.group, warehouse = ?sink_config.kind, "sink started");
        if !bounded {
            options.health.set(Part::Sink, Readiness::Ready);
        }
        let consumed = metrics::counter!(names::SINK_RECORDS);
        let mut consumer_errors = ConsumerErrors::default();
        loop {
            if bounded && ends.is_empty() {
                break;
            }
            let deadline = sink.oldest().map_or_else(
                || tokio::time::Instant::now() + batch_wait,
                |opened| tokio::time::Instant::from_std(opened) + batch_wait,
            );
            let message = tokio::select! {
                message = consumer.recv() => Some(message),
                _ = tokio::time::sleep_until(deadline) => None,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            sink.resynced.clear();
            let changes = consumer.context().take_changes();
            sink.follow(&consumer, changes).await?;
            let Some(message) = message else {
                sink.flush(&consumer).await?;
                continue;
            };
            let message = match message {
                Ok(message) => {
                    consumer_errors.recovered();
                    message
                }
                Err(error) => {
                    // Broker outages and topics that do not exist yet (a pattern subscription
                    // before the source created any) are reported here and pass.
                    consumer_errors.failed(&error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            sink.stats.records += 1;
            consumed.increment(1);
            if let Some(progress) = &options.progress {
                progress.inc(1);
            }
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            let tp = sink.partition(topic, partition);
            let end = ends.get(&*tp).copied();
            if end.is_some_and(|end| offset >= end) {
                ends.remove(&*tp);
                continue;
            }
            if !bounded && sink.stale(&tp, offset) {
                if !sink.claims.contains_key(&*tp) && holds(&consumer, &tp) {
                    // Assigned, but its seek after a refused flush did not take: try again.
                    sink.resync(&consumer, &[(*tp).clone()]).await?;
                }
                continue;
            }
            let raw = RawRecord {
                topic,
                key: message.key(),
                value: message.payload(),
                // Only a tombstone needs the position headers (its value is gone).
                header_position: message
                    .payload()
                    .is_none()
                    .then(|| header_position(&message))
                    .flatten(),
            };
            let record = decoder.decode(&raw).await.map_err(|e| SinkError::Decode {
                topic: topic.to_owned(),
                partition,
                offset,
                next: offset + 1,
                detail: e.to_string(),
            })?;
            if let Some(record) =
                record.filter(|r| selected(&configured, &r.table) && selected(&requested, &r.table))
            {
                sink.take(record, &tp, &consumer).await?;
                if sink.resynced.contains(&*tp) {
                    // Read again from the warehouse's offset: this record comes again.
                    continue;
                }
            }
            // Recorded only now: a flush inside `take` (a new shape) must not store this
            // record's offset before the record is in a batch.
            sink.offsets.insert(tp.clone(), offset + 1);
            if end.is_some_and(|end| offset + 1 >= end) {
                ends.remove(&*tp);
            }
            if sink.pending_changes() >= sink_config.batch_rows {
                sink.flush(&consumer).await?;
            }
        }
        if !bounded {
            options
                .health
                .set(Part::Sink, Readiness::NotReady("stopping".into()));
        }
        sink.flush(&consumer).await?;
        tracing::info!(
            records = sink.stats.records,
            applied = sink.stats.applied,
            flushes = sink.stats.flushes,
            "sink stopped"
        );
        Ok(sink.stats)
    }
    .await;
    close_off_runtime(consumer).await;
    result
}

/// Closes the consumer on a blocking thread: librdkafka's close leaves the group and waits
/// for the brokers' answers, which during an outage takes long, and must not hold one of
/// the runtime's threads (the source and the metrics server run on them). Waits up to 10 s,
/// then lets it finish closing in the background.
async fn close_off_runtime(consumer: StreamConsumer<SinkContext>) {
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .is_err()
    {
        tracing::warn!(
            "the Kafka consumer did not close within 10 s (are the brokers reachable?); leaving it to close in the background"
        );
    }
}

mod flush;
