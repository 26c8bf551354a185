//! Rows of `COPY … TO STDOUT` in PostgreSQL's text format, decoded into [`Value`]s.
//!
//! The text format is one row per line, columns separated by a tab, `\N` for NULL, and
//! backslash escapes for the bytes that would be ambiguous (`\\`, `\t`, `\n`, `\r`, `\b`,
//! `\f`, `\v`; COPY FROM also accepts octal `\ooo` and hex `\xhh`, decoded here too). Once a
//! field is unescaped it is exactly the type's output function text, the same text pgoutput
//! sends, so it goes through the same [`decode_text`] as streamed values: a snapshot row and
//! a streamed row of the same value decode to the same [`Value`] and encode to the same bytes.
//!
//! Text is used rather than binary COPY for that reason: one decoder per type, shared with
//! the stream, and a format whose cost is dominated by PostgreSQL's own output functions.

use std::borrow::Cow;

use crate::domain::event::TableSchema;
use crate::domain::value::Value;
use crate::source::text_decode::{ValueError, decode_text};

/// A COPY row that does not fit its table.
#[derive(Debug, thiserror::Error)]
pub enum CopyRowError {
    /// The row has a different number of columns than the table.
    #[error(
        "a COPY row of {table} has {found} columns, the table has {expected} (was it altered while it was read?); the chunk is not confirmed and is read again after a restart"
    )]
    ColumnCount {
        /// Table.
        table: String,
        /// Columns found.
        found: usize,
        /// Columns expected.
        expected: usize,
    },
    /// A value did not decode.
    #[error(
        "column {column} of {table}: {source}; the chunk is not confirmed; if a restart fails the same way, report this with the column's type"
    )]
    Value {
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Why.
        source: ValueError,
    },
}

/// Removes COPY's backslash escapes; borrows when there are none.
pub(crate) fn unescape(field: &[u8]) -> Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return Cow::Borrowed(field);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let byte = field[i];
        if byte != b'\\' || i + 1 == field.len() {
            out.push(byte);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// Decodes one line (without its newline) into the table's column values.
pub(crate) fn decode_row(table: &TableSchema, line: &[u8]) -> Result<Vec<Value>, CopyRowError> {
    let mut values = Vec::with_capacity(table.columns.len());
    let mut fields = line.split(|&b| b == b'\t');
    for column in &table.columns {
        let Some(field) = fields.next() else {
            return Err(CopyRowError::ColumnCount {
                table: table.qualified_name(),
                found: values.len(),
                expected: table.columns.len(),
            });
        };
        if field == b"\\N" {
            values.push(Value::Null);
            continue;
        }
        let text = unescape(field);
        let value =
            decode_text(&column.column_type.kind, &text).map_err(|source| CopyRowError::Value {
                table: table.qualified_name(),
                column: column.name.clone(),
                source,
            })?;
        values.push(value);
    }
    let extra = fields.count();
    if extra > 0 {
        return Err(CopyRowError::ColumnCount {
            table: table.qualified_name(),
            found: table.columns.len() + extra,
            expected: table.columns.len(),
        });
    }
    Ok(values)
}

/// Splits COPY data (which may arrive in pieces that cut rows anywhere) into whole lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    carry: Vec<u8>,
}

impl LineSplitter {
    /// Calls `each` for every complete line in `chunk` (after any carried partial line).
    pub fn push<E>(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.carry.extend_from_slice(&rest[..end]);
                    let line = std::mem::take(&mut self.carry);
                    each(&line)?;
                    rest = &rest[end + 1..];
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    return Ok(());
                }
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            each(&rest[..end])?;
            rest = &rest[end + 1..];
        }
        self.carry.extend_from_slice(rest);
        Ok(())
    }

    /// Whether a partial line is left over (a truncated stream).
    pub(crate) fn has_partial_line(&self) -> bool {
        !self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::column_type::TypeKind;
    use crate::domain::event::ReplicaIdentity;
    use crate::domain::event::{Column, KeySource};

    fn table() -> TableSchema {
        TableSchema {
            relation_id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                Column::new("id", TypeKind::Int4),
                Column::new("note", TypeKind::Text),
                Column::new("data", TypeKind::Bytea),
            ],
            key_columns: vec![0],
            key_source: KeySource::PrimaryKey,
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn unescapes_every_form() {
        assert_eq!(&*unescape(b"plain"), b"plain");
        assert_eq!(
            &*unescape(b"a\\tb\\nc\\\\d\\re\\bf\\fg\\vh"),
            b"a\tb\nc\\d\re\x08f\x0cg\x0bh"
        );
        assert_eq!(&*unescape(b"\\101\\x41\\7"), b"AA\x07");
        assert_eq!(&*unescape(b"trailing\\"), b"trailing\\");
    }

    #[test]
    fn decodes_rows_with_nulls_and_escapes() {
        let row = decode_row(&table(), b"7\ttab\\there\\\\\t\\N").unwrap();
        assert_eq!(
            row,
            vec![
                Value::Int32(7),
                Value::Text("tab\there\\".into()),
                Value::Null
            ]
        );
        let empty = decode_row(&table(), b"8\t\t\\\\x00ff").unwrap();
        assert_eq!(empty[1], Value::Text(String::new()));
        assert_eq!(empty[2], Value::Bytes(vec![0, 0xff]));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(matches!(
            decode_row(&table(), b"1\tx"),
            Err(CopyRowError::ColumnCount { found: 2, .. })
        ));
        assert!(matches!(
            decode_row(&table(), b"1\tx\t\\N\textra"),
            Err(CopyRowError::ColumnCount { found: 4, .. })
        ));
        assert!(matches!(
            decode_row(&table(), b"one\tx\t\\N"),
            Err(CopyRowError::Value { .. })
        ));
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for piece in [&b"1\ta\n2\t"[..], b"b", b"\n3\tc\n", b"4\td\n"] {
            splitter
                .push::<()>(piece, |line| {
                    lines.push(line.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(
            lines,
            vec![
                b"1\ta".to_vec(),
                b"2\tb".to_vec(),
                b"3\tc".to_vec(),
                b"4\td".to_vec()
            ]
        );
        assert!(!splitter.has_partial_line());
    }
}
