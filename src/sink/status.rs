//! The sink's part of `tidemark status`: per partition of the connector's change topics,
//! the offset the warehouse has applied up to (`__tidemark_offsets`, the offsets that
//! count) against the broker's end offset.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use super::warehouse::Warehouse;
use crate::config::{Config, KafkaConfig};

/// One partition's progress.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionProgress {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the warehouse will apply (none: nothing applied yet).
    pub applied: Option<i64>,
    /// The broker's end offset.
    pub end: i64,
    /// Records not applied yet: offsets from the applied one (or the broker's first
    /// stored one) to the end. Under `delivery = "exactly_once"` each transaction's commit
    /// marker takes an offset too, so a partition that is all applied can show 1.
    pub lag: i64,
}

/// The sink's progress, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    /// The consumer group.
    pub group: String,
    /// Per partition.
    pub partitions: Vec<PartitionProgress>,
    /// What could not be read (the warehouse, the broker), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The connector's rule for its change topics (see [`TopicRouter::is_change_topic`](crate::kafka::topics::TopicRouter::is_change_topic)), with the
/// topics of the tables `tables` (`sink.tables`) names one by one, for code that has topic
/// names from elsewhere.
pub(crate) fn change_topic_matcher(
    kafka: &KafkaConfig,
    connector: &str,
    tables: &[String],
) -> impl Fn(&str) -> bool + use<> {
    let router = crate::kafka::topics::TopicRouter::new(kafka, connector).with_tables(tables);
    move |topic| router.is_change_topic(topic)
}

/// A partition's offsets on the broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PartitionOffsets {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The first offset still stored (retention and compaction move it).
    pub start: i64,
    /// The offset the next record will get.
    pub end: i64,
}

/// Every partition of the connector's change topics with its start and end offsets.
pub(crate) fn change_topic_ends(
    kafka: &KafkaConfig,
    connector: &str,
    tables: &[String],
) -> Result<Vec<PartitionOffsets>, String> {
    let is_change = change_topic_matcher(kafka, connector, tables);
    let consumer: BaseConsumer = kafka
        .connection_config()
        .create()
        .map_err(|e| format!("creating a Kafka client: {e}"))?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("listing the topics: {e}"))?;
    let mut ends = Vec::new();
    for topic in metadata.topics() {
        if !is_change(topic.name()) {
            continue;
        }
        for partition in topic.partitions() {
            let (start, end) = consumer
                .fetch_watermarks(topic.name(), partition.id(), timeout)
                .map_err(|e| format!("offsets of {}/{}: {e}", topic.name(), partition.id()))?;
            ends.push(PartitionOffsets {
                topic: topic.name().to_owned(),
                partition: partition.id(),
                start,
                end,
            });
        }
    }
    ends.sort();
    Ok(ends)
}

/// The sink's progress for `config` (none without `[sink]` and `[kafka]`).
pub async fn sink_status(config: &Config) -> Option<SinkStatus> {
    let (sink, kafka) = (config.sink.as_ref()?, config.kafka.clone()?);
    let mut status = SinkStatus {
        group: sink.group.clone(),
        partitions: Vec::new(),
        problem: None,
    };
    let (connector, tables) = (config.name.clone(), sink.tables.clone());
    let ends =
        tokio::task::spawn_blocking(move || change_topic_ends(&kafka, &connector, &tables)).await;
    let ends = match ends {
        Ok(Ok(ends)) => ends,
        Ok(Err(problem)) => {
            status.problem = Some(format!("broker: {problem}"));
            return Some(status);
        }
        Err(error) => {
            status.problem = Some(error.to_string());
            return Some(status);
        }
    };
    let stored = match Warehouse::open(sink).await {
        Ok(warehouse) => {
            let reader = warehouse.offsets_reader();
            let group = sink.group.clone();
            match tokio::task::spawn_blocking(move || reader(&group)).await {
                Ok(Ok(stored)) => stored,
                Ok(Err(error)) => {
                    status.problem = Some(format!("warehouse: {error}"));
                    Default::default()
                }
                Err(error) => {
                    status.problem = Some(error.to_string());
                    Default::default()
                }
            }
        }
        Err(error) => {
            status.problem = Some(format!(
                "warehouse: {error} (a DuckDB file cannot be read while a sink has it open)"
            ));
            Default::default()
        }
    };
    status.partitions = ends
        .into_iter()
        .map(|offsets| {
            let applied = stored
                .get(&(offsets.topic.clone(), offsets.partition))
                .copied();
            PartitionProgress {
                // Records before the start are gone from the broker; they are not lag.
                lag: (offsets.end - applied.unwrap_or(offsets.start).max(offsets.start)).max(0),
                topic: offsets.topic,
                partition: offsets.partition,
                applied,
                end: offsets.end,
            }
        })
        .collect();
    Some(status)
}

impl std::fmt::Display for SinkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lag: i64 = self.partitions.iter().map(|p| p.lag).sum();
        write!(
            f,
            "sink          group {}: {} partitions, {lag} records not applied",
            self.group,
            self.partitions.len()
        )?;
        for p in &self.partitions {
            write!(
                f,
                "\n  {}/{}  applied to {} of {} (lag {})",
                p.topic,
                p.partition,
                p.applied.map_or("-".into(), |a| a.to_string()),
                p.end,
                p.lag
            )?;
        }
        if let Some(problem) = &self.problem {
            write!(f, "\n  cannot read: {problem}")?;
        }
        Ok(())
    }
}
