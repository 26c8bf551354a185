//! Values in PostgreSQL's text input forms, and rows in `COPY … FROM STDIN` text format.
//!
//! Every value has one lossless text form: floats in shortest round-trip notation (with
//! `NaN` and `±Infinity`), numerics as their exact text, `bytea` as `\x` hex, dates and
//! timestamps in ISO form with `±infinity`, arrays as `{…}` literals with every element
//! quoted. A COPY field then escapes backslash, tab, newline and carriage return, and
//! writes SQL NULL as `\N`.

use std::fmt::Write;

use super::staged::Staged;
use crate::domain::calendar::{date_text, time_text, timestamp_text};
use crate::domain::value::Value;
use crate::sink::batch::PendingRow;

fn float_text(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("Infinity");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Infinity");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

fn float32_text(v: f32, out: &mut String) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        float_text(f64::from(v), out);
    }
}

/// The text input form of a non-null value.
pub(crate) fn value_text(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Bool(v) => out.push(if *v { 't' } else { 'f' }),
        Value::Int16(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int32(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Int64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float32(v) => float32_text(*v, out),
        Value::Float64(v) => float_text(*v, out),
        Value::Numeric(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => out.push_str(s),
        Value::Bytes(bytes) => {
            out.push_str("\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
        Value::Date(days) => out.push_str(&date_text(*days)),
        Value::Time(micros) => out.push_str(&time_text(*micros)),
        Value::Timestamp(micros) => out.push_str(&timestamp_text(*micros, false)),
        Value::TimestampTz(micros) => out.push_str(&timestamp_text(*micros, true)),
        Value::Array(items) => array_text(items, out),
    }
}

/// An array literal: `{…}` with each element double-quoted (backslash and quote escaped),
/// `NULL` unquoted, nested arrays as nested braces.
pub(crate) fn array_text(items: &[Value], out: &mut String) {
    out.push('{');
    let mut element = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => array_text(inner, out),
            other => {
                element.clear();
                value_text(other, &mut element);
                out.push('"');
                for c in element.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
}

/// Appends one COPY text field (with its escapes), `\N` for null.
pub(crate) fn copy_field(value: &Value, scratch: &mut String, out: &mut Vec<u8>) {
    if matches!(value, Value::Null) {
        out.extend_from_slice(b"\\N");
        return;
    }
    scratch.clear();
    value_text(value, scratch);
    for &b in scratch.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

/// Appends one staged row as a COPY text line: operation, position, unchanged list, then
/// one field per column of the shape (the staging table's column order).
pub fn copy_row(staged: &Staged<'_>, row: &PendingRow, scratch: &mut String, out: &mut Vec<u8>) {
    out.extend_from_slice(Staged::op(row).as_bytes());
    out.push(b'\t');
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(row.position.commit_lsn).as_bytes());
    out.push(b'\t');
    out.extend_from_slice(number.format(row.position.seq).as_bytes());
    out.push(b'\t');
    match Staged::unchanged(row) {
        Some(list) => copy_field(&Value::Text(list), scratch, out),
        None => out.extend_from_slice(b"\\N"),
    }
    for index in 0..staged.shape().columns.len() {
        out.push(b'\t');
        copy_field(staged.cell(row, index), scratch, out);
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(value: &Value) -> String {
        let mut out = Vec::new();
        copy_field(value, &mut String::new(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn copy_fields_round_trip_the_hard_values() {
        assert_eq!(copy(&Value::Null), "\\N");
        assert_eq!(copy(&Value::Text("a\tb\nc\\".into())), "a\\tb\\nc\\\\");
        assert_eq!(copy(&Value::Bytes(vec![0, 255])), "\\\\x00ff");
        assert_eq!(copy(&Value::Float64(f64::NAN)), "NaN");
        assert_eq!(copy(&Value::Float64(1e300)), "1e300");
        assert_eq!(copy(&Value::Float32(0.1)), "0.1");
        let array = Value::Array(vec![
            Value::Text("a,\"b\"".into()),
            Value::Null,
            Value::Text(String::new()),
        ]);
        assert_eq!(copy(&array), "{\"a,\\\\\"b\\\\\"\",NULL,\"\"}");
        let nested = Value::Array(vec![
            Value::Array(vec![Value::Int32(1), Value::Int32(2)]),
            Value::Array(vec![Value::Int32(3), Value::Null]),
        ]);
        assert_eq!(copy(&nested), "{{\"1\",\"2\"},{\"3\",NULL}}");
    }
}
