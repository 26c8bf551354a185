//! The hot-path Avro writer: events straight into Avro binary, with no intermediate value
//! tree and no allocation per record beyond the output buffer's growth.
//!
//! It writes exactly what [`super::avro::derive`] describes, field by field, following the
//! Avro specification's binary encoding: `int`/`long` as zig-zag varints, `float`/`double`
//! little-endian, `bytes`/`string` as a long length then the bytes, a union as the branch
//! index then the value, an array as one block (count, items) then a zero count, a record as
//! its fields in order. `decimal` is the unscaled value's two's-complement big-endian bytes.
//! Tests check every byte against apache-avro's own encoder of the same data
//! ([`super::avro::envelope_datum`]) and decode it back with apache-avro's reader.

use std::fmt::Write as _;

use super::avro::{AvroError, decimal_bytes, maps_to_string, special_decimal};
use crate::domain::column_type::TypeKind;
use crate::domain::event::{
    ChangeEvent, EnvelopeContext, Op, TableSchema, unavailable_placeholder, write_sequence,
};
use crate::domain::value::Value;

/// Writes a long as a zig-zag varint.
pub(crate) fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Writes a string or bytes: length, then the bytes.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn mismatch(column: &str, value: &Value, kind: &TypeKind) -> AvroError {
    AvroError::Value {
        column: column.to_owned(),
        detail: format!(
            "the value {value:?} does not fit the column's type {kind:?} (a bug: please report it)"
        ),
    }
}

/// Writes decimal text as an Avro decimal at `scale`: the unscaled value's minimal
/// two's-complement big-endian bytes. Values that fit an `i128` (precision up to 38) take
/// a path without allocation; the rest, and anything malformed, go through
/// [`decimal_bytes`], which also gives the errors.
fn write_decimal(out: &mut Vec<u8>, text: &str, scale: i32, column: &str) -> Result<(), AvroError> {
    match usize::try_from(scale)
        .ok()
        .and_then(|s| unscaled_i128(text, s))
    {
        Some(unscaled) => {
            let bytes = unscaled.to_be_bytes();
            let redundant = |i: usize| {
                (bytes[i] == 0x00 && bytes[i + 1] & 0x80 == 0)
                    || (bytes[i] == 0xff && bytes[i + 1] & 0x80 != 0)
            };
            let start = (0..bytes.len() - 1)
                .find(|&i| !redundant(i))
                .unwrap_or(bytes.len() - 1);
            write_bytes(out, &bytes[start..]);
        }
        None => write_bytes(out, &decimal_bytes(text, scale, column)?),
    }
    Ok(())
}

/// The unscaled value of well-formed decimal text at `scale`, if it fits an `i128`.
fn unscaled_i128(text: &str, scale: usize) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.len() > scale {
        return None;
    }
    let mut unscaled: i128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        if !digit.is_ascii_digit() {
            return None;
        }
        unscaled = unscaled
            .checked_mul(10)?
            .checked_add(i128::from(digit - b'0'))?;
    }
    for _ in fraction.len()..scale {
        unscaled = unscaled.checked_mul(10)?;
    }
    Some(if negative { -unscaled } else { unscaled })
}

/// Writes `value` as the Avro type that `kind` maps to (not nullable).
fn write_value(
    out: &mut Vec<u8>,
    value: &Value,
    kind: &TypeKind,
    column: &str,
) -> Result<(), AvroError> {
    match (value, kind) {
        (Value::Bool(v), TypeKind::Bool) => out.push(u8::from(*v)),
        (Value::Int16(v), TypeKind::Int2) => write_long(out, i64::from(*v)),
        (Value::Int32(v), TypeKind::Int4) => write_long(out, i64::from(*v)),
        (Value::Int64(v), TypeKind::Int8) => write_long(out, *v),
        (Value::Float32(v), TypeKind::Float4) => out.extend_from_slice(&v.to_le_bytes()),
        (Value::Float64(v), TypeKind::Float8) => out.extend_from_slice(&v.to_le_bytes()),
        (
            Value::Numeric(text),
            TypeKind::Numeric {
                precision: Some(_),
                scale: Some(scale),
            },
        ) if *scale >= 0 => write_decimal(out, text, *scale, column)?,
        (Value::Numeric(text) | Value::Text(text) | Value::Json(text), _)
            if maps_to_string(kind) =>
        {
            write_bytes(out, text.as_bytes())
        }
        (Value::Uuid(text), TypeKind::Uuid) => write_bytes(out, text.as_bytes()),
        (Value::Bytes(v), TypeKind::Bytea) => write_bytes(out, v),
        (Value::Date(v), TypeKind::Date) => write_long(out, i64::from(*v)),
        (Value::Time(v), TypeKind::Time)
        | (Value::Timestamp(v), TypeKind::Timestamp)
        | (Value::TimestampTz(v), TypeKind::TimestampTz) => write_long(out, *v),
        (Value::Array(items), TypeKind::Array(element)) => {
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    write_nullable(out, item, element, column)?;
                }
            }
            out.push(0);
        }
        (Value::Null, _) => {
            return Err(AvroError::Value {
                column: column.to_owned(),
                detail: "null in a key column; the key must identify the row".into(),
            });
        }
        _ => return Err(mismatch(column, value, kind)),
    }
    Ok(())
}

/// Whether `value` is an array of arrays in a column whose Avro type is an array of
/// scalars. PostgreSQL's array types carry no dimension count (`int[][]` is `int[]`), so the
/// schema is one-dimensional and a value of more dimensions cannot be written.
pub(crate) fn is_multidimensional(value: &Value, kind: &TypeKind) -> bool {
    match (value, kind) {
        (Value::Array(items), TypeKind::Array(element)) => {
            !matches!(**element, TypeKind::Array(_))
                && items.iter().any(|item| matches!(item, Value::Array(_)))
        }
        _ => false,
    }
}

/// Notes a multi-dimensional array written as null in Avro: a warning naming the remedy
/// and `tidemark_values_nulled_total{column}`, so one value never stops the stream.
pub(crate) fn note_multidimensional(column: &str) {
    metrics::counter!(crate::domain::decimal::VALUES_NULLED, "column" => column.to_owned())
        .increment(1);
    tracing::warn!(
        column,
        "an array of more than one dimension does not fit the column's one-dimensional Avro array and is written as null; use format = \"json\" (which keeps nested arrays) or a jsonb column to keep it"
    );
}

/// Writes `value` as `["null", T]`.
fn write_nullable(
    out: &mut Vec<u8>,
    value: &Value,
    kind: &TypeKind,
    column: &str,
) -> Result<(), AvroError> {
    if matches!(value, Value::Null) {
        out.push(0);
        Ok(())
    } else if let Some(special) = special_decimal(value, kind) {
        crate::domain::decimal::note_nulled(column, special);
        out.push(0);
        Ok(())
    } else if is_multidimensional(value, kind) {
        note_multidimensional(column);
        out.push(0);
        Ok(())
    } else {
        out.push(2); // zig-zag 1: the second branch
        write_value(out, value, kind, column)
    }
}

/// A row; the columns at `unavailable` (unchanged TOAST, not sent) hold Debezium's
/// placeholder where their type can.
fn write_row(
    out: &mut Vec<u8>,
    table: &TableSchema,
    row: &[Value],
    unavailable: &[usize],
    placeholder: &[u8],
) -> Result<(), AvroError> {
    for (index, (column, value)) in table.columns.iter().zip(row).enumerate() {
        let kind = &column.column_type.kind;
        if matches!(value, Value::Null) && unavailable.contains(&index) {
            if let Some(placeholder) = unavailable_placeholder(kind, placeholder) {
                write_nullable(out, &placeholder, kind, &column.name)?;
                continue;
            }
        }
        write_nullable(out, value, kind, &column.name)?;
    }
    Ok(())
}

fn write_optional_row(
    out: &mut Vec<u8>,
    table: &TableSchema,
    row: Option<&Vec<Value>>,
    unavailable: &[usize],
    placeholder: &[u8],
) -> Result<(), AvroError> {
    match row {
        None => out.push(0),
        Some(row) => {
            out.push(2);
            write_row(out, table, row, unavailable, placeholder)?;
        }
    }
    Ok(())
}

/// Writes Avro records of events; holds scratch space reused across records.
#[derive(Debug, Default, Clone)]
pub struct AvroWriter {
    scratch: String,
}

impl AvroWriter {
    /// Appends the key record of a table event to `out`; false when the event has no key
    /// (nothing written).
    pub fn key(&mut self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<bool, AvroError> {
        let Some(table) = event.table.as_deref() else {
            return Ok(false);
        };
        let key = table.record_key_columns();
        if key.is_empty() || matches!(event.op, Op::Truncate | Op::Message) {
            return Ok(false);
        }
        let row = match event.op {
            Op::Delete => event.before.as_ref(),
            _ => event.after.as_ref().or(event.before.as_ref()),
        };
        let Some(row) = row else {
            return Ok(false);
        };
        for &index in key {
            let (Some(column), Some(value)) = (table.columns.get(index), row.get(index)) else {
                return Err(AvroError::Encode(format!(
                    "key column {index} missing from a row of {}",
                    table.qualified_name()
                )));
            };
            write_value(out, value, &column.column_type.kind, &column.name)?;
        }
        Ok(true)
    }

    /// Appends the envelope record of a table event to `out`.
    pub fn envelope(
        &mut self,
        event: &ChangeEvent,
        context: &EnvelopeContext,
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Result<(), AvroError> {
        let table = event
            .table
            .as_deref()
            .ok_or_else(|| AvroError::Encode("a table event without its table".into()))?;
        let placeholder = &context.unavailable_value;
        write_optional_row(out, table, event.before.as_ref(), &[], placeholder)?;
        write_optional_row(
            out,
            table,
            event.after.as_ref(),
            &event.unchanged_toast,
            placeholder,
        )?;
        self.source(event, table, context, out);
        // transaction: ["null", block], filled as in JSON.
        let position = &event.source;
        if context.fills_transaction_block(event) {
            out.push(2);
            self.scratch.clear();
            let _ = write!(
                self.scratch,
                "{}:{}",
                position.xid,
                context.transaction_id_lsn(position).as_u64()
            );
            write_bytes(out, self.scratch.as_bytes());
            write_long(out, position.seq as i64 + 1);
            write_long(out, event.data_collection_order as i64);
        } else {
            out.push(0);
        }
        write_bytes(out, event.op.code().as_bytes());
        for value in [
            now_ms,
            now_ms.saturating_mul(1000),
            now_ms.saturating_mul(1_000_000),
        ] {
            out.push(2);
            write_long(out, value);
        }
        // unchanged_toast: array of string
        if !event.unchanged_toast.is_empty() {
            write_long(out, event.unchanged_toast.len() as i64);
            for &index in &event.unchanged_toast {
                let name = table.columns.get(index).map_or("", |c| c.name.as_str());
                write_bytes(out, name.as_bytes());
            }
        }
        out.push(0);
        Ok(())
    }

    /// The `source` block (`schemas/source.avsc`).
    fn source(
        &mut self,
        event: &ChangeEvent,
        table: &TableSchema,
        context: &EnvelopeContext,
        out: &mut Vec<u8>,
    ) {
        let position = &event.source;
        write_bytes(out, env!("CARGO_PKG_VERSION").as_bytes());
        write_bytes(out, b"postgresql");
        write_bytes(out, context.connector_name.as_bytes());
        write_long(out, position.commit_time_micros.div_euclid(1000));
        out.push(0); // snapshot: ["string", "null"], the string
        write_bytes(out, position.snapshot.as_str().as_bytes());
        write_bytes(out, context.database.as_bytes());
        // sequence: ["null", "string"], the JSON array text of domain::event::sequence
        out.push(2);
        self.scratch.clear();
        write_sequence(&mut self.scratch, position);
        write_bytes(out, self.scratch.as_bytes());
        for value in [
            position.commit_time_micros,
            position.commit_time_micros.saturating_mul(1000),
        ] {
            out.push(2);
            write_long(out, value);
        }
        out.push(2);
        write_bytes(out, table.schema.as_bytes());
        out.push(2);
        write_bytes(out, table.name.as_bytes());
        for value in [i64::from(position.xid), position.lsn.as_u64() as i64] {
            out.push(2);
            write_long(out, value);
        }
        out.extend_from_slice(&[0, 0, 0]); // xmin, origin, origin_lsn: null
        for value in [position.commit_lsn.as_u64() as i64, position.seq as i64] {
            out.push(2);
            write_long(out, value);
        }
    }
}

#[cfg(test)]
mod tests;
