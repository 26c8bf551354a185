//! Decoding of PostgreSQL text output into typed [`Value`]s.
//!
//! The replication connection and the snapshot connections set `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`, `bytea_output=hex`, `extra_float_digits=3` and
//! `lc_monetary=C` (see `SESSION_SETTINGS` in the connection module), so every value arrives in one
//! known, lossless text form whether it comes from pgoutput or from `COPY`. That is what makes
//! snapshot rows and streamed rows of the same value decode identically.
//!
//! Forms handled: `t`/`f`; integers; floats including `NaN` and `±Infinity`; exact numeric
//! text; `\x` hex bytea; ISO dates with years beyond 9999 and the `BC` suffix; times up to
//! `24:00:00`; timestamps with and without a `±hh[:mm[:ss]]` offset; `±infinity`; and arrays
//! `{…}` with quoting, backslash escapes, `NULL`, nesting and `[lo:hi]=` bounds decoration.

use crate::domain::column_type::TypeKind;
use crate::domain::value::{
    DATE_NEG_INFINITY, DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY, Value,
};

/// A value whose text does not match its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {text:?} as {expected}: {reason}")]
pub struct ValueError {
    /// The type it should have been.
    pub expected: &'static str,
    /// The text received (truncated to 64 bytes).
    pub text: String,
    /// Why it does not parse.
    pub reason: &'static str,
}

fn err(expected: &'static str, text: &str, reason: &'static str) -> ValueError {
    let mut text = text.to_owned();
    if text.len() > 64 {
        let mut cut = 64;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    ValueError {
        expected,
        text,
        reason,
    }
}

/// Decodes the text form of a value of `kind`.
pub fn decode_text(kind: &TypeKind, raw: &[u8]) -> Result<Value, ValueError> {
    let text = std::str::from_utf8(raw).map_err(|_| err("text", "<invalid UTF-8>", "not UTF-8"))?;
    decode_str(kind, text)
}

fn decode_str(kind: &TypeKind, text: &str) -> Result<Value, ValueError> {
    Ok(match kind {
        TypeKind::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(err("bool", text, "expected t or f")),
        },
        TypeKind::Int2 => Value::Int16(text.parse().map_err(|_| err("int2", text, "not an int2"))?),
        TypeKind::Int4 => Value::Int32(text.parse().map_err(|_| err("int4", text, "not an int4"))?),
        TypeKind::Int8 => Value::Int64(text.parse().map_err(|_| err("int8", text, "not an int8"))?),
        TypeKind::Float4 => Value::Float32(
            text.parse()
                .map_err(|_| err("float4", text, "not a float4"))?,
        ),
        TypeKind::Float8 => Value::Float64(
            text.parse()
                .map_err(|_| err("float8", text, "not a float8"))?,
        ),
        TypeKind::Numeric { .. } => Value::Numeric(text.to_owned()),
        TypeKind::Text | TypeKind::Enum | TypeKind::Other | TypeKind::TimeTz => {
            Value::Text(text.to_owned())
        }
        TypeKind::Interval => Value::Text(text.to_owned()),
        TypeKind::Uuid => Value::Uuid(text.to_owned()),
        TypeKind::Json => Value::Json(text.to_owned()),
        TypeKind::Bytea => Value::Bytes(decode_bytea(text)?),
        TypeKind::Date => Value::Date(parse_date_value(text)?),
        TypeKind::Time => {
            Value::Time(parse_time(text).ok_or_else(|| err("time", text, "not HH:MM:SS[.ffffff]"))?)
        }
        TypeKind::Timestamp => Value::Timestamp(parse_timestamp(text, false)?),
        TypeKind::TimestampTz => Value::TimestampTz(parse_timestamp(text, true)?),
        TypeKind::Array(element) => decode_array(element, text)?,
    })
}

fn decode_bytea(text: &str) -> Result<Vec<u8>, ValueError> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| err("bytea", text, "expected hex format (bytea_output=hex)"))?;
    if hex.len() % 2 != 0 {
        return Err(err("bytea", text, "odd number of hex digits"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| err("bytea", text, "not a hex digit"))
}

pub use crate::domain::calendar::days_from_civil;

/// Years beyond PostgreSQL's range (5874897 AD, 4713 BC) are rejected well before the day
/// arithmetic could overflow.
const MAX_YEAR: i64 = 10_000_000;

/// Splits a trailing ` BC`, returning the rest and whether it was there.
fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

/// Parses `YYYY-MM-DD` (year of any length ≥ 4) into days, without a BC suffix.
fn parse_ymd(text: &str, bc: bool) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    // PostgreSQL's dates end in year 5874897; anything far beyond is not a date it printed
    // and would overflow the day arithmetic.
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1..=MAX_YEAR).contains(&year) {
        return None;
    }
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

fn parse_date_value(text: &str) -> Result<i32, ValueError> {
    match text {
        "infinity" => return Ok(DATE_POS_INFINITY),
        "-infinity" => return Ok(DATE_NEG_INFINITY),
        _ => {}
    }
    let (rest, bc) = strip_bc(text);
    let days = parse_ymd(rest, bc).ok_or_else(|| err("date", text, "not YYYY-MM-DD"))?;
    i32::try_from(days).map_err(|_| err("date", text, "out of range"))
}

/// Parses `HH:MM:SS[.ffffff]` into microseconds since midnight.
fn parse_time(text: &str) -> Option<i64> {
    let (hms, fraction) = match text.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (text, None),
    };
    let mut parts = hms.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next()?.parse().ok()?;
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&s) {
        return None;
    }
    let mut micros = 0i64;
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        micros = f.parse::<i64>().ok()? * 10i64.pow(6 - f.len() as u32);
    }
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Parses a UTC offset `±hh[:mm[:ss]]` into seconds east of UTC.
fn parse_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let mut seconds = 0i64;
    let mut scale = 3600;
    for part in rest.split(':') {
        if scale == 0 || part.len() != 2 {
            return None;
        }
        seconds += part.parse::<i64>().ok()? * scale;
        scale /= 60;
    }
    Some(sign * seconds)
}

fn parse_timestamp(text: &str, with_zone: bool) -> Result<i64, ValueError> {
    let expected = if with_zone {
        "timestamptz"
    } else {
        "timestamp"
    };
    match text {
        "infinity" => return Ok(TIMESTAMP_POS_INFINITY),
        "-infinity" => return Ok(TIMESTAMP_NEG_INFINITY),
        _ => {}
    }
    let bad = || err(expected, text, "not an ISO timestamp");
    let (rest, bc) = strip_bc(text);
    let (date, time) = rest.split_once(' ').ok_or_else(bad)?;
    let (time, offset) = if with_zone {
        let at = time.rfind(['+', '-']).ok_or_else(bad)?;
        (&time[..at], parse_offset(&time[at..]).ok_or_else(bad)?)
    } else {
        (time, 0)
    };
    let days = parse_ymd(date, bc).ok_or_else(bad)?;
    let micros = parse_time(time).ok_or_else(bad)?;
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros))
        .and_then(|t| t.checked_sub(offset * 1_000_000))
        .ok_or_else(|| err(expected, text, "out of range"))
}

/// Parses an array literal into nested [`Value::Array`]s of `element` values.
fn decode_array(element: &TypeKind, text: &str) -> Result<Value, ValueError> {
    // Arrays with non-default lower bounds are prefixed with `[lo:hi][lo:hi]=`.
    let body = match text.strip_prefix('[') {
        Some(_) => text
            .split_once('=')
            .map(|(_, b)| b)
            .ok_or_else(|| err("array", text, "bounds decoration without '='"))?,
        None => text,
    };
    let mut parser = ArrayParser {
        text: body.as_bytes(),
        pos: 0,
        element,
        original: text,
    };
    let value = parser.array()?;
    if parser.pos != parser.text.len() {
        return Err(err("array", text, "trailing characters"));
    }
    Ok(value)
}

struct ArrayParser<'a> {
    text: &'a [u8],
    pos: usize,
    element: &'a TypeKind,
    original: &'a str,
}

impl<'a> ArrayParser<'a> {
    fn fail(&self, reason: &'static str) -> ValueError {
        err("array", self.original, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn array(&mut self) -> Result<Value, ValueError> {
        if self.peek() != Some(b'{') {
            return Err(self.fail("expected '{'"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            let item = match self.peek() {
                Some(b'{') => self.array()?,
                Some(b'"') => {
                    let s = self.quoted()?;
                    decode_str(self.element, &s)?
                }
                Some(_) => {
                    let element = self.element;
                    let s = self.unquoted()?;
                    if s == "NULL" {
                        Value::Null
                    } else {
                        decode_str(element, s)?
                    }
                }
                None => return Err(self.fail("unterminated array")),
            };
            items.push(item);
            // Every built-in type but `box` uses ',' as the delimiter. A ';' is an ordinary
            // character of an element (PostgreSQL does not quote `a;b` in a text[]); box
            // arrays, delimited by ';', are not decoded element by element here.
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.fail("expected ',' or '}'")),
            }
        }
    }

    fn quoted(&mut self) -> Result<String, ValueError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self
                        .text
                        .get(self.pos + 1)
                        .copied()
                        .ok_or_else(|| self.fail("dangling backslash"))?;
                    out.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
                None => return Err(self.fail("unterminated quoted element")),
            }
        }
        String::from_utf8(out).map_err(|_| self.fail("element is not UTF-8"))
    }

    fn unquoted(&mut self) -> Result<&'a str, ValueError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b'}') {
                break;
            }
            self.pos += 1;
        }
        let text: &'a [u8] = self.text;
        std::str::from_utf8(&text[start..self.pos]).map_err(|_| self.fail("element is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
