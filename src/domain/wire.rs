//! One column value as the JSON envelope writes it, in keys and rows alike: as [`Value`]
//! serializes itself, except where Debezium's JsonConverter writes another form:
//!
//! - `timestamptz` is Debezium's `ZonedTimestamp` text (ISO-8601 in UTC with the column's
//!   fraction digits);
//! - `numeric` follows [`DecimalMode`] ([`crate::domain::decimal`]): base64 unscaled bytes
//!   for `numeric(p,s)` and a `{"scale","value"}` struct (`VariableScaleDecimal`) for
//!   unconstrained `numeric` in `precise` mode, a float64 in `double` mode, the exact text in
//!   `string` mode;
//! - `time` and `timestamp` follow [`TimePrecision`] (Debezium's `time.precision.mode`): in
//!   the default `adaptive` mode a column of at most millisecond precision (`time(3)`,
//!   `timestamp(0)`) is written in milliseconds (`io.debezium.time.Time`, an int32 of ms
//!   since midnight; `io.debezium.time.Timestamp`, an int64 of ms since the epoch), a finer
//!   one in microseconds (`MicroTime`, `MicroTimestamp`);
//! - `interval` follows [`IntervalMode`] (Debezium's `interval.handling.mode`): Debezium's
//!   `MicroDuration` by default, or the ISO-8601 text;
//! - `hstore` follows [`HstoreMode`] (Debezium's `hstore.handling.mode`): a JSON string by
//!   default, or a map;
//! - `bytea` follows [`BinaryMode`] (Debezium's `binary.handling.mode`): Connect bytes (base64
//!   in JSON) by default, or a string of base64, URL-safe base64 or hex;
//! - `timetz` is Debezium's `ZonedTime` (the time at UTC with `Z`), but for the `native`
//!   preset, which keeps PostgreSQL's text;
//! - types PostgreSQL prints as text that Debezium writes in forms of its own
//!   ([`TextType`]), in the `debezium` preset (the `native` one keeps the text): `money` a
//!   decimal of scale 2 in the decimal mode (the text without its currency sign in `string`
//!   mode), `bit(1)` a boolean and other bit strings `Bits` (base64 bytes, least significant
//!   first), `oid` an int64, `hstore` a JSON object of strings, `point` Debezium's
//!   geometry struct;
//!
//! also inside arrays, element by element. The Connect schema written beside it
//! (`schema::connect_schema`) declares the same forms.

use base64::Engine;
use serde::ser::{Error as _, SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::domain::column_type::TypeKind;
use crate::domain::decimal::{self, DecimalMode};
use crate::domain::event::Column;
use crate::domain::value::Value;

/// Debezium's `time.precision.mode`: the unit of `time` and `timestamp` values in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimePrecision {
    /// Debezium's default: milliseconds for columns of precision 0–3, microseconds above.
    #[default]
    Adaptive,
    /// `time` always in microseconds, `timestamp` as `adaptive`.
    AdaptiveTimeMicroseconds,
    /// tidemark's own (the `native` preset): always microseconds.
    Microseconds,
}

impl TimePrecision {
    /// Whether a `time` column of `precision` fraction digits is written in milliseconds.
    pub fn time_in_millis(self, precision: u32) -> bool {
        self == TimePrecision::Adaptive && precision <= 3
    }

    /// Whether a `timestamp` column of `precision` fraction digits is written in
    /// milliseconds.
    pub fn timestamp_in_millis(self, precision: u32) -> bool {
        self != TimePrecision::Microseconds && precision <= 3
    }
}

/// Debezium's `interval.handling.mode`: how `interval` values are written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalMode {
    /// Debezium's default: `io.debezium.time.MicroDuration`, an int64 of microseconds with
    /// a month counted as 30.4375 days (inexact for months and years).
    #[default]
    Numeric,
    /// The ISO-8601 text (`P1Y2M3DT4H5M6.5S`), exact.
    String,
}

/// Debezium's `binary.handling.mode`: how `bytea` values are written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BinaryMode {
    /// Debezium's default: Connect `bytes` (base64 text in JSON, as JsonConverter writes
    /// bytes).
    #[default]
    #[serde(rename = "bytes")]
    Bytes,
    /// A string of standard base64.
    #[serde(rename = "base64")]
    Base64,
    /// A string of URL-safe base64 (`-` and `_`, padded).
    #[serde(rename = "base64-url-safe")]
    Base64UrlSafe,
    /// A string of hexadecimal digits.
    #[serde(rename = "hex")]
    Hex,
}

impl BinaryMode {
    /// `bytes` as the string this mode writes (base64 for [`BinaryMode::Bytes`], as
    /// JsonConverter writes Connect bytes).
    pub fn text(self, bytes: &[u8]) -> String {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        match self {
            BinaryMode::Bytes | BinaryMode::Base64 => STANDARD.encode(bytes),
            BinaryMode::Base64UrlSafe => URL_SAFE.encode(bytes),
            BinaryMode::Hex => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let mut hex = String::with_capacity(bytes.len() * 2);
                for byte in bytes {
                    hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
                    hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
                }
                hex
            }
        }
    }
}

/// Debezium's `hstore.handling.mode`: how `hstore` values are written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HstoreMode {
    /// Debezium's default: a string holding a JSON object of strings
    /// (`io.debezium.data.Json`).
    #[default]
    Json,
    /// A Connect map of strings to optional strings (a JSON object in the payload).
    Map,
}

/// How the JSON envelope writes the values whose form Debezium's settings choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireMode {
    /// Debezium's `decimal.handling.mode`.
    pub decimal: DecimalMode,
    /// Debezium's `time.precision.mode`.
    pub time: TimePrecision,
    /// Debezium's `interval.handling.mode`.
    pub interval: IntervalMode,
    /// Debezium's `binary.handling.mode`.
    pub binary: BinaryMode,
    /// Debezium's `hstore.handling.mode`.
    pub hstore: HstoreMode,
    /// Whether the types PostgreSQL prints as text are written in Debezium's forms
    /// ([`TextType`], `timetz` as `ZonedTime`), NOT NULL columns required with their
    /// defaults and a key-only old row filled as Debezium fills it: the `debezium` preset;
    /// the `native` one keeps PostgreSQL's text and every value column optional.
    pub debezium_types: bool,
}

impl Default for WireMode {
    fn default() -> Self {
        WireMode {
            decimal: DecimalMode::default(),
            time: TimePrecision::default(),
            interval: IntervalMode::default(),
            binary: BinaryMode::default(),
            hstore: HstoreMode::default(),
            debezium_types: true,
        }
    }
}

impl WireMode {
    /// Whether `timetz` values are Debezium's `ZonedTime` (UTC, `Z`).
    pub fn zoned_time(self) -> bool {
        self.debezium_types
    }
}

/// The types carried as text (no mapping of their own) that Debezium writes in a form of
/// its own, told apart by their PostgreSQL name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextType {
    /// None of them: the text.
    Plain,
    /// `money`: a decimal of scale 2.
    Money,
    /// `bit(n)`/`varbit(n)` (`-1`: no length): a boolean for `bit(1)`, else `Bits` bytes.
    Bits(i32),
    /// `oid`: an int64.
    Oid,
    /// `hstore`: a JSON object of strings (`io.debezium.data.Json`).
    Hstore,
    /// `xml`: the text, named `io.debezium.data.Xml`.
    Xml,
    /// `point`: Debezium's `io.debezium.data.geometry.Point` struct (`x`, `y`, its WKB).
    Point,
}

impl TextType {
    /// The text type of `column` as `mode` writes it: [`TextType::Plain`] for every column
    /// not carried as text, and for all of them when `mode` keeps PostgreSQL's text (the
    /// `native` preset).
    pub fn of(column: &Column, mode: WireMode) -> TextType {
        if !mode.debezium_types || column.column_type.kind != TypeKind::Other {
            return TextType::Plain;
        }
        match column.column_type.name.as_str() {
            "money" => TextType::Money,
            "bit" | "varbit" => TextType::Bits(column.type_modifier),
            "oid" => TextType::Oid,
            "hstore" => TextType::Hstore,
            "xml" => TextType::Xml,
            "point" => TextType::Point,
            _ => TextType::Plain,
        }
    }
}

/// A value of `column` as the JSON envelope writes it.
pub struct WireValue<'a> {
    value: &'a Value,
    kind: &'a TypeKind,
    column: &'a str,
    precision: u32,
    /// Which of the types Debezium writes in its own forms the column has.
    text_type: TextType,
    mode: WireMode,
    /// Whether the value is the placeholder of an unchanged TOASTed value
    /// ([`WireValue::placeholder`]).
    placeholder: bool,
}

impl<'a> WireValue<'a> {
    /// `value` of `column`, written in `mode`.
    pub fn new(column: &'a Column, value: &'a Value, mode: WireMode) -> Self {
        WireValue {
            value,
            kind: &column.column_type.kind,
            column: &column.name,
            precision: time_precision(column.type_modifier),
            text_type: TextType::of(column, mode),
            mode,
            placeholder: false,
        }
    }

    /// The value is the placeholder of an unchanged TOASTed value that was not sent
    /// (`crate::domain::event::unavailable_placeholder`), written in its type's
    /// placeholder form as Debezium writes it rather than parsed as a value.
    pub fn placeholder(self) -> Self {
        WireValue {
            placeholder: true,
            ..self
        }
    }

    /// A value of a [`TextType`] in Debezium's form (the text for [`TextType::Plain`]).
    fn serialize_text_type<S: Serializer>(&self, text: &str, s: S) -> Result<S::Ok, S::Error> {
        let invalid = |what: &str| Err(self.unreadable(text, what));
        if self.placeholder {
            // An unchanged TOASTed value's placeholder, in the type's form.
            return match (self.text_type, self.mode.hstore) {
                // The one pair placeholder to placeholder, as a map or as its JSON text.
                (TextType::Hstore, HstoreMode::Map) => {
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry(text, text)?;
                    map.end()
                }
                (TextType::Hstore, HstoreMode::Json) => {
                    s.serialize_str(&serde_json::json!({ text: text }).to_string())
                }
                // Debezium writes none for a bit string (compared with Debezium 3.6).
                (TextType::Bits(_), _) => s.serialize_none(),
                _ => s.serialize_str(text),
            };
        }
        match self.text_type {
            TextType::Plain | TextType::Xml => s.serialize_str(text),
            TextType::Bits(1) if text.len() == 1 => s.serialize_bool(text == "1"),
            TextType::Bits(_) => match bits_little_endian(text) {
                Some(bytes) => {
                    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
                }
                None => invalid("a bit string"),
            },
            TextType::Oid => match text.parse::<u32>() {
                Ok(oid) => s.serialize_u32(oid),
                Err(_) => invalid("an oid"),
            },
            TextType::Point => match point_xy(text) {
                Some((x, y)) => {
                    let mut map = s.serialize_map(Some(4))?;
                    map.serialize_entry("x", &x)?;
                    map.serialize_entry("y", &y)?;
                    map.serialize_entry(
                        "wkb",
                        &base64::engine::general_purpose::STANDARD.encode(point_wkb(x, y)),
                    )?;
                    map.serialize_entry("srid", &None::<i32>)?;
                    map.end()
                }
                None => invalid("a point"),
            },
            TextType::Hstore => match (hstore_pairs(text), self.mode.hstore) {
                (Some(pairs), HstoreMode::Json) => {
                    s.serialize_str(&serde_json::Value::Object(pairs).to_string())
                }
                (Some(pairs), HstoreMode::Map) => pairs.serialize(s),
                (None, _) => invalid("an hstore"),
            },
            TextType::Money => match money_decimal(text) {
                Some(amount) => match self.mode.decimal {
                    DecimalMode::String => s.serialize_str(&amount),
                    DecimalMode::Double => s.serialize_f64(amount.parse().unwrap_or(f64::NAN)),
                    DecimalMode::Precise => {
                        let bytes = decimal::unscaled_bytes(&amount, MONEY_SCALE).map_err(|e| {
                            S::Error::custom(format!("column {}: {e}", self.column))
                        })?;
                        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                },
                None => invalid("money in the C locale's form"),
            },
        }
    }

    /// The error for a value whose text is not the form its type has on tidemark's
    /// connections, with the remedy.
    fn unreadable<E: serde::ser::Error>(&self, text: &str, what: &str) -> E {
        E::custom(format!(
            "column {}: {text:?} is not {what} as tidemark's sessions print it; \
             set [events] preset = \"native\" to carry such values as PostgreSQL's text",
            self.column
        ))
    }

    fn item(&self, value: &'a Value, kind: &'a TypeKind) -> Self {
        WireValue {
            value,
            kind,
            ..*self
        }
    }
}

/// Whether a column of `kind` may hold a value [`WireValue`] writes other than as [`Value`]
/// does, in `mode` (used to keep the common case on serde's direct path).
pub fn is_special_kind(kind: &TypeKind, mode: WireMode) -> bool {
    match kind {
        TypeKind::TimestampTz => true,
        TypeKind::Bytea => mode.binary != BinaryMode::Bytes,
        TypeKind::Time => mode.time == TimePrecision::Adaptive,
        TypeKind::TimeTz => mode.zoned_time(),
        TypeKind::Interval => mode.interval == IntervalMode::Numeric,
        // The text types Debezium writes in its own forms are among them.
        TypeKind::Other => mode.debezium_types,
        TypeKind::Timestamp => mode.time != TimePrecision::Microseconds,
        TypeKind::Numeric { .. } => mode.decimal != DecimalMode::String,
        TypeKind::Array(element) => is_special_kind(element, mode),
        _ => false,
    }
}

/// Fraction digits of a time type with type modifier `modifier` (6 when unconstrained).
pub fn time_precision(modifier: i32) -> u32 {
    u32::try_from(modifier).map_or(6, |p| p.min(6))
}

/// A bit string (`101`) as Debezium's `io.debezium.data.Bits`: the string read as a binary
/// number, its bytes least significant first, without high zero bytes (Java's
/// `BitSet.toByteArray`: all zeros is no bytes at all); none for anything but `0`s and
/// `1`s.
pub fn bits_little_endian(text: &str) -> Option<Vec<u8>> {
    if !text.bytes().all(|b| b == b'0' || b == b'1') {
        return None;
    }
    let mut bytes = vec![0u8; text.len().div_ceil(8)];
    for (index, bit) in text.bytes().rev().enumerate() {
        if bit == b'1' {
            bytes[index / 8] |= 1 << (index % 8);
        }
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    Some(bytes)
}

/// An `hstore`'s text (`"a"=>"1", "b"=>NULL`) as its pairs, values a string or null, which
/// Debezium writes as a JSON object of strings (`{"a":"1","b":null}`) or a map; none for
/// anything else.
pub fn hstore_pairs(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        if chars.next()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
    }
    let mut map = serde_json::Map::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key = quoted(&mut chars)?;
        if chars.next()? != '=' || chars.next()? != '>' {
            return None;
        }
        let value = match chars.peek()? {
            '"' => serde_json::Value::String(quoted(&mut chars)?),
            _ => {
                let word: String = chars.by_ref().take(4).collect();
                if word != "NULL" {
                    return None;
                }
                serde_json::Value::Null
            }
        };
        map.insert(key, value);
    }
    Some(map)
}

/// A `point`'s text (`(1,2)`) as its coordinates; none for anything else.
pub fn point_xy(text: &str) -> Option<(f64, f64)> {
    let (x, y) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

/// A point's well-known binary, little-endian (`01`, type 1, x, y), as Debezium's `Point`
/// carries it.
pub fn point_wkb(x: f64, y: f64) -> Vec<u8> {
    let mut wkb = vec![1, 1, 0, 0, 0];
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    wkb
}

/// The fraction digits of `money` in the C locale, which every connection sets.
pub const MONEY_SCALE: u32 = 2;

/// `money` text in the C locale (`$1,234.56`, `-$5.50`) as decimal text (`1234.56`,
/// `-5.50`); none for anything else.
pub fn money_decimal(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let digits: String = rest
        .strip_prefix('$')?
        .chars()
        .filter(|&c| c != ',')
        .collect();
    let (whole, fraction) = digits.split_once('.').unwrap_or((&digits, ""));
    let valid = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !valid(whole)
        || !valid(fraction)
        || fraction.len() > MONEY_SCALE as usize
    {
        return None;
    }
    let sign = if negative { "-" } else { "" };
    Some(format!(
        "{sign}{whole}.{fraction:0<width$}",
        width = MONEY_SCALE as usize
    ))
}

/// The scale of a `numeric(p,s)` that Connect's `Decimal` can carry (none: unconstrained
/// or a negative scale, written as `VariableScaleDecimal`).
pub fn fixed_scale(kind: &TypeKind) -> Option<u32> {
    match kind {
        TypeKind::Numeric {
            precision: Some(_),
            scale: Some(scale),
        } => u32::try_from(*scale).ok(),
        _ => None,
    }
}

impl Serialize for WireValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.value, self.kind) {
            (Value::Bytes(bytes), TypeKind::Bytea) if self.mode.binary != BinaryMode::Bytes => {
                // The placeholder of an unchanged TOASTed value stays its text, as
                // Debezium writes it in every string mode.
                if self.placeholder {
                    s.serialize_str(&String::from_utf8_lossy(bytes))
                } else {
                    s.serialize_str(&self.mode.binary.text(bytes))
                }
            }
            (Value::TimestampTz(micros), TypeKind::TimestampTz) => s.serialize_str(
                &crate::domain::calendar::zoned_timestamp_text(*micros, self.precision),
            ),
            (Value::Time(micros), TypeKind::Time)
                if self.mode.time.time_in_millis(self.precision) =>
            {
                s.serialize_i64(micros.div_euclid(1000))
            }
            (Value::Timestamp(micros), TypeKind::Timestamp)
                if self.mode.time.timestamp_in_millis(self.precision) =>
            {
                // ±infinity (i64::MAX / i64::MIN microseconds) stays at the bounds.
                let millis = match *micros {
                    i64::MAX | i64::MIN => *micros,
                    micros => micros.div_euclid(1000),
                };
                s.serialize_i64(millis)
            }
            (Value::Text(text), TypeKind::Interval)
                if self.mode.interval == IntervalMode::Numeric =>
            {
                match crate::domain::calendar::interval_micros(text) {
                    Some(micros) => s.serialize_i64(micros),
                    None => Err(self.unreadable(text, "an interval in the iso_8601 style")),
                }
            }
            (Value::Text(text), TypeKind::TimeTz) if self.mode.zoned_time() => {
                match crate::domain::calendar::zoned_time_text(text) {
                    Some(zoned) => s.serialize_str(&zoned),
                    None => Err(self.unreadable(text, "a time with time zone")),
                }
            }
            (Value::Text(text), TypeKind::Other) if self.text_type != TextType::Plain => {
                self.serialize_text_type(text, s)
            }
            (Value::Numeric(text), TypeKind::Numeric { .. }) => match self.mode.decimal {
                DecimalMode::String => s.serialize_str(text),
                DecimalMode::Double => match text.parse::<f64>() {
                    Ok(number) if !decimal::is_special(text) => s.serialize_f64(number),
                    // NaN and ±Infinity as float8's are written: strings.
                    _ => s.serialize_str(text),
                },
                DecimalMode::Precise if decimal::is_special(text) => {
                    decimal::note_nulled(self.column, text);
                    s.serialize_none()
                }
                DecimalMode::Precise => {
                    let base64 = |text: &str, scale: u32| {
                        decimal::unscaled_bytes(text, scale)
                            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                            .map_err(|e| S::Error::custom(format!("column {}: {e}", self.column)))
                    };
                    match fixed_scale(self.kind) {
                        Some(scale) => s.serialize_str(&base64(text, scale)?),
                        None => {
                            // Debezium writes a variable-scale decimal without the
                            // trailing zeros of its fraction (`1.50` at scale 1).
                            let text = decimal::trim_scale(text);
                            let scale = decimal::scale_of(text);
                            let mut map = s.serialize_map(Some(2))?;
                            map.serialize_entry("scale", &scale)?;
                            map.serialize_entry("value", &base64(text, scale)?)?;
                            map.end()
                        }
                    }
                }
            },
            (Value::Array(items), TypeKind::Array(element))
                if is_special_kind(element, self.mode) =>
            {
                s.collect_seq(items.iter().map(|item| self.item(item, element)))
            }
            (value, _) => value.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {

    fn hstore_text(text: &str) -> Option<String> {
        hstore_pairs(text).map(|pairs| serde_json::Value::Object(pairs).to_string())
    }

    #[test]
    fn binary_modes_write_debeziums_strings() {
        let bytes = [0x00, 0xfb, 0xff, 0x10];
        assert_eq!(BinaryMode::Hex.text(&bytes), "00fbff10");
        assert_eq!(BinaryMode::Base64.text(&bytes), "APv/EA==");
        assert_eq!(BinaryMode::Base64UrlSafe.text(&bytes), "APv_EA==");
    }

    use super::*;
    use crate::domain::column_type::{ColumnType, numeric_kind};

    fn column(kind: TypeKind, modifier: i32) -> Column {
        Column {
            name: "n".into(),
            column_type: ColumnType {
                oid: 1700,
                enum_labels: None,
                name: "numeric".into(),
                kind,
            },
            type_modifier: modifier,
            comment: None,
            not_null: false,
            default: crate::domain::event::ColumnDefault::None,
        }
    }

    fn json(column: &Column, value: &Value, decimal: DecimalMode) -> String {
        let mode = WireMode {
            decimal,
            ..WireMode::default()
        };
        serde_json::to_string(&WireValue::new(column, value, mode)).unwrap_or_default()
    }

    #[test]
    fn hstores_are_json_objects_of_strings() {
        // Debezium 3.6.1 wrote {"a":"1","b":null} for 'a=>1,b=>NULL'.
        assert_eq!(
            hstore_text(r#""a"=>"1", "b"=>NULL"#).as_deref(),
            Some(r#"{"a":"1","b":null}"#)
        );
        assert_eq!(
            hstore_text(r#""q\"x"=>"back\\slash", "k"=>"=>, ""#).as_deref(),
            Some(r#"{"k":"=>, ","q\"x":"back\\slash"}"#)
        );
        assert_eq!(hstore_text("").as_deref(), Some("{}"));
        assert_eq!(hstore_text(r#""a"=>1"#), None);
        assert_eq!(hstore_text(r#""a"=>NUL"#), None);
    }

    #[test]
    fn points_are_debeziums_geometry_points() {
        assert_eq!(point_xy("(1,2)"), Some((1.0, 2.0)));
        assert_eq!(point_xy("(-1.5,2e-7)"), Some((-1.5, 2e-7)));
        assert_eq!(point_xy("1,2"), None);
        // Debezium 3.6.1 wrote "AQEAAAAAAAAAAADwPwAAAAAAAABA" for (1,2).
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(point_wkb(1.0, 2.0)),
            "AQEAAAAAAAAAAADwPwAAAAAAAABA"
        );
    }

    #[test]
    fn bit_strings_are_debeziums_bits() {
        // Debezium 3.6.1 wrote "BQ==" for B'101', "DQ==" for B'1101', "" for B'0000000000'.
        assert_eq!(bits_little_endian("101"), Some(vec![0x05]));
        assert_eq!(bits_little_endian("1101"), Some(vec![0x0d]));
        assert_eq!(bits_little_endian("1000000001"), Some(vec![0x01, 0x02]));
        assert_eq!(bits_little_endian("0000000001"), Some(vec![0x01]));
        assert_eq!(bits_little_endian("0000000000"), Some(vec![]));
        assert_eq!(bits_little_endian("10x"), None);
    }

    #[test]
    fn money_is_a_decimal_of_scale_two() {
        assert_eq!(money_decimal("$12.34").as_deref(), Some("12.34"));
        assert_eq!(money_decimal("-$5.50").as_deref(), Some("-5.50"));
        assert_eq!(money_decimal("$1,234,567.8").as_deref(), Some("1234567.80"));
        assert_eq!(money_decimal("12,34 €"), None);
        let money = Column {
            name: "m".into(),
            column_type: ColumnType {
                oid: 790,
                enum_labels: None,
                name: "money".into(),
                kind: TypeKind::Other,
            },
            type_modifier: -1,
            comment: None,
            not_null: false,
            default: crate::domain::event::ColumnDefault::None,
        };
        let v = Value::Text("$12.34".into());
        // Debezium 3.6.1 wrote "BNI=" (1234 at scale 2) for 12.34.
        assert_eq!(json(&money, &v, DecimalMode::Precise), "\"BNI=\"");
        assert_eq!(json(&money, &v, DecimalMode::String), "\"12.34\"");
        assert_eq!(json(&money, &v, DecimalMode::Double), "12.34");
        let inet = Column {
            column_type: ColumnType {
                oid: 869,
                enum_labels: None,
                name: "inet".into(),
                kind: TypeKind::Other,
            },
            ..money
        };
        assert_eq!(
            json(&inet, &Value::Text("10.0.0.1".into()), DecimalMode::Precise),
            "\"10.0.0.1\""
        );
    }

    #[test]
    fn times_of_millisecond_precision_are_milliseconds_in_adaptive_mode() {
        let at = |kind: TypeKind, modifier: i32, value: Value, time: TimePrecision| {
            let column = column(kind, modifier);
            let mode = WireMode {
                time,
                ..WireMode::default()
            };
            serde_json::to_string(&WireValue::new(&column, &value, mode)).unwrap_or_default()
        };
        use TimePrecision::*;
        // 01:02:03.456 and 2024-01-02 03:04:05.678 (Debezium 3.6.1 wrote 3723456 and
        // 1704164645678 for time(3) and timestamp(3)).
        let time = Value::Time(3_723_456_000);
        let stamp = Value::Timestamp(1_704_164_645_678_000);
        assert_eq!(at(TypeKind::Time, 3, time.clone(), Adaptive), "3723456");
        assert_eq!(at(TypeKind::Time, -1, time.clone(), Adaptive), "3723456000");
        assert_eq!(
            at(TypeKind::Time, 3, time.clone(), AdaptiveTimeMicroseconds),
            "3723456000"
        );
        assert_eq!(
            at(TypeKind::Timestamp, 3, stamp.clone(), Adaptive),
            "1704164645678"
        );
        assert_eq!(
            at(
                TypeKind::Timestamp,
                0,
                stamp.clone(),
                AdaptiveTimeMicroseconds
            ),
            "1704164645678"
        );
        assert_eq!(
            at(TypeKind::Timestamp, 6, stamp.clone(), Adaptive),
            "1704164645678000"
        );
        assert_eq!(
            at(TypeKind::Timestamp, 3, stamp, Microseconds),
            "1704164645678000"
        );
        // Before 1970: whole milliseconds, rounded down like Java's toEpochMilli.
        assert_eq!(
            at(TypeKind::Timestamp, 3, Value::Timestamp(-1_500), Adaptive),
            "-2"
        );
        let array = TypeKind::Array(Box::new(TypeKind::Timestamp));
        let items = Value::Array(vec![Value::Timestamp(2_000), Value::Null]);
        assert_eq!(at(array, 3, items, Adaptive), "[2,null]");
    }

    #[test]
    fn numerics_follow_the_decimal_mode_as_debezium_writes_them() {
        // numeric(10,2): typmod ((10 << 16) | 2) + 4.
        let fixed = column(numeric_kind((10 << 16 | 2) + 4), (10 << 16 | 2) + 4);
        let free = column(numeric_kind(-1), -1);
        let v = |t: &str| Value::Numeric(t.into());
        // 12.34 -> 1234 = 0x04d2 -> "BNI=" (Debezium 3.6.1 wrote the same for 12.34).
        assert_eq!(json(&fixed, &v("12.34"), DecimalMode::Precise), "\"BNI=\"");
        // 123.456 -> scale 3, 123456 = 0x01e240 -> "AeJA".
        assert_eq!(
            json(&free, &v("123.456"), DecimalMode::Precise),
            r#"{"scale":3,"value":"AeJA"}"#
        );
        assert_eq!(json(&fixed, &v("NaN"), DecimalMode::Precise), "null");
        assert_eq!(json(&free, &v("12.34"), DecimalMode::Double), "12.34");
        assert_eq!(json(&free, &v("NaN"), DecimalMode::Double), "\"NaN\"");
        assert_eq!(json(&fixed, &v("12.34"), DecimalMode::String), "\"12.34\"");
        let array = column(TypeKind::Array(Box::new(numeric_kind(-1))), -1);
        assert_eq!(
            json(
                &array,
                &Value::Array(vec![v("1.5"), Value::Null]),
                DecimalMode::Precise
            ),
            r#"[{"scale":1,"value":"Dw=="},null]"#
        );
    }
}
