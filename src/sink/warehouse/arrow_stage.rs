//! Staged rows as an Arrow record batch, which DuckDB's appender takes in one call with
//! every type native: decimals as `Decimal128`, lists as lists (nulls kept at every
//! level), timestamps in microseconds. Values DuckDB has no type for arrive as strings
//! (unconstrained numerics, decimals wider than 38 digits, UUIDs, JSON, everything carried
//! as text). `-infinity` dates and timestamps become DuckDB's own `-infinity` encodings.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, ListArray, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use duckdb::arrow::buffer::{NullBuffer, OffsetBuffer};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use duckdb::arrow::record_batch::RecordBatch;

use super::staged::Staged;
use crate::domain::value::{DATE_NEG_INFINITY, TIMESTAMP_NEG_INFINITY, Value};
use crate::sink::shape::ColumnKind;

/// The Arrow type a column kind is staged as.
pub fn data_type(kind: &ColumnKind) -> DataType {
    match kind {
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::Int16 => DataType::Int16,
        ColumnKind::Int32 => DataType::Int32,
        ColumnKind::Int64 => DataType::Int64,
        ColumnKind::Float32 => DataType::Float32,
        ColumnKind::Float64 => DataType::Float64,
        ColumnKind::Decimal { precision, scale } if *precision <= 38 => {
            DataType::Decimal128(*precision as u8, *scale as i8)
        }
        ColumnKind::Bytes => DataType::Binary,
        ColumnKind::Date => DataType::Date32,
        ColumnKind::Time => DataType::Time64(TimeUnit::Microsecond),
        ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnKind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnKind::Array(inner) => {
            DataType::List(Arc::new(Field::new("l", data_type(inner), true)))
        }
        _ => DataType::Utf8,
    }
}

/// Why a value cannot be staged.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {detail}")]
pub struct StageError {
    /// Column.
    pub column: String,
    /// What is wrong.
    pub detail: String,
}

fn bad(column: &str, detail: impl Into<String>) -> StageError {
    StageError {
        column: column.to_owned(),
        detail: detail.into(),
    }
}

/// The unscaled `i128` of exact decimal text at `scale`.
pub(crate) fn decimal_unscaled(text: &str, scale: u32, column: &str) -> Result<i128, StageError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = scale as usize;
    if fraction.len() > scale
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad(
            column,
            format!("{text:?} is not a decimal of scale {scale}"),
        ));
    }
    let mut unscaled: i128 = 0;
    for c in whole
        .chars()
        .chain(fraction.chars())
        .chain(std::iter::repeat_n('0', scale - fraction.len()))
    {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|u| u.checked_add(i128::from(c as u8 - b'0')))
            .ok_or_else(|| bad(column, format!("{text:?} exceeds 38 digits")))?;
    }
    Ok(if negative { -unscaled } else { unscaled })
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Numeric(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => Some(s.clone()),
        other => {
            let mut text = String::new();
            super::pg_text::value_text(other, &mut text);
            Some(text)
        }
    }
}

fn mismatch(column: &str, kind: &ColumnKind, value: &Value) -> StageError {
    bad(column, format!("{value:?} is not a {kind:?}"))
}

/// An Arrow array of `values`, all of `kind`.
pub(crate) fn array_of(
    kind: &ColumnKind,
    values: &[&Value],
    column: &str,
) -> Result<ArrayRef, StageError> {
    macro_rules! typed {
        ($array:ty, $pattern:pat => $out:expr) => {{
            let mut items = Vec::with_capacity(values.len());
            for value in values {
                items.push(match value {
                    Value::Null => None,
                    $pattern => Some($out),
                    other => return Err(mismatch(column, kind, other)),
                });
            }
            Arc::new(<$array>::from(items)) as ArrayRef
        }};
    }
    Ok(match kind {
        ColumnKind::Bool => typed!(BooleanArray, Value::Bool(v) => *v),
        ColumnKind::Int16 => typed!(Int16Array, Value::Int16(v) => *v),
        ColumnKind::Int32 => typed!(Int32Array, Value::Int32(v) => *v),
        ColumnKind::Int64 => typed!(Int64Array, Value::Int64(v) => *v),
        ColumnKind::Float32 => typed!(Float32Array, Value::Float32(v) => *v),
        ColumnKind::Float64 => typed!(Float64Array, Value::Float64(v) => *v),
        ColumnKind::Date => typed!(Date32Array, Value::Date(v) => {
            if *v == DATE_NEG_INFINITY { -i32::MAX } else { *v }
        }),
        ColumnKind::Time => typed!(Time64MicrosecondArray, Value::Time(v) => *v),
        ColumnKind::Timestamp => typed!(TimestampMicrosecondArray, Value::Timestamp(v) => {
            if *v == TIMESTAMP_NEG_INFINITY { -i64::MAX } else { *v }
        }),
        ColumnKind::TimestampTz => {
            let mut items = Vec::with_capacity(values.len());
            for value in values {
                items.push(match value {
                    Value::Null => None,
                    Value::TimestampTz(v) if *v == TIMESTAMP_NEG_INFINITY => Some(-i64::MAX),
                    Value::TimestampTz(v) => Some(*v),
                    other => return Err(mismatch(column, kind, other)),
                });
            }
            Arc::new(TimestampMicrosecondArray::from(items).with_timezone("UTC")) as ArrayRef
        }
        ColumnKind::Bytes => {
            let mut items: Vec<Option<&[u8]>> = Vec::with_capacity(values.len());
            for value in values {
                items.push(match value {
                    Value::Null => None,
                    Value::Bytes(b) => Some(b.as_slice()),
                    other => return Err(mismatch(column, kind, other)),
                });
            }
            Arc::new(BinaryArray::from(items)) as ArrayRef
        }
        ColumnKind::Decimal { precision, scale } if *precision <= 38 => {
            let mut items = Vec::with_capacity(values.len());
            for value in values {
                items.push(match value {
                    Value::Null => None,
                    Value::Numeric(text) => Some(decimal_unscaled(text, *scale, column)?),
                    other => return Err(mismatch(column, kind, other)),
                });
            }
            let array = Decimal128Array::from(items)
                .with_precision_and_scale(*precision as u8, *scale as i8)
                .map_err(|e| bad(column, e.to_string()))?;
            Arc::new(array) as ArrayRef
        }
        ColumnKind::Array(inner) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            let mut valid = Vec::with_capacity(values.len());
            let mut children: Vec<&Value> = Vec::new();
            offsets.push(0i32);
            for value in values {
                match value {
                    Value::Null => valid.push(false),
                    Value::Array(items) => {
                        valid.push(true);
                        children.extend(items.iter());
                    }
                    other => return Err(mismatch(column, kind, other)),
                }
                let end = i32::try_from(children.len())
                    .map_err(|_| bad(column, "more than 2^31 array items in one batch"))?;
                offsets.push(end);
            }
            let child = array_of(inner, &children, column)?;
            let field = Arc::new(Field::new("l", data_type(inner), true));
            let list = ListArray::try_new(
                field,
                OffsetBuffer::new(offsets.into()),
                child,
                Some(NullBuffer::from(valid)),
            )
            .map_err(|e| bad(column, e.to_string()))?;
            Arc::new(list) as ArrayRef
        }
        _ => {
            let items: Vec<Option<String>> = values.iter().map(|v| text_of(v)).collect();
            Arc::new(StringArray::from(items)) as ArrayRef
        }
    })
}

/// The staged rows as one record batch, columns as [`crate::sink::dialect::Dialect::stage_columns`].
pub fn record_batch(staged: &Staged<'_>) -> Result<RecordBatch, StageError> {
    let rows = staged.rows();
    let shape = staged.shape();
    let mut fields = vec![
        Field::new("__op", DataType::Utf8, false),
        Field::new("__lsn", DataType::Int64, false),
        Field::new("__seq", DataType::Int64, false),
        Field::new("__unchanged", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(Staged::op))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.position.commit_lsn as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.position.seq as i64),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(Staged::unchanged).collect::<Vec<_>>(),
        )),
    ];
    let mut cells: Vec<&Value> = Vec::with_capacity(rows.len());
    for (index, column) in shape.columns.iter().enumerate() {
        cells.clear();
        cells.extend(rows.iter().map(|row| staged.cell(row, index)));
        columns.push(array_of(&column.kind, &cells, &column.name)?);
        fields.push(Field::new(&column.name, data_type(&column.kind), true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| bad("(batch)", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(decimal_unscaled("-12.5", 2, "c").ok(), Some(-1250));
        assert_eq!(decimal_unscaled("0.01", 2, "c").ok(), Some(1));
        assert!(decimal_unscaled("1.234", 2, "c").is_err());
        assert!(decimal_unscaled("NaN", 2, "c").is_err());
    }

    #[test]
    fn nested_lists_keep_nulls() {
        let a = Value::Array(vec![Value::Int32(1), Value::Null]);
        let b = Value::Null;
        let kind = ColumnKind::Array(Box::new(ColumnKind::Int32));
        let array = array_of(&kind, &[&a, &b], "c").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(array.len(), 2);
        assert_eq!(array.null_count(), 1);
    }
}
