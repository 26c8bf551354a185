//! Avro schemas derived from tables, events as Avro data, and Confluent's wire framing.
//!
//! This is tidemark's own Avro mapping (`[events] avro_mapping = "tidemark"`, the `native`
//! preset's); the `debezium` preset writes Kafka Connect's form instead
//! ([`super::connect_avro`]). The framing, the datum reader and the Avro-to-Connect-JSON
//! conversion here serve both.
//!
//! Type mapping (the design brief's table):
//!
//! | PostgreSQL | Avro |
//! |---|---|
//! | bool, int2, int4, int8, float4, float8 | boolean, int, int, long, float, double |
//! | numeric(p,s) | bytes, logicalType decimal(p,s) (exact; `NaN` is written as null with a warning and `tidemark_values_nulled_total`) |
//! | numeric (unconstrained) | string, the exact decimal text |
//! | text types, enums, interval, timetz, json, everything else | string |
//! | bytea | bytes |
//! | date / time | int date / long time-micros |
//! | timestamp / timestamptz | long local-timestamp-micros / long timestamp-micros (UTC) |
//! | uuid | string, logicalType uuid |
//! | arrays | array of the element type with nullable items |
//!
//! Value columns are `["null", T]` with default null, NOT NULL ones too (unlike Debezium's
//! JSON, which tidemark's matches: making a registered subject's field required is an
//! incompatible change, and NOT NULL can change under a running pipeline), with the column
//! comment as `doc` and the PostgreSQL type in a `tidemark.type`
//! attribute; key columns are plain `T`. Record names follow Debezium:
//! `<prefix>.<schema>.<table>.Key`, `.Value`, `.Envelope`, with characters Avro does not allow
//! in names replaced by `_`. `±infinity` dates and timestamps are the extreme values of their
//! integer types, as in the JSON output. The fixed `source` and `transaction` blocks come from
//! `schemas/*.avsc`.
//!
//! This module is the mapping and a reference encoder through apache-avro's value tree;
//! [`super::avro_write`] is the hot-path writer, tested byte for byte against it.

use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema};
use base64::Engine;
use serde_json::{Value as Json, json};

use crate::domain::column_type::TypeKind;
use crate::domain::event::{
    ChangeEvent, Column, EnvelopeContext, TableSchema, unavailable_placeholder,
};
use crate::domain::value::Value;

/// The source block schema (`schemas/source.avsc`).
pub(crate) const SOURCE_AVSC: &str = include_str!("../../schemas/source.avsc");
/// The transaction block schema (`schemas/transaction.avsc`).
pub(crate) const TRANSACTION_AVSC: &str = include_str!("../../schemas/transaction.avsc");

/// Avro failures.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// A schema is not valid Avro (a bug, or a bad `schemas/*.avsc`).
    #[error("invalid Avro schema {name}: {detail}")]
    Schema {
        /// Which schema.
        name: String,
        /// apache-avro's message.
        detail: String,
    },
    /// A value cannot be represented in its column's Avro type.
    #[error("column {column}: {detail}")]
    Value {
        /// Column.
        column: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Encoding failed.
    #[error("encoding Avro: {0}")]
    Encode(String),
}

/// A name Avro accepts: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn avro_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn namespace(table: &TableSchema, prefix: &str) -> String {
    [prefix, &table.schema, &table.name]
        .iter()
        .map(|part| avro_name(part))
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether `kind` maps to Avro `string` (unconstrained numeric, text-like types and
/// everything without a closer Avro type).
pub(crate) fn maps_to_string(kind: &TypeKind) -> bool {
    match kind {
        TypeKind::Numeric {
            precision: Some(_),
            scale: Some(scale),
        } => *scale < 0,
        TypeKind::Numeric { .. }
        | TypeKind::Text
        | TypeKind::Enum
        | TypeKind::Other
        | TypeKind::TimeTz
        | TypeKind::Interval
        | TypeKind::Json => true,
        _ => false,
    }
}

fn column_type(kind: &TypeKind) -> Json {
    if maps_to_string(kind) {
        return json!("string");
    }
    match kind {
        TypeKind::Bool => json!("boolean"),
        TypeKind::Int2 | TypeKind::Int4 => json!("int"),
        TypeKind::Int8 => json!("long"),
        TypeKind::Float4 => json!("float"),
        TypeKind::Float8 => json!("double"),
        TypeKind::Numeric {
            precision: Some(precision),
            scale: Some(scale),
        } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        TypeKind::Bytea => json!("bytes"),
        TypeKind::Date => json!({"type": "int", "logicalType": "date"}),
        TypeKind::Time => json!({"type": "long", "logicalType": "time-micros"}),
        TypeKind::Timestamp => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
        TypeKind::TimestampTz => json!({"type": "long", "logicalType": "timestamp-micros"}),
        TypeKind::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        TypeKind::Array(element) => {
            json!({"type": "array", "items": ["null", column_type(element)]})
        }
        _ => json!("string"),
    }
}

fn parse(name: &str, json: &Json) -> Result<Schema, AvroError> {
    Schema::parse(json).map_err(|e| AvroError::Schema {
        name: name.to_owned(),
        detail: e.to_string(),
    })
}

fn fixed(name: &str, text: &str) -> Result<Json, AvroError> {
    serde_json::from_str(text).map_err(|e| AvroError::Schema {
        name: name.to_owned(),
        detail: e.to_string(),
    })
}

/// A value record field: `["null", T]` with default null, the column comment as doc, and
/// the PostgreSQL type (and the column's own name, when Avro's rules changed it) as extra
/// attributes, which Avro readers ignore and schema-change records read back.
fn value_field(column: &Column, renamed_from: Option<&str>) -> Json {
    let mut field = json!({
        "name": avro_name(&column.name),
        "type": ["null", column_type(&column.column_type.kind)],
        "default": null,
        PG_TYPE_ATTRIBUTE: column.type_display(),
    });
    if let Some(comment) = &column.comment {
        field["doc"] = json!(comment);
    }
    if avro_name(&column.name) != column.name {
        field[COLUMN_ATTRIBUTE] = json!(column.name);
    }
    if let Some(old) = renamed_from {
        // Avro's own way to say a field was renamed: readers resolve the old name to it.
        field["aliases"] = json!([avro_name(old)]);
    }
    field
}

/// Field attribute holding the PostgreSQL type of a column.
pub(crate) const PG_TYPE_ATTRIBUTE: &str = "tidemark.type";
/// Field attribute holding a column's name when it is not a valid Avro name.
pub(crate) const COLUMN_ATTRIBUTE: &str = "tidemark.column";

/// The Avro schemas of one table.
#[derive(Debug, Clone)]
pub struct TableAvro {
    /// Key schema (a record of the key columns), or none for keyless tables.
    pub key: Option<Schema>,
    /// Envelope schema of the table's events.
    pub envelope: Schema,
    /// The key schema as JSON (what a registry stores).
    pub key_json: Option<Json>,
    /// The envelope schema as JSON.
    pub envelope_json: Json,
}

/// Derives the key and envelope schemas of `table` under `prefix`.
pub fn derive(table: &TableSchema, prefix: &str) -> Result<TableAvro, AvroError> {
    derive_renamed(table, prefix, &[])
}

/// [`derive()`], with the value fields of columns renamed by captured DDL (`(old, new)`
/// pairs) carrying their old name in `aliases`, so a reader (the sink) renames the column
/// instead of seeing a drop and an add.
pub(crate) fn derive_renamed(
    table: &TableSchema,
    prefix: &str,
    renames: &[(String, String)],
) -> Result<TableAvro, AvroError> {
    let ns = namespace(table, prefix);
    let key_json = (!table.record_key_columns().is_empty()).then(|| {
        let fields: Vec<Json> = table
            .record_key_columns()
            .iter()
            .filter_map(|&i| table.columns.get(i))
            .map(|c| json!({"name": avro_name(&c.name), "type": column_type(&c.column_type.kind)}))
            .collect();
        json!({"type": "record", "name": "Key", "namespace": ns, "fields": fields})
    });
    let value_fields: Vec<Json> = table
        .columns
        .iter()
        .map(|c| {
            let old = renames
                .iter()
                .find(|(_, new)| *new == c.name)
                .map(|(old, _)| old.as_str());
            value_field(c, old)
        })
        .collect();
    let value_record =
        json!({"type": "record", "name": "Value", "namespace": ns, "fields": value_fields});
    let envelope_json = json!({
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "fields": [
            {"name": "before", "type": ["null", value_record], "default": null},
            {"name": "after", "type": ["null", format!("{ns}.Value")], "default": null},
            {"name": "source", "type": fixed("source.avsc", SOURCE_AVSC)?},
            {"name": "transaction", "type": ["null", fixed("transaction.avsc", TRANSACTION_AVSC)?], "default": null},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": null},
            {"name": "ts_us", "type": ["null", "long"], "default": null},
            {"name": "ts_ns", "type": ["null", "long"], "default": null},
            {"name": "unchanged_toast", "type": {"type": "array", "items": "string"}, "default": []},
        ],
    });
    Ok(TableAvro {
        key: key_json.as_ref().map(|k| parse("Key", k)).transpose()?,
        envelope: parse("Envelope", &envelope_json)?,
        key_json,
        envelope_json,
    })
}

/// The unscaled two's-complement big-endian bytes of decimal text at `scale`
/// ([`crate::domain::decimal::unscaled_bytes`]), its error naming `column`.
pub(crate) fn decimal_bytes(text: &str, scale: i32, column: &str) -> Result<Vec<u8>, AvroError> {
    let scale = u32::try_from(scale).map_err(|_| AvroError::Value {
        column: column.to_owned(),
        detail: format!("negative scale {scale}"),
    })?;
    crate::domain::decimal::unscaled_bytes(text, scale).map_err(|e| AvroError::Value {
        column: column.to_owned(),
        detail: e.to_string(),
    })
}

fn to_avro(value: &Value, kind: &TypeKind, column: &str) -> Result<Avro, AvroError> {
    Ok(match (value, kind) {
        (Value::Null, _) => Avro::Null,
        (Value::Bool(v), _) => Avro::Boolean(*v),
        (Value::Int16(v), _) => Avro::Int(i32::from(*v)),
        (Value::Int32(v), _) => Avro::Int(*v),
        (Value::Int64(v), _) => Avro::Long(*v),
        (Value::Float32(v), _) => Avro::Float(*v),
        (Value::Float64(v), _) => Avro::Double(*v),
        (
            Value::Numeric(text),
            TypeKind::Numeric {
                precision: Some(_),
                scale: Some(scale),
            },
        ) if *scale >= 0 => {
            if let Some(special) = special_decimal(value, kind) {
                crate::domain::decimal::note_nulled(column, special);
                return Ok(Avro::Null);
            }
            Avro::Decimal(Decimal::from(decimal_bytes(text, *scale, column)?))
        }
        (Value::Numeric(text) | Value::Text(text) | Value::Json(text), _) => {
            Avro::String(text.clone())
        }
        (Value::Uuid(text), _) => {
            let uuid = uuid::Uuid::parse_str(text).map_err(|e| AvroError::Value {
                column: column.to_owned(),
                detail: format!("{text:?} is not a UUID: {e}"),
            })?;
            Avro::Uuid(uuid)
        }
        (Value::Bytes(v), _) => Avro::Bytes(v.clone()),
        (Value::Date(v), _) => Avro::Date(*v),
        (Value::Time(v), _) => Avro::TimeMicros(*v),
        (Value::Timestamp(v), _) => Avro::LocalTimestampMicros(*v),
        (Value::TimestampTz(v), _) => Avro::TimestampMicros(*v),
        (Value::Array(_), kind) if super::avro_write::is_multidimensional(value, kind) => {
            super::avro_write::note_multidimensional(column);
            Avro::Null
        }
        (Value::Array(items), kind) => {
            let element = match kind {
                TypeKind::Array(element) => element.as_ref(),
                _ => kind,
            };
            let items = items
                .iter()
                .map(|item| Ok(nullable(to_avro(item, element, column)?)))
                .collect::<Result<Vec<_>, AvroError>>()?;
            Avro::Array(items)
        }
    })
}

/// The text of `value` if it is NaN or ±Infinity of a `numeric(p,s)` column, which no Avro decimal
/// can hold. Debezium's default (precise) decimal handling stops the connector on such a
/// value, and since it stays in the WAL, every restart stops there again. tidemark writes
/// null instead (every value field is nullable), logs a warning and counts it
/// ([`crate::domain::decimal::note_nulled`]), so one value never halts the stream for good.
/// (Avro does not yet follow `events.decimal_handling_mode`; JSON does, see
/// [`crate::domain::decimal`].)
pub(crate) fn special_decimal<'a>(value: &'a Value, kind: &TypeKind) -> Option<&'a str> {
    match (value, kind) {
        (
            Value::Numeric(text),
            TypeKind::Numeric {
                precision: Some(_),
                scale: Some(_),
            },
        ) if matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity") => Some(text),
        _ => None,
    }
}

fn nullable(value: Avro) -> Avro {
    match value {
        Avro::Null => Avro::Union(0, Box::new(Avro::Null)),
        other => Avro::Union(1, Box::new(other)),
    }
}

/// A row record; the columns at `unavailable` (unchanged TOAST, not sent) hold Debezium's
/// placeholder where their type can ([`unavailable_placeholder`]).
fn row(
    table: &TableSchema,
    values: &[Value],
    unavailable: &[usize],
    placeholder: &[u8],
) -> Result<Avro, AvroError> {
    let fields = table
        .columns
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (column, value))| {
            let kind = &column.column_type.kind;
            let placeholder = (matches!(value, Value::Null) && unavailable.contains(&index))
                .then(|| unavailable_placeholder(kind, placeholder))
                .flatten();
            let value = placeholder.as_ref().unwrap_or(value);
            Ok((
                avro_name(&column.name),
                nullable(to_avro(value, kind, &column.name)?),
            ))
        })
        .collect::<Result<Vec<_>, AvroError>>()?;
    Ok(Avro::Record(fields))
}

/// The key record of an event, if it has one.
pub fn key_datum(event: &ChangeEvent) -> Result<Option<Avro>, AvroError> {
    let (Some(table), Some(key)) = (&event.table, event.key()) else {
        return Ok(None);
    };
    let kinds = table
        .record_key_columns()
        .iter()
        .filter_map(|&i| table.columns.get(i));
    let fields = key
        .iter()
        .zip(kinds)
        .map(|((name, value), column)| {
            Ok((
                avro_name(name),
                to_avro(value, &column.column_type.kind, name)?,
            ))
        })
        .collect::<Result<Vec<_>, AvroError>>()?;
    Ok(Some(Avro::Record(fields)))
}

/// The envelope record of a table event.
pub fn envelope_datum(
    event: &ChangeEvent,
    context: &EnvelopeContext,
    now_ms: i64,
) -> Result<Avro, AvroError> {
    let table = event
        .table
        .as_ref()
        .ok_or_else(|| AvroError::Encode("a table event without its table".into()))?;
    let optional_row =
        |values: &Option<Vec<Value>>, unavailable: &[usize]| -> Result<Avro, AvroError> {
            Ok(match values {
                Some(values) => Avro::Union(
                    1,
                    Box::new(row(table, values, unavailable, &context.unavailable_value)?),
                ),
                None => Avro::Union(0, Box::new(Avro::Null)),
            })
        };
    let position = &event.source;
    let long = |v: i64| Avro::Union(1, Box::new(Avro::Long(v)));
    let string = |v: &str| Avro::Union(1, Box::new(Avro::String(v.to_owned())));
    let snapshot = position.snapshot.as_str();
    let source = Avro::Record(vec![
        (
            "version".into(),
            Avro::String(env!("CARGO_PKG_VERSION").into()),
        ),
        ("connector".into(), Avro::String("postgresql".into())),
        ("name".into(), Avro::String(context.connector_name.clone())),
        (
            "ts_ms".into(),
            Avro::Long(position.commit_time_micros.div_euclid(1000)),
        ),
        (
            "snapshot".into(),
            Avro::Union(0, Box::new(Avro::String(snapshot.into()))),
        ),
        ("db".into(), Avro::String(context.database.clone())),
        (
            "sequence".into(),
            string(&crate::domain::event::sequence(position)),
        ),
        ("ts_us".into(), long(position.commit_time_micros)),
        (
            "ts_ns".into(),
            long(position.commit_time_micros.saturating_mul(1000)),
        ),
        ("schema".into(), string(&table.schema)),
        ("table".into(), string(&table.name)),
        ("txId".into(), long(i64::from(position.xid))),
        ("lsn".into(), long(position.lsn.as_u64() as i64)),
        ("xmin".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("origin".into(), Avro::Union(0, Box::new(Avro::Null))),
        ("origin_lsn".into(), Avro::Union(0, Box::new(Avro::Null))),
        (
            "commit_lsn".into(),
            long(position.commit_lsn.as_u64() as i64),
        ),
        ("seq".into(), long(position.seq as i64)),
    ]);
    // Filled as in JSON ([`EnvelopeContext::fills_transaction_block`]).
    let transaction = if !context.fills_transaction_block(event) {
        Avro::Union(0, Box::new(Avro::Null))
    } else {
        Avro::Union(
            1,
            Box::new(Avro::Record(vec![
                (
                    "id".into(),
                    Avro::String(format!(
                        "{}:{}",
                        position.xid,
                        context.transaction_id_lsn(position).as_u64()
                    )),
                ),
                ("total_order".into(), Avro::Long(position.seq as i64 + 1)),
                (
                    "data_collection_order".into(),
                    Avro::Long(event.data_collection_order as i64),
                ),
            ])),
        )
    };
    let op = serde_json::to_value(event.op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let toast = event
        .unchanged_toast
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .map(|c| Avro::String(c.name.clone()))
        .collect();
    Ok(Avro::Record(vec![
        ("before".into(), optional_row(&event.before, &[])?),
        (
            "after".into(),
            optional_row(&event.after, &event.unchanged_toast)?,
        ),
        ("source".into(), source),
        ("transaction".into(), transaction),
        ("op".into(), Avro::String(op)),
        ("ts_ms".into(), long(now_ms)),
        ("ts_us".into(), long(now_ms.saturating_mul(1000))),
        ("ts_ns".into(), long(now_ms.saturating_mul(1_000_000))),
        ("unchanged_toast".into(), Avro::Array(toast)),
    ]))
}

/// Encodes `datum` with `schema` in Confluent's wire format: magic byte 0, the 4-byte
/// big-endian schema id, then the Avro binary datum.
pub fn confluent_frame(
    schema_id: u32,
    schema: &Schema,
    datum: Avro,
    out: &mut Vec<u8>,
) -> Result<(), AvroError> {
    let body = write_datum(schema, datum).map_err(|e| AvroError::Encode(e.to_string()))?;
    out.clear();
    frame_header(out, schema_id);
    out.extend_from_slice(&body);
    Ok(())
}

/// The Avro binary datum of `value` under `schema`, through apache-avro's generic writer
/// (validated against the schema first). The hot path uses [`super::avro_write`] instead.
pub fn write_datum(schema: &Schema, value: Avro) -> Result<Vec<u8>, apache_avro::Error> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

/// An Avro datum as Kafka Connect's `JsonConverter` writes the same Connect data: records as
/// objects, unions by their branch, bytes and decimals as base64, non-finite floats as
/// `"NaN"`/`"Infinity"`/`"-Infinity"`, logical types as their underlying numbers. The sink
/// reads Avro a Connect converter wrote through it; the tests compare Avro data with it.
pub fn connect_json_value(value: &Avro) -> Json {
    let b64 = |bytes: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(*b),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => Json::from(*n),
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => Json::from(*n),
        Avro::Float(f) => connect_float(f64::from(*f)),
        Avro::Double(f) => connect_float(*f),
        Avro::Bytes(bytes) | Avro::Fixed(_, bytes) => b64(bytes),
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s.clone()),
        Avro::Uuid(u) => Json::String(u.to_string()),
        // The unscaled value's minimal two's-complement bytes, as Connect's `Decimal` writes
        // them (infallible, unlike apache-avro's sign-extended `Vec<u8>` conversion).
        Avro::Decimal(d) => b64(&num_bigint::BigInt::from(d.clone()).to_signed_bytes_be()),
        Avro::Union(_, inner) => connect_json_value(inner),
        Avro::Array(items) => Json::Array(items.iter().map(connect_json_value).collect()),
        Avro::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), connect_json_value(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        Avro::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), connect_json_value(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        other => Json::String(format!("{other:?}")),
    }
}

/// A float as `JsonConverter` writes it: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn connect_float(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(number) => Json::Number(number),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// Reads one Avro binary datum of `schema` from the front of `bytes`. apache-avro checks
/// every length it reads against its allocation budget (element size included for
/// arrays), so a corrupt length cannot make it reserve gigabytes.
pub fn read_datum(schema: &Schema, bytes: &mut &[u8]) -> Result<Avro, apache_avro::Error> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()?
        .read_value(bytes)
}

/// Appends Confluent's frame header: magic byte 0 and the big-endian schema id.
pub(crate) fn frame_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// The schema id and the datum of a record in Confluent's wire format, or none when the
/// bytes do not start with the magic byte and a 4-byte id.
pub(crate) fn split_frame(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, datum @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
