//! A table's shape as the sink sees it: columns with a warehouse-facing kind, and the key.
//!
//! The kind comes from the record's schema: the Avro type (with its logical type) gives the
//! structure, and the PostgreSQL type the source attaches to every value column
//! (`tidemark.type` in Avro, Debezium's `__debezium.source.column.type` parameter in Connect
//! JSON) refines it: `int2` against `int4`, `json`, unconstrained `numeric` carried as text,
//! `interval` and the other types carried as their text form. JSON records without schemas
//! carry no types, so their shape is inferred from the values (see [`infer_kind`]).

use serde_json::Value as Json;

use crate::schema::avro::{COLUMN_ATTRIBUTE, PG_TYPE_ATTRIBUTE};

/// What a column holds, as the warehouse needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ColumnKind {
    /// `boolean`.
    Bool,
    /// 16-bit integer.
    Int16,
    /// 32-bit integer.
    Int32,
    /// 64-bit integer.
    Int64,
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Exact decimal with declared precision and scale.
    Decimal {
        /// Digits in all.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// Unconstrained `numeric`: exact decimal text of any size, `NaN`, `±Infinity`.
    Numeric,
    /// Text.
    Text,
    /// A JSON document (`json` or `jsonb` at the source).
    Json,
    /// Bytes.
    Bytes,
    /// Days since 1970-01-01 (`±infinity` as the extreme `i32`s).
    Date,
    /// Microseconds since midnight.
    Time,
    /// Microseconds since 1970-01-01, no time zone.
    Timestamp,
    /// Microseconds since 1970-01-01 UTC.
    TimestampTz,
    /// A UUID.
    Uuid,
    /// An array of the element kind with nullable items.
    Array(Box<ColumnKind>),
    /// Any other PostgreSQL type, carried as its text form; the type name is kept so a
    /// PostgreSQL warehouse can use the same type.
    Other(String),
}

impl ColumnKind {
    /// A short name for messages and rename-old column suffixes.
    pub fn label(&self) -> String {
        match self {
            ColumnKind::Decimal { precision, scale } => format!("decimal_{precision}_{scale}"),
            ColumnKind::Array(inner) => format!("{}_array", inner.label()),
            ColumnKind::Other(name) => crate::schema::avro::avro_name(name),
            other => format!("{other:?}").to_ascii_lowercase(),
        }
    }

    /// Whether a column of this kind can take every value of `from` without loss, so the
    /// warehouse column can be altered in place.
    pub(crate) fn widens(&self, from: &ColumnKind) -> bool {
        use ColumnKind::*;
        match (from, self) {
            (a, b) if a == b => true,
            (Int16, Int32 | Int64) | (Int32, Int64) => true,
            (Int16 | Int32, Float64) | (Float32, Float64) => true,
            (Int16 | Int32 | Int64, Decimal { precision, scale }) => {
                precision.saturating_sub(*scale) >= 19
            }
            (
                Decimal {
                    precision: p1,
                    scale: s1,
                },
                Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => s2 >= s1 && p2.saturating_sub(*s2) >= p1.saturating_sub(*s1),
            (Int16 | Int32 | Int64 | Decimal { .. }, Numeric) => true,
            (_, Text) => !matches!(from, Bytes | Array(_)),
            (Timestamp, TimestampTz) => false,
            (Array(a), Array(b)) => b.widens(a),
            _ => false,
        }
    }
}

/// One column of a table's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkColumn {
    /// The source column's name.
    pub name: String,
    /// What it holds.
    pub kind: ColumnKind,
}

/// A table's columns in source order and its key columns.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TableShape {
    /// Columns.
    pub columns: Vec<SinkColumn>,
    /// Names of the key columns (empty: no key; rows are appended).
    pub key: Vec<String>,
    /// Columns renamed at the source, `(old, new)`, as the schema says (Avro field
    /// `aliases`, written when the rename's DDL was captured). Not part of a stored shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<(String, String)>,
}

impl TableShape {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&SinkColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The kind of a PostgreSQL type name as the source writes it (`int4`, `numeric(12,2)`,
/// `varchar(10)`, `int4[]`), or `None` for names it does not know (enums, domains,
/// extension types), which then take the kind the schema's structure gives.
pub(crate) fn kind_of_pg_type(name: &str) -> Option<ColumnKind> {
    if let Some(element) = name.strip_suffix("[]") {
        return kind_of_pg_type(element).map(|k| ColumnKind::Array(Box::new(k)));
    }
    let base = name.split('(').next().unwrap_or(name);
    Some(match base {
        "bool" => ColumnKind::Bool,
        "int2" => ColumnKind::Int16,
        "int4" => ColumnKind::Int32,
        "int8" => ColumnKind::Int64,
        "float4" => ColumnKind::Float32,
        "float8" => ColumnKind::Float64,
        "numeric" => match decimal_modifier(name) {
            Some((precision, scale)) if scale >= 0 => ColumnKind::Decimal {
                precision,
                scale: scale.unsigned_abs(),
            },
            _ => ColumnKind::Numeric,
        },
        "text" | "varchar" | "bpchar" | "name" | "citext" | "char" => ColumnKind::Text,
        "json" | "jsonb" => ColumnKind::Json,
        "bytea" => ColumnKind::Bytes,
        "date" => ColumnKind::Date,
        "time" => ColumnKind::Time,
        "timestamp" => ColumnKind::Timestamp,
        "timestamptz" => ColumnKind::TimestampTz,
        "uuid" => ColumnKind::Uuid,
        "interval" | "timetz" | "inet" | "cidr" | "macaddr" | "macaddr8" | "money" | "xml"
        | "tsvector" | "tsquery" | "point" | "line" | "lseg" | "box" | "path" | "polygon"
        | "circle" | "bit" | "varbit" | "int4range" | "int8range" | "numrange" | "tsrange"
        | "tstzrange" | "daterange" | "oid" | "pg_lsn" => ColumnKind::Other(base.to_owned()),
        _ => return None,
    })
}

fn decimal_modifier(name: &str) -> Option<(u32, i32)> {
    let inside = name.split_once('(')?.1.strip_suffix(')')?;
    let (precision, scale) = inside.split_once(',')?;
    Some((precision.trim().parse().ok()?, scale.trim().parse().ok()?))
}

/// The kind an Avro field type (with the null branch removed) gives on its own.
fn kind_of_avro(avro: &Json) -> ColumnKind {
    match avro {
        Json::String(name) => match name.as_str() {
            "boolean" => ColumnKind::Bool,
            "int" => ColumnKind::Int32,
            "long" => ColumnKind::Int64,
            "float" => ColumnKind::Float32,
            "double" => ColumnKind::Float64,
            "bytes" => ColumnKind::Bytes,
            _ => ColumnKind::Text,
        },
        Json::Array(branches) => branches
            .iter()
            .find(|b| b.as_str() != Some("null"))
            .map_or(ColumnKind::Text, kind_of_avro),
        Json::Object(map) => {
            let logical = map.get("logicalType").and_then(Json::as_str);
            match (map.get("type").and_then(Json::as_str), logical) {
                (_, Some("decimal")) => ColumnKind::Decimal {
                    precision: map.get("precision").and_then(Json::as_u64).unwrap_or(38) as u32,
                    scale: map.get("scale").and_then(Json::as_u64).unwrap_or(0) as u32,
                },
                (_, Some("date")) => ColumnKind::Date,
                (_, Some("time-micros" | "time-millis")) => ColumnKind::Time,
                (_, Some("timestamp-micros" | "timestamp-millis")) => ColumnKind::TimestampTz,
                (_, Some("local-timestamp-micros" | "local-timestamp-millis")) => {
                    ColumnKind::Timestamp
                }
                (_, Some("uuid")) => ColumnKind::Uuid,
                (Some("array"), _) => ColumnKind::Array(Box::new(
                    map.get("items").map_or(ColumnKind::Text, kind_of_avro),
                )),
                (Some(other), _) => kind_of_avro(&Json::String(other.to_owned())),
                (None, _) => ColumnKind::Text,
            }
        }
        _ => ColumnKind::Text,
    }
}

/// Combines the structural kind with the source type name: the name refines only where it
/// agrees with the structure (a domain over `int4` named `posint` stays `Int32`).
fn refine(structural: ColumnKind, pg_type: Option<&str>) -> ColumnKind {
    let Some(named) = pg_type.and_then(kind_of_pg_type) else {
        return structural;
    };
    match (&structural, &named) {
        (ColumnKind::Int32, ColumnKind::Int16) => named,
        (ColumnKind::Text, ColumnKind::Json | ColumnKind::Numeric | ColumnKind::Other(_)) => named,
        (ColumnKind::Int64, ColumnKind::Timestamp | ColumnKind::TimestampTz) => named,
        (ColumnKind::Int32, ColumnKind::Date) | (ColumnKind::Int64, ColumnKind::Time) => named,
        (ColumnKind::Text, ColumnKind::Uuid) => named,
        (ColumnKind::Array(inner), ColumnKind::Array(_)) => ColumnKind::Array(Box::new(refine(
            (**inner).clone(),
            pg_type.and_then(|t| t.strip_suffix("[]")),
        ))),
        _ => structural,
    }
}

/// A column from an Avro record field: its source name (`tidemark.column` where Avro
/// renamed it) and its kind (the field's type refined by `tidemark.type`, when present).
pub(crate) fn column_of_avro_field(field: &Json) -> SinkColumn {
    let avro_name = field.get("name").and_then(Json::as_str).unwrap_or_default();
    let name = field
        .get(COLUMN_ATTRIBUTE)
        .and_then(Json::as_str)
        .unwrap_or(avro_name);
    let pg_type = field.get(PG_TYPE_ATTRIBUTE).and_then(Json::as_str);
    let structural = field.get("type").map_or(ColumnKind::Text, kind_of_avro);
    SinkColumn {
        name: name.to_owned(),
        kind: refine(structural, pg_type),
    }
}

/// The shape of a table from its Avro envelope schema (`before`/`after` are the value
/// record) and key schema.
pub(crate) fn from_avro(envelope: &Json, key: Option<&Json>) -> Option<TableShape> {
    let fields = envelope.get("fields")?.as_array()?;
    let after = fields
        .iter()
        .find(|f| f.get("name") == Some(&"before".into()))?;
    let record = after
        .get("type")?
        .as_array()?
        .iter()
        .find(|b| b.is_object())?;
    let columns = record
        .get("fields")?
        .as_array()?
        .iter()
        .map(column_of_avro_field)
        .collect::<Vec<_>>();
    let key = key_names(key, &columns, "name");
    let renamed = renamed_by_aliases(record.get("fields")?.as_array()?, &columns);
    Some(TableShape {
        columns,
        key,
        renamed,
    })
}

/// Columns renamed at the source, `(old, new)`: a field's first alias is its old name.
fn renamed_by_aliases(fields: &[Json], columns: &[SinkColumn]) -> Vec<(String, String)> {
    fields
        .iter()
        .zip(columns)
        .filter_map(|(field, column)| {
            let old = field.get("aliases")?.as_array()?.first()?.as_str()?;
            Some((old.to_owned(), column.name.clone()))
        })
        .collect()
}

/// Key column names from a key schema's fields (`name_field`: `name` in Avro, `field` in
/// Connect), mapped back to column names where Avro renamed them.
fn key_names(key: Option<&Json>, columns: &[SinkColumn], name_field: &str) -> Vec<String> {
    let Some(fields) = key.and_then(|k| k.get("fields")).and_then(Json::as_array) else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|f| f.get(name_field).and_then(Json::as_str))
        .map(|name| {
            columns
                .iter()
                .find(|c| c.name == name || crate::schema::avro::avro_name(&c.name) == name)
                .map_or_else(|| name.to_owned(), |c| c.name.clone())
        })
        .collect()
}

/// The kind a Connect field schema gives.
/// Connect's name of a decimal carried as unscaled bytes (`decimal.handling.mode=precise`).
const CONNECT_DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";

/// The scale of a Connect `Decimal` field (or of an array's `Decimal` items): its values are
/// base64 unscaled bytes, not text. None for every other field.
pub(crate) fn connect_decimal_scale(field: &Json) -> Option<i32> {
    if field.get("type").and_then(Json::as_str) == Some("array") {
        return field.get("items").and_then(connect_decimal_scale);
    }
    if field.get("name").and_then(Json::as_str) != Some(CONNECT_DECIMAL) {
        return None;
    }
    field
        .get("parameters")
        .and_then(|p| p.get("scale"))
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
        .or(Some(0))
}

/// How a Connect field's JSON values are encoded where they are not the column's plain
/// form: a `Decimal`'s base64 unscaled bytes, or Debezium's millisecond times
/// (`io.debezium.time.Time`, `io.debezium.time.Timestamp`, written by its default
/// `adaptive` time precision for columns of precision 0–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectEncoding {
    /// Base64 unscaled bytes at this scale.
    DecimalBytes(i32),
    /// Milliseconds where the column's kind holds microseconds.
    Millis,
    /// Debezium's `MicroDuration`: an interval as an int64 of microseconds.
    MicroDuration,
    /// Debezium's `Bits`: a bit string as base64 bytes, least significant first, of a
    /// column of this many bits (`i32::MAX`: no declared length).
    Bits(i32),
    /// Debezium's geometry `Point` struct (`x`, `y`, `wkb`, `srid`).
    Point,
}

/// [`ConnectEncoding`] of a field (or of an array's items); none for plain values.
pub(crate) fn connect_encoding(field: &Json) -> Option<ConnectEncoding> {
    if field.get("type").and_then(Json::as_str) == Some("array") {
        return field.get("items").and_then(connect_encoding);
    }
    match field.get("name").and_then(Json::as_str) {
        Some(MILLIS_TIME | MILLIS_TIMESTAMP) => Some(ConnectEncoding::Millis),
        Some(MICRO_DURATION) => Some(ConnectEncoding::MicroDuration),
        Some(POINT) => Some(ConnectEncoding::Point),
        Some(BITS) => Some(ConnectEncoding::Bits(
            field
                .get("parameters")
                .and_then(|p| p.get("length"))
                .and_then(Json::as_str)
                .and_then(|l| l.parse().ok())
                .unwrap_or(i32::MAX),
        )),
        _ => connect_decimal_scale(field).map(ConnectEncoding::DecimalBytes),
    }
}

/// Debezium's `time` of millisecond precision: an int32 of milliseconds since midnight.
const MILLIS_TIME: &str = "io.debezium.time.Time";
/// Debezium's `timestamp` of millisecond precision: an int64 of milliseconds since 1970.
const MILLIS_TIMESTAMP: &str = "io.debezium.time.Timestamp";

/// Debezium's `point`.
const POINT: &str = "io.debezium.data.geometry.Point";

/// Debezium's bit strings other than `bit(1)`.
const BITS: &str = "io.debezium.data.Bits";

/// Debezium's `interval` (its default `interval.handling.mode=numeric`).
const MICRO_DURATION: &str = "io.debezium.time.MicroDuration";

/// [`connect_encoding`] of each row column of a Connect envelope schema, in order.
pub(crate) fn connect_encodings(envelope: &Json) -> Vec<Option<ConnectEncoding>> {
    envelope
        .get("fields")
        .and_then(Json::as_array)
        .and_then(|fields| {
            fields
                .iter()
                .find(|f| f.get("field") == Some(&"before".into()))
        })
        .and_then(|before| before.get("fields"))
        .and_then(Json::as_array)
        .map(|fields| fields.iter().map(connect_encoding).collect())
        .unwrap_or_default()
}

fn kind_of_connect(field: &Json) -> ColumnKind {
    let name = field.get("name").and_then(Json::as_str);
    let parameter = |key: &str| {
        field
            .get("parameters")
            .and_then(|p| p.get(key))
            .and_then(Json::as_str)
            .and_then(|v| v.parse::<u32>().ok())
    };
    let structural = match (field.get("type").and_then(Json::as_str), name) {
        (_, Some(CONNECT_DECIMAL)) => {
            match (parameter("connect.decimal.precision"), parameter("scale")) {
                (Some(precision), Some(scale)) => ColumnKind::Decimal { precision, scale },
                _ => ColumnKind::Numeric,
            }
        }
        (_, Some("io.debezium.data.VariableScaleDecimal")) => ColumnKind::Numeric,
        (_, Some("io.debezium.time.Date")) => ColumnKind::Date,
        (_, Some("io.debezium.time.MicroTime" | MILLIS_TIME)) => ColumnKind::Time,
        (_, Some("io.debezium.time.MicroTimestamp" | MILLIS_TIMESTAMP)) => ColumnKind::Timestamp,
        (_, Some("io.debezium.time.ZonedTimestamp")) => ColumnKind::TimestampTz,
        (_, Some("io.debezium.data.Uuid")) => ColumnKind::Uuid,
        (_, Some("io.debezium.data.Json")) => ColumnKind::Json,
        // A Connect map (an hstore under Debezium's `hstore.handling.mode = map`): its
        // JSON object.
        (Some("map"), _) => ColumnKind::Json,
        (_, Some(MICRO_DURATION | "io.debezium.time.Interval")) => {
            ColumnKind::Other("interval".into())
        }
        (_, Some("io.debezium.time.ZonedTime")) => ColumnKind::Other("timetz".into()),
        (_, Some(BITS)) => ColumnKind::Other("bit".into()),
        (_, Some(POINT)) => ColumnKind::Other("point".into()),
        (Some("boolean"), _) => ColumnKind::Bool,
        (Some("int8" | "int16"), _) => ColumnKind::Int16,
        (Some("int32"), _) => ColumnKind::Int32,
        (Some("int64"), _) => ColumnKind::Int64,
        (Some("float"), _) => ColumnKind::Float32,
        (Some("double"), _) => ColumnKind::Float64,
        (Some("bytes"), _) => ColumnKind::Bytes,
        (Some("array"), _) => ColumnKind::Array(Box::new(
            field.get("items").map_or(ColumnKind::Text, kind_of_connect),
        )),
        _ => ColumnKind::Text,
    };
    let pg_type = field
        .get("parameters")
        .and_then(|p| p.get(crate::schema::connect_schema::SOURCE_TYPE_PARAMETER))
        .and_then(Json::as_str);
    match (structural, pg_type.and_then(kind_of_pg_type)) {
        // Connect has one timestamp name for both; the source type tells them apart.
        (ColumnKind::Timestamp, Some(ColumnKind::TimestampTz)) => ColumnKind::TimestampTz,
        (structural, _) => refine(structural, pg_type),
    }
}

/// The shape of a table from a Connect envelope schema and key schema (JSON with
/// `schemas.enable=true`).
pub(crate) fn from_connect(envelope: &Json, key: Option<&Json>) -> Option<TableShape> {
    let fields = envelope.get("fields")?.as_array()?;
    let before = fields
        .iter()
        .find(|f| f.get("field") == Some(&"before".into()))?;
    let columns = before
        .get("fields")?
        .as_array()?
        .iter()
        .map(|field| SinkColumn {
            name: field
                .get("field")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned(),
            kind: kind_of_connect(field),
        })
        .collect::<Vec<_>>();
    let key = key_names(key, &columns, "field");
    // Old names of renamed columns: `aliases`, a tidemark addition to the Connect schema
    // that only its `connect` Avro mapping carries (`super::decode::connect_avro`).
    let renamed = renamed_by_aliases(before.get("fields")?.as_array()?, &columns);
    Some(TableShape {
        columns,
        key,
        renamed,
    })
}

/// The kind a JSON value suggests when records carry no schema: integers are `Int64`,
/// other numbers `Float64`, booleans `Bool`, arrays arrays of their first non-null item's
/// kind, objects `Json`, and strings (and nulls) `Text`. This is lossy by nature (a
/// timestamp arrives as a number, a numeric as text): set `kafka.json_schemas = true`, or
/// use Avro, for exact warehouse types.
pub(crate) fn infer_kind(value: &Json) -> ColumnKind {
    match value {
        Json::Bool(_) => ColumnKind::Bool,
        Json::Number(n) if n.is_i64() || n.is_u64() => ColumnKind::Int64,
        Json::Number(_) => ColumnKind::Float64,
        Json::Array(items) => ColumnKind::Array(Box::new(
            items
                .iter()
                .find(|v| !v.is_null())
                .map_or(ColumnKind::Text, infer_kind),
        )),
        Json::Object(_) => ColumnKind::Json,
        _ => ColumnKind::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pg_type_names_give_kinds() {
        assert_eq!(
            kind_of_pg_type("numeric(12,2)"),
            Some(ColumnKind::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(kind_of_pg_type("numeric"), Some(ColumnKind::Numeric));
        assert_eq!(kind_of_pg_type("numeric(5,-2)"), Some(ColumnKind::Numeric));
        assert_eq!(
            kind_of_pg_type("int4[]"),
            Some(ColumnKind::Array(Box::new(ColumnKind::Int32)))
        );
        assert_eq!(kind_of_pg_type("varchar(10)"), Some(ColumnKind::Text));
        assert_eq!(
            kind_of_pg_type("interval"),
            Some(ColumnKind::Other("interval".into()))
        );
        assert_eq!(kind_of_pg_type("mood"), None);
    }

    #[test]
    fn avro_envelope_gives_the_shape() {
        let table = crate::domain::event::TableSchema {
            relation_id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                crate::domain::event::Column::new("id", crate::domain::column_type::TypeKind::Int4),
                crate::domain::event::Column::new(
                    "small",
                    crate::domain::column_type::TypeKind::Int2,
                ),
            ],
            key_columns: vec![0],
            key_source: crate::domain::event::KeySource::PrimaryKey,
            replica_identity: crate::domain::event::ReplicaIdentity::Default,
        };
        let mut table = table;
        table.columns[0].column_type.name = "int4".into();
        table.columns[1].column_type.name = "int2".into();
        let avro = crate::schema::avro::derive(&table, "p").unwrap_or_else(|e| panic!("{e}"));
        let shape = from_avro(&avro.envelope_json, avro.key_json.as_ref())
            .unwrap_or_else(|| panic!("no shape"));
        assert_eq!(shape.key, vec!["id"]);
        assert_eq!(shape.columns[0].kind, ColumnKind::Int32);
        assert_eq!(shape.columns[1].kind, ColumnKind::Int16);
    }

    #[test]
    fn widening_is_only_lossless() {
        use ColumnKind::*;
        assert!(Int64.widens(&Int32));
        assert!(!Int32.widens(&Int64));
        assert!(
            Decimal {
                precision: 12,
                scale: 2
            }
            .widens(&Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert!(
            !Decimal {
                precision: 12,
                scale: 4
            }
            .widens(&Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert!(Text.widens(&Int32));
        assert!(!Int32.widens(&Text));
        assert!(!TimestampTz.widens(&Timestamp));
    }

    #[test]
    fn debeziums_string_forms_of_bytes_and_maps_of_hstores_are_read() {
        let field = |json: Json| kind_of_connect(&json);
        // `hstore.handling.mode = map`: the pairs as a JSON document.
        assert_eq!(
            field(
                serde_json::json!({"type": "map", "keys": {"type": "string"},
                "values": {"type": "string", "optional": true}, "field": "hs",
                "parameters": {"__debezium.source.column.type": "hstore"}})
            ),
            ColumnKind::Json
        );
        // `binary.handling.mode = hex` (or base64): the text, kept as written.
        assert_eq!(
            field(serde_json::json!({"type": "string", "field": "b",
                "parameters": {"__debezium.source.column.type": "bytea"}})),
            ColumnKind::Text
        );
    }

    #[test]
    fn json_values_suggest_kinds() {
        assert_eq!(infer_kind(&json!(1)), ColumnKind::Int64);
        assert_eq!(infer_kind(&json!(1.5)), ColumnKind::Float64);
        assert_eq!(
            infer_kind(&json!([null, "a"])),
            ColumnKind::Array(Box::new(ColumnKind::Text))
        );
    }
}
