//! A batch's rows as the staging table holds them: operation, position, unchanged list,
//! then one cell per column of the batch's shape (a delete carries only its key cells, but
//! for a keyless table its whole old row).

use crate::domain::value::Value;
use crate::sink::batch::PendingRow;
use crate::sink::record::SinkOp;
use crate::sink::shape::TableShape;

/// Read access to staged rows, cell by cell.
pub struct Staged<'a> {
    shape: &'a TableShape,
    rows: &'a [PendingRow],
    /// For each column, its index among the key columns.
    key_index: Vec<Option<usize>>,
}

const NULL: Value = Value::Null;

impl<'a> Staged<'a> {
    /// A view of `rows` in `shape`.
    pub fn new(shape: &'a TableShape, rows: &'a [PendingRow]) -> Self {
        let key_index = shape
            .columns
            .iter()
            .map(|c| shape.key.iter().position(|k| k == &c.name))
            .collect();
        Staged {
            shape,
            rows,
            key_index,
        }
    }

    /// The rows.
    pub fn rows(&self) -> &'a [PendingRow] {
        self.rows
    }

    /// The shape.
    pub fn shape(&self) -> &'a TableShape {
        self.shape
    }

    /// `u` or `d`.
    pub fn op(row: &PendingRow) -> &'static str {
        match row.op {
            SinkOp::Delete => "d",
            _ => "u",
        }
    }

    /// `,a,b,` for the row's unchanged columns, or none.
    pub fn unchanged(row: &PendingRow) -> Option<String> {
        (!row.unchanged.is_empty()).then(|| format!(",{},", row.unchanged.join(",")))
    }

    /// The cell of `row` in column `column`.
    pub fn cell(&self, row: &'a PendingRow, column: usize) -> &'a Value {
        match row.op {
            // A keyless table's delete carries its whole old row.
            SinkOp::Delete if !self.shape.key.is_empty() => self
                .key_index
                .get(column)
                .copied()
                .flatten()
                .and_then(|k| row.values.get(k))
                .unwrap_or(&NULL),
            _ => row.values.get(column).unwrap_or(&NULL),
        }
    }
}
