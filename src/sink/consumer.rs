//! The sink's Kafka consumer: a consumer group whose partitions start where the warehouse
//! says, not where Kafka says.
//!
//! On every assignment the rebalance callback reads the group's offsets from the
//! warehouse (`__tidemark_offsets`, written in the same transaction as the rows) and
//! assigns each partition from there, or from the beginning when the warehouse has none.
//! It reports each assignment and revocation to the runner as a [`PartitionChange`]: a
//! revoked partition's pending changes are dropped (its new owner starts from the
//! warehouse's offsets), and an assigned one is claimed at the offset read, which the
//! runner's flushes then move as a compare-and-set (see
//! [`crate::sink::dialect::Dialect::store_offsets`]). So an instance that still applies a
//! partition the group has given to another (one paused past its session timeout, or a
//! broker that settled a rebalance without it) has its flush refused and reads the
//! partition again, instead of writing older rows over newer ones — for hard deletes that
//! would bring deleted rows back, which no position column can prevent.
//!
//! Kafka's committed offsets are written after each warehouse commit for monitoring tools
//! only. If the warehouse cannot be read during a rebalance, the partitions start from
//! Kafka's committed offsets unclaimed, and the runner reads the warehouse's offsets and
//! seeks before it applies anything of them.

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::record::TopicPartition;
use super::warehouse::OffsetsReader;
use crate::observe::names;

/// What a rebalance did to a partition, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartitionChange {
    /// Taken away: its pending changes are dropped.
    Revoked(TopicPartition),
    /// Given, reading from the offset the warehouse stores for it (none: from the
    /// beginning, nothing stored).
    Assigned(TopicPartition, Option<i64>),
    /// Given while the warehouse's offsets could not be read: the runner reads them and
    /// seeks before it applies anything of the partition.
    AssignedUnread(TopicPartition),
}

/// The consumer's callbacks.
pub(crate) struct SinkContext {
    reader: OffsetsReader,
    group: String,
    changes: Mutex<Vec<PartitionChange>>,
}

impl SinkContext {
    /// Callbacks that read `group`'s offsets with `reader`.
    pub fn new(reader: OffsetsReader, group: &str) -> Self {
        SinkContext {
            reader,
            group: group.to_owned(),
            changes: Mutex::new(Vec::new()),
        }
    }

    /// What rebalances did since the last call, oldest first.
    pub(crate) fn take_changes(&self) -> Vec<PartitionChange> {
        std::mem::take(&mut *self.lock_changes())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, Vec<PartitionChange>> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn assign_from_warehouse(&self, tpl: &mut TopicPartitionList) {
        let assigned = partitions_of(tpl);
        // Read first, report after: the lock is not held across the warehouse read.
        let mut changes = Vec::new();
        match (self.reader)(&self.group) {
            Ok(stored) => {
                for tp in assigned {
                    let next = stored.get(&(tp.topic.clone(), tp.partition)).copied();
                    let offset = next.map_or(Offset::Beginning, Offset::Offset);
                    let _ = tpl.set_partition_offset(&tp.topic, tp.partition, offset);
                    changes.push(PartitionChange::Assigned(tp, next));
                }
                tracing::info!(
                    partitions = tpl.count(),
                    stored = stored.len(),
                    "partitions assigned; starting from the offsets stored in the warehouse"
                );
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot read the warehouse's offsets during the rebalance; the sink reads them again before it applies anything"
                );
                changes.extend(assigned.into_iter().map(PartitionChange::AssignedUnread));
            }
        }
        self.lock_changes().extend(changes);
    }
}

/// The partitions of a list.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_owned(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for SinkContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): each assigned partition's
    /// consumer lag, the broker's end offset minus the consumed position.
    fn stats(&self, statistics: Statistics) {
        crate::kafka::record_brokers_up("sink", &statistics);
        for (topic, stats) in &statistics.topics {
            for (partition, partition_stats) in &stats.partitions {
                // -1: not consumed by this instance (or not known yet).
                if *partition < 0 || partition_stats.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    names::SINK_CONSUMER_LAG,
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(partition_stats.consumer_lag as f64);
            }
        }
    }
}

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
                let revoked = partitions_of(tpl);
                tracing::info!(partitions = revoked.len(), "partitions revoked");
                self.lock_changes()
                    .extend(revoked.into_iter().map(PartitionChange::Revoked));
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
