//! A change as the sink applies it: table, operation, position, and the row.

use std::sync::Arc;

use super::shape::TableShape;
use crate::domain::value::Value;

/// Where a change sits in the source's history: `(commit_lsn, seq)`. Snapshot rows sort
/// before every streamed change; a larger position is always the newer state of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Commit position of the change's transaction.
    pub commit_lsn: u64,
    /// Index of the change within its transaction.
    pub seq: u64,
}

/// A source table, by its PostgreSQL schema and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceTable {
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
}

impl std::fmt::Display for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::domain::names::qualified(&self.schema, &self.name))
    }
}

/// What a change does to the warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOp {
    /// Insert, update or snapshot read: the row's new state.
    Upsert,
    /// Delete (or a tombstone): the key's row goes.
    Delete,
    /// Truncate: every row older than the position goes.
    Truncate,
}

/// One decoded change.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    /// The source table.
    pub table: SourceTable,
    /// The table's shape for this record (shared by every record of the same schema).
    pub shape: Arc<TableShape>,
    /// What it does.
    pub op: SinkOp,
    /// Its position.
    pub position: Position,
    /// The row in `shape.columns` order: the new state for upserts; for deletes the old
    /// row (key columns at least).
    pub row: Vec<Value>,
    /// Columns whose unchanged TOASTed value was not sent: the warehouse keeps its value.
    pub unchanged: Vec<String>,
    /// For a table without a key (`shape.key` empty), an update's old row (`before`, which
    /// `REPLICA IDENTITY FULL` sends whole): the warehouse row the update replaces. None
    /// otherwise.
    pub before: Option<Vec<Value>>,
}

impl SinkRecord {
    /// The key values in `shape.key` order.
    pub fn key(&self) -> Vec<&Value> {
        self.shape
            .key
            .iter()
            .map(|name| {
                self.shape
                    .columns
                    .iter()
                    .position(|c| &c.name == name)
                    .and_then(|i| self.row.get(i))
                    .unwrap_or(&Value::Null)
            })
            .collect()
    }
}

/// Where a record came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// How far a flush moves one partition's stored offset: from `expected`, the offset this
/// instance found in the warehouse when it took the partition (none: nothing stored), to
/// `next`, the offset after the last record the flush holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetClaim {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The stored offset the flush starts from.
    pub expected: Option<i64>,
    /// The offset stored by the flush.
    pub next: i64,
}
