//! Typed column values, shared by every stage.
//!
//! The representation follows the design brief's type table so that the JSON output, the
//! Avro encoding and the warehouse sink agree. Values that a naive mapping would lose are
//! kept explicitly:
//!
//! - `numeric` is kept as its exact decimal text (including `NaN` and `±Infinity`);
//! - dates and timestamps at `±infinity` map to the extreme values of their integer type
//!   (`i32::MAX`/`i32::MIN` days, `i64::MAX`/`i64::MIN` microseconds), never to null;
//! - non-finite floats are written to JSON as the strings `"NaN"`, `"Infinity"`,
//!   `"-Infinity"`, because JSON numbers cannot hold them and `serde_json` would write null.

use base64::Engine;
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

/// Days value used for `date 'infinity'`.
pub const DATE_POS_INFINITY: i32 = i32::MAX;
/// Days value used for `date '-infinity'`.
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
/// Microseconds value used for `timestamp[tz] 'infinity'`.
pub const TIMESTAMP_POS_INFINITY: i64 = i64::MAX;
/// Microseconds value used for `timestamp[tz] '-infinity'`.
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`.
    Int16(i16),
    /// `int4`.
    Int32(i32),
    /// `int8`.
    Int64(i64),
    /// `float4`.
    Float32(f32),
    /// `float8`.
    Float64(f64),
    /// `numeric`, as exact decimal text.
    Numeric(String),
    /// Text types, enums, and every type carried as its text form.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `date`: days since 1970-01-01.
    Date(i32),
    /// `time`: microseconds since midnight.
    Time(i64),
    /// `timestamp` (without time zone): microseconds since 1970-01-01 00:00:00.
    Timestamp(i64),
    /// `timestamptz`: microseconds since 1970-01-01 00:00:00 UTC.
    TimestampTz(i64),
    /// `uuid`, canonical text.
    Uuid(String),
    /// `json`/`jsonb`, as the document text.
    Json(String),
    /// An array; items may be null; nested arrays for more dimensions.
    Array(Vec<Value>),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int16(v) => s.serialize_i16(*v),
            Value::Int32(v) | Value::Date(v) => s.serialize_i32(*v),
            Value::Int64(v) | Value::Time(v) | Value::Timestamp(v) | Value::TimestampTz(v) => {
                s.serialize_i64(*v)
            }
            Value::Float32(v) => serialize_float(f64::from(*v), s, |s| s.serialize_f32(*v)),
            Value::Float64(v) => serialize_float(*v, s, |s| s.serialize_f64(*v)),
            Value::Numeric(v) | Value::Text(v) | Value::Uuid(v) | Value::Json(v) => {
                s.serialize_str(v)
            }
            Value::Bytes(v) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

fn serialize_float<S: Serializer>(
    v: f64,
    s: S,
    finite: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if v == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        finite(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> String {
        serde_json::to_string(v).unwrap_or_default()
    }

    #[test]
    fn non_finite_floats_are_strings_not_null() {
        assert_eq!(json(&Value::Float64(f64::NAN)), "\"NaN\"");
        assert_eq!(json(&Value::Float32(f32::INFINITY)), "\"Infinity\"");
        assert_eq!(json(&Value::Float64(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(json(&Value::Float64(1.5)), "1.5");
    }

    #[test]
    fn bytes_are_base64_and_arrays_nest() {
        assert_eq!(json(&Value::Bytes(vec![0, 255])), "\"AP8=\"");
        let nested = Value::Array(vec![
            Value::Array(vec![Value::Int32(1), Value::Null]),
            Value::Array(vec![]),
        ]);
        assert_eq!(json(&nested), "[[1,null],[]]");
    }
}
