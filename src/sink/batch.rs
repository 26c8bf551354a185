//! Per-table batches: the newest change per key by `(commit_lsn, seq)`, truncates, and the
//! unchanged-TOAST columns carried across folded changes.
//!
//! Folding keeps one change per key, so a batch of any size becomes one MERGE with no
//! duplicate keys in its source (which MERGE forbids). When the newest change of a key
//! says a TOASTed column was unchanged and an older change in the same batch carried its
//! value, that value is taken into the newest change, so folding never loses a value the
//! warehouse has not seen yet. A truncate drops every change of the batch older than it
//! and is applied before the MERGE. Changes older than a truncate already applied (the
//! warehouse's stored truncate position) are dropped as they arrive.
//!
//! A table without a key (no primary key; its records have no key) cannot be folded: its
//! inserts are appended, and its deletes and `REPLICA IDENTITY FULL` updates remove one
//! warehouse row equal to their old row ([`TableBatch::add_keyless`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::record::{Position, SinkOp, SinkRecord, SourceTable, TopicPartition};
use super::shape::TableShape;
use crate::domain::value::Value;

/// One key's newest change, or one change of a keyless table.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Upsert or delete.
    pub op: SinkOp,
    /// Position.
    pub position: Position,
    /// For upserts the row in the batch shape's column order; for deletes the key values
    /// in `shape.key` order, or for a keyless table the whole old row.
    pub values: Vec<Value>,
    /// Unchanged-TOAST columns of an upsert.
    pub unchanged: Vec<String>,
    /// The partition it came from (dropped if that partition is revoked).
    pub partition: Arc<TopicPartition>,
}

/// A table's pending changes.
#[derive(Debug)]
pub(crate) struct TableBatch {
    /// The source table.
    pub table: SourceTable,
    /// The shape every upsert of the batch has (a new shape closes the batch first).
    pub shape: Arc<TableShape>,
    /// The newest truncate of the batch.
    pub truncate: Option<Position>,
    rows: HashMap<Vec<u8>, PendingRow>,
    appended: Vec<PendingRow>,
    /// When the oldest pending change arrived.
    pub opened: Instant,
    /// Whether an upsert is among them (only upserts carry a whole shape to evolve to).
    pub has_upserts: bool,
}

fn key_bytes(values: &[&Value]) -> Vec<u8> {
    serde_json::to_vec(values).unwrap_or_default()
}

impl TableBatch {
    /// An empty batch of `table` with `shape`.
    pub fn new(table: SourceTable, shape: Arc<TableShape>) -> Self {
        TableBatch {
            table,
            shape,
            truncate: None,
            rows: HashMap::new(),
            appended: Vec::new(),
            opened: Instant::now(),
            has_upserts: false,
        }
    }

    /// Whether `record` must go in a new batch (its upsert shape differs).
    pub(crate) fn needs_new_batch(&self, record: &SinkRecord) -> bool {
        self.has_upserts
            && record.op == SinkOp::Upsert
            && !Arc::ptr_eq(&record.shape, &self.shape)
            && *record.shape != *self.shape
    }

    /// Takes `record`, folding it with the key's earlier change; `floor` is the table's
    /// applied truncate position (older changes are dropped).
    pub fn add(&mut self, record: SinkRecord, partition: &Arc<TopicPartition>, floor: Position) {
        if record.op == SinkOp::Upsert {
            if !self.has_upserts {
                self.shape = record.shape.clone();
            }
            self.has_upserts = true;
        }
        let floor = self.truncate.map_or(floor, |t| t.max(floor));
        if record.position < floor {
            return;
        }
        if record.op == SinkOp::Truncate {
            self.truncate = Some(record.position);
            let at = record.position;
            self.rows.retain(|_, row| row.position >= at);
            self.appended.retain(|row| row.position >= at);
            return;
        }
        if self.shape.key.is_empty() {
            self.add_keyless(record, partition);
            return;
        }
        // The key's bytes are taken before the record's row is moved into the batch.
        let key = key_bytes(&record.key());
        let values = match record.op {
            SinkOp::Delete => record.key().into_iter().cloned().collect(),
            _ => record.row,
        };
        let row = PendingRow {
            op: record.op,
            position: record.position,
            values,
            unchanged: record.unchanged,
            partition: partition.clone(),
        };
        match self.rows.get_mut(&key) {
            None => {
                self.rows.insert(key, row);
            }
            Some(older) if older.position > row.position => {}
            Some(older) => {
                let mut row = row;
                if row.op == SinkOp::Upsert && older.op == SinkOp::Upsert {
                    carry_unchanged(&self.shape, older, &mut row);
                }
                *older = row;
            }
        }
    }

    /// A keyless table's change, kept in order: an insert is appended; a delete, and an
    /// update with its old row (`REPLICA IDENTITY FULL`), remove one row equal to the old
    /// row. A removal of a row this batch appends cancels that append, so the removals
    /// left apply to rows already in the warehouse and can run before the appends.
    fn add_keyless(&mut self, record: SinkRecord, partition: &Arc<TopicPartition>) {
        let SinkRecord {
            op,
            position,
            row,
            unchanged,
            before,
            ..
        } = record;
        let (removed, added) = match op {
            SinkOp::Delete => (Some(row), None),
            _ => (before, Some(row)),
        };
        if let Some(old) = removed {
            let pending = self
                .appended
                .iter()
                .rposition(|row| row.op == SinkOp::Upsert && row.values == old);
            match pending {
                Some(index) => {
                    self.appended.remove(index);
                }
                None => self.appended.push(PendingRow {
                    op: SinkOp::Delete,
                    position,
                    values: old,
                    unchanged: Vec::new(),
                    partition: partition.clone(),
                }),
            }
        }
        if let Some(values) = added {
            self.appended.push(PendingRow {
                op: SinkOp::Upsert,
                position,
                values,
                unchanged,
                partition: partition.clone(),
            });
        }
    }

    /// Drops the changes that came from `revoked` partitions.
    pub(crate) fn forget_partitions(&mut self, revoked: &[TopicPartition]) {
        self.rows.retain(|_, row| !revoked.contains(&row.partition));
        self.appended
            .retain(|row| !revoked.contains(&row.partition));
    }

    /// Changes after folding.
    pub fn len(&self) -> usize {
        self.rows.len() + self.appended.len()
    }

    /// Nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.truncate.is_none()
    }

    /// The folded changes sorted by key, then a keyless table's removals and appends in
    /// arrival order.
    pub(crate) fn into_rows(self) -> (Option<Position>, Vec<PendingRow>) {
        let mut keyed: Vec<(Vec<u8>, PendingRow)> = self.rows.into_iter().collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rows: Vec<PendingRow> = keyed.into_iter().map(|(_, row)| row).collect();
        rows.extend(self.appended);
        (self.truncate, rows)
    }
}

/// Takes the older change's values for columns the newer one left unchanged.
fn carry_unchanged(shape: &TableShape, older: &PendingRow, newer: &mut PendingRow) {
    if newer.unchanged.is_empty() {
        return;
    }
    newer.unchanged.retain(|column| {
        if older.unchanged.contains(column) {
            return true;
        }
        let Some(index) = shape.columns.iter().position(|c| &c.name == column) else {
            return true;
        };
        match (older.values.get(index), newer.values.get_mut(index)) {
            (Some(value), Some(slot)) => {
                *slot = value.clone();
                false
            }
            _ => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::shape::{ColumnKind, SinkColumn};

    fn shape() -> Arc<TableShape> {
        Arc::new(TableShape {
            columns: vec![
                SinkColumn {
                    name: "id".into(),
                    kind: ColumnKind::Int32,
                },
                SinkColumn {
                    name: "doc".into(),
                    kind: ColumnKind::Text,
                },
            ],
            key: vec!["id".into()],
            renamed: Vec::new(),
        })
    }

    fn record(op: SinkOp, lsn: u64, id: i32, doc: Option<&str>, unchanged: bool) -> SinkRecord {
        SinkRecord {
            table: SourceTable {
                schema: "public".into(),
                name: "t".into(),
            },
            shape: shape(),
            op,
            position: Position {
                commit_lsn: lsn,
                seq: 0,
            },
            row: vec![
                Value::Int32(id),
                doc.map_or(Value::Null, |d| Value::Text(d.into())),
            ],
            unchanged: if unchanged {
                vec!["doc".into()]
            } else {
                vec![]
            },
            before: None,
        }
    }

    fn partition() -> Arc<TopicPartition> {
        Arc::new(TopicPartition {
            topic: "p.public.t".into(),
            partition: 0,
        })
    }

    #[test]
    fn newest_change_per_key_wins_and_carries_unchanged_toast() {
        let mut batch = TableBatch::new(
            SourceTable {
                schema: "public".into(),
                name: "t".into(),
            },
            shape(),
        );
        let p = partition();
        batch.add(
            record(SinkOp::Upsert, 10, 1, Some("big"), false),
            &p,
            Position::default(),
        );
        batch.add(
            record(SinkOp::Upsert, 20, 1, None, true),
            &p,
            Position::default(),
        );
        batch.add(
            record(SinkOp::Upsert, 15, 2, Some("x"), false),
            &p,
            Position::default(),
        );
        batch.add(
            record(SinkOp::Delete, 30, 2, None, false),
            &p,
            Position::default(),
        );
        batch.add(
            record(SinkOp::Upsert, 5, 2, Some("stale"), false),
            &p,
            Position::default(),
        );
        let (truncate, rows) = batch.into_rows();
        assert_eq!(truncate, None);
        assert_eq!(rows.len(), 2);
        let one = rows
            .iter()
            .find(|r| r.values.first() == Some(&Value::Int32(1)));
        assert_eq!(
            one.map(|r| r.values[1].clone()),
            Some(Value::Text("big".into()))
        );
        assert!(one.is_some_and(|r| r.unchanged.is_empty()));
        let two = rows
            .iter()
            .find(|r| r.values.first() == Some(&Value::Int32(2)));
        assert_eq!(two.map(|r| r.op), Some(SinkOp::Delete));
    }

    #[test]
    fn truncate_drops_older_changes_and_the_floor_drops_stale_ones() {
        let mut batch = TableBatch::new(
            SourceTable {
                schema: "public".into(),
                name: "t".into(),
            },
            shape(),
        );
        let p = partition();
        let floor = Position {
            commit_lsn: 8,
            seq: 0,
        };
        batch.add(
            record(SinkOp::Upsert, 5, 9, Some("before floor"), false),
            &p,
            floor,
        );
        batch.add(record(SinkOp::Upsert, 10, 1, Some("a"), false), &p, floor);
        let mut truncate = record(SinkOp::Truncate, 20, 0, None, false);
        truncate.row.clear();
        batch.add(truncate, &p, floor);
        batch.add(record(SinkOp::Upsert, 30, 2, Some("b"), false), &p, floor);
        let (truncate, rows) = batch.into_rows();
        assert_eq!(truncate.map(|t| t.commit_lsn), Some(20));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].values[0], Value::Int32(2));
    }

    #[test]
    fn a_keyless_batch_cancels_its_own_rows_and_removes_older_ones_by_value() {
        let keyless = Arc::new(TableShape {
            key: Vec::new(),
            ..(*shape()).clone()
        });
        let mut batch = TableBatch::new(
            SourceTable {
                schema: "public".into(),
                name: "t".into(),
            },
            keyless.clone(),
        );
        let p = partition();
        let row = |id: i32, doc: &str| vec![Value::Int32(id), Value::Text(doc.into())];
        let change =
            |op: SinkOp, lsn: u64, row: Vec<Value>, before: Option<Vec<Value>>| SinkRecord {
                shape: keyless.clone(),
                row,
                before,
                ..record(op, lsn, 0, None, false)
            };
        let floor = Position::default();
        // Two equal inserts; an update of one of them cancels it in the batch.
        batch.add(change(SinkOp::Upsert, 1, row(1, "a"), None), &p, floor);
        batch.add(change(SinkOp::Upsert, 2, row(1, "a"), None), &p, floor);
        batch.add(
            change(SinkOp::Upsert, 3, row(1, "b"), Some(row(1, "a"))),
            &p,
            floor,
        );
        // An update and a delete of rows the warehouse already holds.
        batch.add(
            change(SinkOp::Upsert, 4, row(9, "y"), Some(row(9, "x"))),
            &p,
            floor,
        );
        batch.add(change(SinkOp::Delete, 5, row(8, "z"), None), &p, floor);
        let (_, rows) = batch.into_rows();
        let summary: Vec<(SinkOp, Vec<Value>)> =
            rows.into_iter().map(|r| (r.op, r.values)).collect();
        assert_eq!(
            summary,
            vec![
                (SinkOp::Upsert, row(1, "a")),
                (SinkOp::Upsert, row(1, "b")),
                (SinkOp::Delete, row(9, "x")),
                (SinkOp::Upsert, row(9, "y")),
                (SinkOp::Delete, row(8, "z")),
            ]
        );
    }
}
