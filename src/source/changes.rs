//! Assembling change events from decoded pgoutput messages.
//!
//! [`ChangeAssembler`] keeps the table descriptions by relation id (replaced whenever a new
//! Relation message arrives, e.g. after DDL) and the context of the transaction being
//! assembled (xid, commit LSN, commit time, the running sequence number), and turns each
//! Insert, Update, Delete, Truncate and transactional Message into [`ChangeEvent`]s.
//!
//! Rules that make the events right for every replica identity:
//!
//! - An Update that carries an old key (`K`) or old row (`O`) whose primary-key (or identity
//!   index) columns differ from the new row's is a key change: it becomes a delete of the old key followed by a create of the
//!   new one, as Debezium emits it, so each key's history stays on its own partition.
//! - An Update without an old image (`REPLICA IDENTITY DEFAULT`, key unchanged) has
//!   `before = null`; with `FULL` the old row is `before`.
//! - A delete's `before` under `DEFAULT`/`INDEX` has the key columns and nulls elsewhere.
//! - An unchanged TOASTed column (`u`) is null in `after` and listed in `unchanged_toast`;
//!   when the old row (`FULL`) holds the value, it is copied instead and not listed.
//! - An Update or Delete of a table with no key and identity other than FULL cannot be
//!   applied downstream: it is an error naming the table and the remedy, or is skipped with
//!   a warning when the policy says so.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::UnidentifiedRowPolicy;
use crate::domain::column_type::TypeKind;
use crate::domain::event::{
    ChangeEvent, Column, KeyChange, KeySource, LogicalMessage, Op, SourcePosition, TableSchema,
    TruncateOptions, holds_placeholder,
};
use crate::domain::lsn::Lsn;
use crate::domain::value::Value;
use crate::source::pgoutput::{OldTupleKind, PgOutputMessage, Tuple, TupleValue};
use crate::source::text_decode::{ValueError, decode_text};

/// Errors assembling events.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// A data message names a relation no Relation message described.
    #[error(
        "change for relation OID {0} arrived before its Relation message; the replication stream is inconsistent, restart the connector"
    )]
    UnknownRelation(u32),
    /// A value does not decode as its column's type.
    #[error(
        "column {table}.{column}: {source}; nothing from this transaction on was confirmed, so a restart reads it again; if it fails again, report this message"
    )]
    Value {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Cause.
        source: ValueError,
    },
    /// A tuple has a different number of columns than the relation.
    #[error(
        "table {table}: tuple has {got} columns, the Relation message {expected}; nothing from this transaction on was confirmed, so a restart reads it again; if it fails again, report this message"
    )]
    ColumnCount {
        /// Table.
        table: String,
        /// Columns described.
        expected: usize,
        /// Columns received.
        got: usize,
    },
    /// A value arrived in binary format, which tidemark never requests.
    #[error(
        "column {table}.{column} arrived in binary format, which tidemark does not request; check that no other client streams from this slot with binary 'true' (each connector needs its own slot)"
    )]
    BinaryValue {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// An update or delete on a table that cannot identify its rows.
    #[error(
        "table {table} has no primary key and REPLICA IDENTITY is not FULL, so its {op} cannot be applied downstream; run ALTER TABLE {table} REPLICA IDENTITY FULL (or add a primary key), or set source.unidentified_rows = \"skip\""
    )]
    UnidentifiableRow {
        /// Table.
        table: String,
        /// `update` or `delete`.
        op: &'static str,
    },
    /// A data message outside a transaction.
    #[error(
        "{0} message outside a transaction; nothing from this transaction on was confirmed, so a restart reads it again; if it fails again, report this message"
    )]
    OutsideTransaction(&'static str),
}

/// Context of the transaction being assembled.
#[derive(Debug, Clone, Default)]
struct TransactionContext {
    xid: u32,
    commit_lsn: Lsn,
    commit_time_micros: i64,
    last_commit_end: Option<Lsn>,
    /// The LSN of its first change, once one was assembled.
    first_lsn: Option<Lsn>,
    next_seq: u64,
    per_table: HashMap<u32, u64>,
}

/// Turns decoded messages into events.
#[derive(Debug, Default)]
pub struct ChangeAssembler {
    relations: HashMap<u32, Arc<TableSchema>>,
    transaction: Option<TransactionContext>,
    policy: UnidentifiedRowPolicy,
    skipped: u64,
    /// The end of the last commit record read ([`SourcePosition::last_commit_end`]).
    last_commit_end: Option<Lsn>,
}

impl ChangeAssembler {
    /// An assembler with the given policy for unidentifiable rows.
    pub fn new(policy: UnidentifiedRowPolicy) -> Self {
        ChangeAssembler {
            policy,
            ..Default::default()
        }
    }

    /// Records (or replaces) a table description.
    pub fn set_relation(&mut self, table: TableSchema) {
        self.relations.insert(table.relation_id, Arc::new(table));
    }

    /// Changes skipped under [`UnidentifiedRowPolicy::Skip`].
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Starts a transaction.
    pub fn begin(&mut self, xid: u32, commit_lsn: Lsn, commit_time_micros: i64) {
        self.transaction = Some(TransactionContext {
            xid,
            commit_lsn,
            commit_time_micros,
            last_commit_end: self.last_commit_end,
            ..Default::default()
        });
    }

    /// Ends the current transaction, whose commit record ends at `end_lsn`.
    pub fn end(&mut self, end_lsn: Lsn) {
        self.transaction = None;
        self.last_commit_end = Some(end_lsn);
    }

    /// Whether a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Drops any open transaction (after a lost connection).
    pub(crate) fn reset_transaction(&mut self) {
        self.transaction = None;
    }

    /// Turns a data message at WAL position `lsn` into events appended to `out`.
    /// Messages that carry no data (Begin, Relation, …) are ignored here.
    pub fn assemble(
        &mut self,
        message: &PgOutputMessage,
        lsn: Lsn,
        out: &mut Vec<ChangeEvent>,
    ) -> Result<(), AssemblyError> {
        match message {
            PgOutputMessage::Insert {
                relation_id, new, ..
            } => {
                let table = self.table(*relation_id)?;
                let (after, toast) = decode_tuple(&table, new, None)?;
                self.push(out, Op::Create, &table, None, Some(after), toast, lsn)?;
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
                ..
            } => {
                let table = self.table(*relation_id)?;
                if !self.check_identifiable(&table, "update")? {
                    return Ok(());
                }
                let before = match old {
                    Some((kind, tuple)) => Some((*kind, decode_tuple(&table, tuple, None)?.0)),
                    None => None,
                };
                let full_old = before
                    .as_ref()
                    .filter(|(kind, _)| *kind == OldTupleKind::Full)
                    .map(|(_, row)| row.as_slice());
                let (after, toast) = decode_tuple(&table, new, full_old)?;
                let has_real_key = matches!(
                    table.key_source,
                    KeySource::PrimaryKey | KeySource::IdentityIndex
                );
                let key_changed = has_real_key
                    && before.as_ref().is_some_and(|(_, old_row)| {
                        table
                            .key_columns
                            .iter()
                            .any(|&i| old_row.get(i) != after.get(i))
                    });
                if key_changed {
                    let before_row = before.map(|(_, row)| row);
                    let key_of = |row: &[Value]| -> Vec<Value> {
                        table
                            .key_columns
                            .iter()
                            .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    let old_key = before_row.as_deref().map(key_of);
                    let new_key = key_of(&after);
                    self.push(out, Op::Delete, &table, before_row, None, Vec::new(), lsn)?
                        .key_change = Some(KeyChange::NewKey(new_key));
                    self.push(out, Op::Create, &table, None, Some(after), toast, lsn)?
                        .key_change = old_key.map(KeyChange::OldKey);
                } else {
                    let before_row = before
                        .filter(|(kind, _)| *kind == OldTupleKind::Full)
                        .map(|(_, row)| row);
                    self.push(out, Op::Update, &table, before_row, Some(after), toast, lsn)?;
                }
            }
            PgOutputMessage::Delete {
                relation_id, old, ..
            } => {
                let table = self.table(*relation_id)?;
                if !self.check_identifiable(&table, "delete")? {
                    return Ok(());
                }
                let (before, _) = decode_tuple(&table, &old.1, None)?;
                self.push(out, Op::Delete, &table, Some(before), None, Vec::new(), lsn)?;
            }
            PgOutputMessage::Truncate {
                cascade,
                restart_identity,
                relation_ids,
                ..
            } => {
                for id in relation_ids {
                    let table = self.table(*id)?;
                    let options = TruncateOptions {
                        cascade: *cascade,
                        restart_identity: *restart_identity,
                    };
                    let event = self.event(Op::Truncate, Some(&table), lsn)?;
                    out.push(ChangeEvent {
                        truncate: Some(options),
                        ..event
                    });
                }
            }
            PgOutputMessage::Message {
                transactional,
                lsn: message_lsn,
                prefix,
                content,
                ..
            } => {
                let message = LogicalMessage {
                    prefix: prefix.clone(),
                    content: content.clone(),
                    transactional: *transactional,
                };
                let event = if *transactional {
                    self.event(Op::Message, None, *message_lsn)?
                } else {
                    // No transaction, so no commit time: the time it is read, as Debezium
                    // does (never 0, which reads as 1970 downstream).
                    let mut event = bare_event(Op::Message, *message_lsn);
                    event.source.commit_time_micros = crate::domain::event::now_ms() * 1000;
                    // Debezium's sequence for it: its own LSN twice.
                    event.source.last_commit_end = Some(*message_lsn);
                    event
                };
                out.push(ChangeEvent {
                    message: Some(message),
                    ..event
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether an update/delete of `table` can be applied downstream: `Ok(false)` means skip
    /// it (policy `skip`), an error means stop (policy `fail`).
    fn check_identifiable(
        &mut self,
        table: &TableSchema,
        op: &'static str,
    ) -> Result<bool, AssemblyError> {
        if table.identifies_rows() {
            return Ok(true);
        }
        match self.policy {
            UnidentifiedRowPolicy::Fail => Err(AssemblyError::UnidentifiableRow {
                table: table.qualified_name(),
                op,
            }),
            UnidentifiedRowPolicy::Skip => {
                self.skipped += 1;
                tracing::warn!(table = %table.qualified_name(), op,
                    "skipping a change that cannot identify its row (source.unidentified_rows = \"skip\")");
                Ok(false)
            }
        }
    }

    fn table(&self, id: u32) -> Result<Arc<TableSchema>, AssemblyError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or(AssemblyError::UnknownRelation(id))
    }

    fn event(
        &mut self,
        op: Op,
        table: Option<&Arc<TableSchema>>,
        lsn: Lsn,
    ) -> Result<ChangeEvent, AssemblyError> {
        let what = match op {
            Op::Truncate => "Truncate",
            Op::Message => "Message",
            _ => "row change",
        };
        let txn = self
            .transaction
            .as_mut()
            .ok_or(AssemblyError::OutsideTransaction(what))?;
        let seq = txn.next_seq;
        txn.next_seq += 1;
        let first_lsn = *txn.first_lsn.get_or_insert(lsn);
        let data_collection_order = match table {
            Some(t) => {
                let count = txn.per_table.entry(t.relation_id).or_insert(0);
                *count += 1;
                *count
            }
            None => seq + 1,
        };
        Ok(ChangeEvent {
            op,
            table: table.cloned(),
            before: None,
            after: None,
            unchanged_toast: Vec::new(),
            source: SourcePosition {
                lsn,
                commit_lsn: txn.commit_lsn,
                seq,
                xid: txn.xid,
                commit_time_micros: txn.commit_time_micros,
                snapshot: Default::default(),
                last_commit_end: txn.last_commit_end,
                first_lsn,
            },
            data_collection_order,
            message: None,
            truncate: None,
            key_change: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn push<'o>(
        &mut self,
        out: &'o mut Vec<ChangeEvent>,
        op: Op,
        table: &Arc<TableSchema>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        unchanged_toast: Vec<usize>,
        lsn: Lsn,
    ) -> Result<&'o mut ChangeEvent, AssemblyError> {
        let relaxed = after
            .as_deref()
            .and_then(|row| self.nullable_where_null(table, row, &unchanged_toast));
        let table = relaxed.as_ref().unwrap_or(table);
        let event = self.event(op, Some(table), lsn)?;
        out.push(ChangeEvent {
            before,
            after,
            unchanged_toast,
            ..event
        });
        let pushed = out.len() - 1;
        Ok(&mut out[pushed])
    }
}

impl ChangeAssembler {
    /// The description of `table` with its NOT NULL columns that hold a NULL in `row`
    /// (unchanged TOAST aside) made nullable, kept for the relation from here on; none when
    /// there are no such columns (the common case costs one pass over the row). The
    /// catalog is read when a Relation message arrives, so it can be ahead of the stream
    /// (`SET NOT NULL` after this row was written) or, for a description reused for an
    /// identical Relation message, behind it (`DROP NOT NULL`): either way the row is the
    /// truth, and a schema that declared the column required would make Debezium's
    /// JsonConverter refuse the record.
    fn nullable_where_null(
        &mut self,
        table: &Arc<TableSchema>,
        row: &[Value],
        unchanged_toast: &[usize],
    ) -> Option<Arc<TableSchema>> {
        // An unchanged TOASTed value is written as Debezium's placeholder where its type has
        // one (not a decimal, which may have none), else it is a null too.
        let null_in_not_null = |(index, (column, value)): (usize, (&Column, &Value))| {
            let kind = &column.column_type.kind;
            let placeheld = unchanged_toast.contains(&index)
                && !matches!(kind, TypeKind::Numeric { .. })
                && holds_placeholder(kind);
            (column.not_null && matches!(value, Value::Null) && !placeheld).then_some(index)
        };
        if !table
            .columns
            .iter()
            .zip(row)
            .enumerate()
            .any(|entry| null_in_not_null(entry).is_some())
        {
            return None;
        }
        let mut relaxed = TableSchema::clone(table);
        for index in table
            .columns
            .iter()
            .zip(row)
            .enumerate()
            .filter_map(null_in_not_null)
        {
            let column = &mut relaxed.columns[index];
            column.not_null = false;
            tracing::warn!(
                table = %table.qualified_name(),
                column = %column.name,
                "a NULL arrived in a column described as NOT NULL (the constraint changed \
                 between the row and the table's description, or an unchanged TOASTed value \
                 of a type without Debezium's placeholder): the column is declared optional \
                 from here on"
            );
        }
        let relaxed = Arc::new(relaxed);
        self.relations.insert(table.relation_id, relaxed.clone());
        Some(relaxed)
    }
}

fn bare_event(op: Op, lsn: Lsn) -> ChangeEvent {
    ChangeEvent {
        op,
        table: None,
        before: None,
        after: None,
        unchanged_toast: Vec::new(),
        source: SourcePosition {
            lsn,
            commit_lsn: lsn,
            ..Default::default()
        },
        data_collection_order: 1,
        message: None,
        truncate: None,
        key_change: None,
    }
}

/// Decodes a tuple; unchanged TOAST values are taken from `old_full` when it has them.
fn decode_tuple(
    table: &TableSchema,
    tuple: &Tuple,
    old_full: Option<&[Value]>,
) -> Result<(Vec<Value>, Vec<usize>), AssemblyError> {
    if tuple.len() != table.columns.len() {
        return Err(AssemblyError::ColumnCount {
            table: table.qualified_name(),
            expected: table.columns.len(),
            got: tuple.len(),
        });
    }
    let mut row = Vec::with_capacity(tuple.len());
    let mut toast = Vec::new();
    for (i, (value, column)) in tuple.iter().zip(&table.columns).enumerate() {
        row.push(match value {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => match old_full.and_then(|old| old.get(i)) {
                Some(v) => v.clone(),
                None => {
                    toast.push(i);
                    Value::Null
                }
            },
            TupleValue::Text(bytes) => {
                decode_text(&column.column_type.kind, bytes).map_err(|source| {
                    AssemblyError::Value {
                        table: table.qualified_name(),
                        column: column.name.clone(),
                        source,
                    }
                })?
            }
            TupleValue::Binary(_) => {
                return Err(AssemblyError::BinaryValue {
                    table: table.qualified_name(),
                    column: column.name.clone(),
                });
            }
        });
    }
    Ok((row, toast))
}

#[cfg(test)]
mod tests;
