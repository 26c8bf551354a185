//! Kafka records into [`SinkRecord`]s: Avro in Confluent's framing, decoded by schema id
//! through the registry, or JSON with or without Connect schemas.
//!
//! - Avro: magic byte 0, a 4-byte big-endian schema id, the datum. The writer schema is
//!   fetched once per id (the registry's `GET /schemas/ids/{id}`, or, with the embedded
//!   registry and no `[registry] url`, by replaying its `_schemas` topic) and cached. The
//!   table's shape comes from the envelope schema and the key schema (whose id the key
//!   frame carries).
//! - JSON: `{"schema":…,"payload":…}` gives the shape from the Connect schema; a bare
//!   envelope gives it from the values ([`super::shape::infer_kind`]).
//! - A tombstone (null value) is a delete at the position in the record's
//!   `tidemark.commit_lsn`/`tidemark.seq` headers: after compaction it may be all that is
//!   left of a deleted key.
//! - Records that are not table changes (an `m` message routed onto a table topic) are
//!   skipped; anything that cannot be decoded is an error naming the record, never skipped.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use base64::Engine;
use num_bigint::BigInt;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use super::record::{Position, SinkOp, SinkRecord, SourceTable};
use super::shape::{self, ColumnKind, SinkColumn, TableShape};
use crate::config::KafkaConfig;
use crate::domain::value::Value;
use crate::schema::registry_client::RegistryClient;
use crate::schema::registry_store::RegistryStore;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not what the format promises.
    #[error("{0}")]
    Malformed(String),
    /// The schema could not be fetched.
    #[error("fetching schema {id}: {detail}")]
    Schema {
        /// Schema id.
        id: u32,
        /// What failed.
        detail: String,
    },
}

fn malformed(detail: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(detail.into())
}

/// Where writer schemas come from.
pub enum SchemaLookup {
    /// A Confluent-compatible registry over HTTP.
    Registry(RegistryClient),
    /// The embedded registry's `_schemas` topic, replayed when an id is not known yet.
    Topic {
        /// Brokers.
        kafka: KafkaConfig,
        /// Topic name.
        topic: String,
        /// The replayed state.
        store: Box<RegistryStore>,
    },
}

impl SchemaLookup {
    async fn fetch(&mut self, id: u32) -> Result<String, DecodeError> {
        let fail = |detail: String| DecodeError::Schema { id, detail };
        match self {
            SchemaLookup::Registry(client) => client
                .schema(id)
                .await
                .map(|s| s.to_string())
                .map_err(|e| fail(e.to_string())),
            SchemaLookup::Topic {
                kafka,
                topic,
                store,
            } => {
                if let Ok(text) = store.schema(id) {
                    return Ok(text.to_owned());
                }
                let (_, replayed) = crate::schema::registry_http::SchemasTopic::open(kafka, topic)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                **store = replayed;
                store.schema(id).map(str::to_owned).map_err(|e| {
                    fail(format!(
                        "{e} in topic {topic}; is [registry] topic the one the source writes to?"
                    ))
                })
            }
        }
    }
}

struct AvroSchema {
    schema: apache_avro::Schema,
    json: Json,
}

/// Decodes records of one connector's topics.
pub struct Decoder {
    lookup: Option<SchemaLookup>,
    avro: HashMap<u32, Arc<AvroSchema>>,
    avro_shapes: HashMap<(Option<u32>, u32), Arc<TableShape>>,
    connect_shapes: HashMap<String, Arc<TableShape>>,
    inferred: HashMap<SourceTable, Arc<TableShape>>,
    topic_tables: HashMap<String, (SourceTable, Arc<TableShape>)>,
    prefix: String,
}

/// The raw parts of a Kafka record the decoder needs.
pub struct RawRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes (none: a tombstone).
    pub value: Option<&'a [u8]>,
    /// Position from the `tidemark.commit_lsn`/`tidemark.seq` headers.
    pub header_position: Option<Position>,
}

impl Decoder {
    /// A decoder for topics under `prefix`; `lookup` is needed for Avro.
    pub fn new(prefix: &str, lookup: Option<SchemaLookup>) -> Self {
        Decoder {
            lookup,
            avro: HashMap::new(),
            avro_shapes: HashMap::new(),
            connect_shapes: HashMap::new(),
            inferred: HashMap::new(),
            topic_tables: HashMap::new(),
            prefix: prefix.to_owned(),
        }
    }

    async fn avro_schema(&mut self, id: u32) -> Result<Arc<AvroSchema>, DecodeError> {
        if let Some(schema) = self.avro.get(&id) {
            return Ok(schema.clone());
        }
        let lookup = self.lookup.as_mut().ok_or_else(|| {
            malformed(format!(
                "an Avro record (schema id {id}) but no schema registry: set [registry] url, or keep [kafka] format = \"json\""
            ))
        })?;
        let text = lookup.fetch(id).await?;
        self.cache_schema(id, &text)
    }

    /// Makes the writer schema `id` known without asking the registry (for tools that
    /// carry their schemas, and for tests and fuzzing).
    pub fn add_schema(&mut self, id: u32, text: &str) -> Result<(), DecodeError> {
        self.cache_schema(id, text).map(drop)
    }

    fn cache_schema(&mut self, id: u32, text: &str) -> Result<Arc<AvroSchema>, DecodeError> {
        let json: Json = serde_json::from_str(text).map_err(|e| DecodeError::Schema {
            id,
            detail: format!("not JSON: {e}"),
        })?;
        let schema = apache_avro::Schema::parse(&json).map_err(|e| DecodeError::Schema {
            id,
            detail: format!("not a valid Avro schema: {e}"),
        })?;
        let parsed = Arc::new(AvroSchema { schema, json });
        self.avro.insert(id, parsed.clone());
        Ok(parsed)
    }

    /// Decodes one record; `None` for records that are not table changes.
    pub async fn decode(&mut self, raw: &RawRecord<'_>) -> Result<Option<SinkRecord>, DecodeError> {
        let framed = |bytes: &[u8]| crate::schema::avro::split_frame(bytes).is_some();
        let is_avro = raw
            .value
            .map_or_else(|| raw.key.is_some_and(framed), framed);
        let record = if is_avro {
            self.decode_avro(raw).await?
        } else {
            self.decode_json(raw)?
        };
        // Remembered for tombstones, which name no table: only when it changes, not per
        // record.
        if let Some(record) = record.as_ref().filter(|r| r.op == SinkOp::Upsert) {
            let known = self
                .topic_tables
                .get(raw.topic)
                .is_some_and(|(_, shape)| Arc::ptr_eq(shape, &record.shape));
            if !known {
                self.topic_tables.insert(
                    raw.topic.to_owned(),
                    (record.table.clone(), record.shape.clone()),
                );
            }
        }
        Ok(record)
    }

    fn schema_id(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
        crate::schema::avro::split_frame(bytes).ok_or_else(|| {
            malformed("not in Confluent's wire format (magic byte 0 and a 4-byte schema id)")
        })
    }

    async fn decode_avro(
        &mut self,
        raw: &RawRecord<'_>,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        // The key's datum is needed only for a tombstone; otherwise its schema id picks
        // the cached shape, and the row's own values carry the key.
        let key = raw.key.map(Self::schema_id).transpose()?;
        let Some(bytes) = raw.value else {
            let Some((id, datum)) = key else {
                return Ok(None);
            };
            let schema = self.avro_schema(id).await?;
            let key_value = crate::schema::avro::read_datum(&schema.schema, &mut &datum[..])
                .map_err(|e| malformed(format!("key (schema {id}): {e}")))?;
            return self.tombstone_avro(raw, &schema.json, &key_value);
        };
        let (value_id, datum) = Self::schema_id(bytes)?;
        let schema = self.avro_schema(value_id).await?;
        let value = crate::schema::avro::read_datum(&schema.schema, &mut &datum[..])
            .map_err(|e| malformed(format!("value (schema {value_id}): {e}")))?;
        let Avro::Record(fields) = value else {
            return Err(malformed(format!(
                "value (schema {value_id}) is not a record"
            )));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| unwrap_union(v))
        };
        let Some(Avro::String(op)) = field("op") else {
            return Err(malformed(format!(
                "value (schema {value_id}) has no op: not a change envelope"
            )));
        };
        let key_id = key.map(|(id, _)| id);
        let shape = match self.avro_shapes.get(&(key_id, value_id)) {
            Some(shape) => shape.clone(),
            None => {
                let key_schema = match key_id {
                    Some(id) => Some(self.avro_schema(id).await?),
                    None => None,
                };
                let key_json = key_schema.as_ref().map(|s| &s.json);
                let shape = shape::from_avro(&schema.json, key_json).ok_or_else(|| {
                    malformed(format!(
                        "value schema {value_id} is not a change envelope (no before/after record of the table's columns)"
                    ))
                })?;
                let shape = Arc::new(shape);
                self.avro_shapes.insert((key_id, value_id), shape.clone());
                shape
            }
        };
        let source = field("source").ok_or_else(|| malformed("envelope without source"))?;
        let (table, position) = avro_source(source)?;
        let unchanged = match field("unchanged_toast") {
            Some(Avro::Array(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Avro::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let (op, row_field) = match op.as_str() {
            "c" | "u" | "r" => (SinkOp::Upsert, "after"),
            "d" => (SinkOp::Delete, "before"),
            "t" => (SinkOp::Truncate, ""),
            _ => return Ok(None),
        };
        let row = match field(row_field) {
            Some(Avro::Record(values)) => values
                .iter()
                .zip(&shape.columns)
                .map(|((_, v), column)| avro_value(v, &column.kind, &column.name))
                .collect::<Result<Vec<_>, _>>()?,
            _ if op == SinkOp::Truncate => Vec::new(),
            _ => return Err(malformed(format!("op {row_field:?} record missing"))),
        };
        Ok(Some(SinkRecord {
            table,
            shape,
            op,
            position,
            row,
            unchanged,
        }))
    }

    /// The table a tombstone's topic holds: the one last seen on it, else the topic name
    /// `<prefix>.<schema>.<table>`.
    fn tombstone_table(&self, topic: &str) -> Option<SourceTable> {
        if let Some((table, _)) = self.topic_tables.get(topic) {
            return Some(table.clone());
        }
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (schema, name) = rest.split_once('.')?;
        Some(SourceTable {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }

    fn tombstone_avro(
        &self,
        raw: &RawRecord<'_>,
        key_schema: &Json,
        key: &Avro,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let (Some(table), Some(position)) = (self.tombstone_table(raw.topic), raw.header_position)
        else {
            return Ok(None);
        };
        let Avro::Record(fields) = key else {
            return Err(malformed("tombstone key is not a record"));
        };
        let columns: Vec<SinkColumn> = key_schema
            .get("fields")
            .and_then(Json::as_array)
            .map(|f| f.iter().map(shape::column_of_avro_field).collect())
            .unwrap_or_default();
        let row = fields
            .iter()
            .zip(&columns)
            .map(|((_, value), column)| avro_value(value, &column.kind, &column.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(tombstone_delete(table, columns, row, position)))
    }

    fn decode_json(&mut self, raw: &RawRecord<'_>) -> Result<Option<SinkRecord>, DecodeError> {
        let Some(bytes) = raw.value else {
            return self.tombstone_json(raw);
        };
        // `{"schema":…,"payload":…}` is split without building the schema's value tree: the
        // schema's text is the cache key, parsed only the first time it is seen.
        let top: HashMap<&str, &RawValue> = serde_json::from_slice(bytes)
            .map_err(|e| malformed(format!("value is neither Avro nor JSON (an object): {e}")))?;
        let (schema, payload) = match (top.get("schema"), top.get("payload")) {
            (Some(schema), Some(payload)) => (Some(schema.get()), parse_json(payload.get())?),
            _ => (None, parse_json_bytes(bytes)?),
        };
        let Some(op) = payload.get("op").and_then(Json::as_str) else {
            return Ok(None);
        };
        let source = payload
            .get("source")
            .ok_or_else(|| malformed("envelope without source"))?;
        let table = SourceTable {
            schema: text_field(source, "schema")?,
            name: text_field(source, "table")?,
        };
        let position = Position {
            commit_lsn: number_field(source, "commit_lsn")?,
            seq: number_field(source, "seq")?,
        };
        let (op, row_field) = match op {
            "c" | "u" | "r" => (SinkOp::Upsert, "after"),
            "d" => (SinkOp::Delete, "before"),
            "t" => (SinkOp::Truncate, ""),
            _ => return Ok(None),
        };
        let row_json = payload.get(row_field).filter(|r| r.is_object());
        let shape = match schema {
            Some(schema) => match self.connect_shapes.get(schema) {
                Some(shape) => shape.clone(),
                None => {
                    let envelope = parse_json(schema)?;
                    let key = key_json(raw.key)?;
                    let key_schema = key.as_ref().and_then(|k| k.get("schema"));
                    let shape = shape::from_connect(&envelope, key_schema)
                        .ok_or_else(|| malformed("Connect schema without a before field"))?;
                    let shape = Arc::new(shape);
                    self.connect_shapes.insert(schema.to_owned(), shape.clone());
                    shape
                }
            },
            None => self.inferred_shape(&table, row_json, raw.key)?,
        };
        let unchanged = payload
            .get("unchanged_toast")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let row = match row_json {
            Some(row) => shape
                .columns
                .iter()
                .map(|c| json_value(row.get(&c.name).unwrap_or(&Json::Null), &c.kind, &c.name))
                .collect::<Result<Vec<_>, _>>()?,
            None if op == SinkOp::Truncate => Vec::new(),
            None => return Err(malformed(format!("op {row_field:?} record missing"))),
        };
        Ok(Some(SinkRecord {
            table,
            shape,
            op,
            position,
            row,
            unchanged,
        }))
    }

    /// A JSON tombstone: a delete of its key, typed as the topic's last shape says.
    fn tombstone_json(&self, raw: &RawRecord<'_>) -> Result<Option<SinkRecord>, DecodeError> {
        let key = key_json(raw.key)?;
        let payload = key
            .as_ref()
            .map(|k| match (k.get("schema"), k.get("payload")) {
                (Some(_), Some(payload)) => payload,
                _ => k,
            });
        let (Some(table), Some(position), Some(Json::Object(key))) = (
            self.tombstone_table(raw.topic),
            raw.header_position,
            payload,
        ) else {
            return Ok(None);
        };
        let known = self.topic_tables.get(raw.topic).map(|(_, s)| s.clone());
        let mut columns = Vec::new();
        let mut row = Vec::new();
        for (name, value) in key {
            let kind = known
                .as_ref()
                .and_then(|s| s.column(name))
                .map_or_else(|| shape::infer_kind(value), |c| c.kind.clone());
            row.push(json_value(value, &kind, name)?);
            columns.push(SinkColumn {
                name: name.clone(),
                kind,
            });
        }
        Ok(Some(tombstone_delete(table, columns, row, position)))
    }

    /// A schemaless table's shape: the columns seen so far, each typed by its first
    /// non-null value; a new column or a first non-null value gives a new shape.
    fn inferred_shape(
        &mut self,
        table: &SourceTable,
        row: Option<&Json>,
        key: Option<&[u8]>,
    ) -> Result<Arc<TableShape>, DecodeError> {
        let known = self.inferred.get(table).cloned().unwrap_or_default();
        let Some(Json::Object(row)) = row else {
            return Ok(known);
        };
        // The common case, a row of a shape already known, builds nothing.
        let unchanged = row.iter().all(|(name, value)| {
            known
                .column(name)
                .is_some_and(|c| value.is_null() || c.kind != ColumnKind::Text || value.is_string())
        });
        if unchanged && !known.key.is_empty() {
            return Ok(known);
        }
        let mut shape = (*known).clone();
        if shape.key.is_empty() {
            if let Some(Json::Object(key)) = key_json(key)? {
                shape.key = key.keys().cloned().collect();
            }
        }
        for (name, value) in row {
            match shape.columns.iter_mut().find(|c| &c.name == name) {
                Some(column) if column.kind == ColumnKind::Text && !value.is_null() => {
                    if !value.is_string() {
                        column.kind = shape::infer_kind(value);
                    }
                }
                Some(_) => {}
                None => shape.columns.push(SinkColumn {
                    name: name.clone(),
                    kind: shape::infer_kind(value),
                }),
            }
        }
        if shape != *known {
            let shape = Arc::new(shape);
            self.inferred.insert(table.clone(), shape.clone());
            return Ok(shape);
        }
        Ok(known)
    }
}

fn parse_json(text: &str) -> Result<Json, DecodeError> {
    serde_json::from_str(text).map_err(|e| malformed(format!("value is not valid JSON: {e}")))
}

fn parse_json_bytes(bytes: &[u8]) -> Result<Json, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| malformed(format!("value is not valid JSON: {e}")))
}

/// A JSON key, parsed only where it is needed (a tombstone, a shape seen first).
fn key_json(key: Option<&[u8]>) -> Result<Option<Json>, DecodeError> {
    key.map(|k| {
        serde_json::from_slice(k)
            .map_err(|e| malformed(format!("key is neither Avro nor JSON: {e}")))
    })
    .transpose()
}

fn text_field(source: &Json, name: &str) -> Result<String, DecodeError> {
    source
        .get(name)
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| malformed(format!("source.{name} missing")))
}

fn number_field(source: &Json, name: &str) -> Result<u64, DecodeError> {
    source
        .get(name)
        .and_then(Json::as_u64)
        .ok_or_else(|| malformed(format!("source.{name} missing")))
}

fn unwrap_union(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

fn avro_source(source: &Avro) -> Result<(SourceTable, Position), DecodeError> {
    let Avro::Record(fields) = source else {
        return Err(malformed("source is not a record"));
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unwrap_union(v))
    };
    let text = |name: &str| match get(name) {
        Some(Avro::String(s)) => Ok(s.clone()),
        _ => Err(malformed(format!("source.{name} missing"))),
    };
    let number = |name: &str| match get(name) {
        Some(Avro::Long(v)) => Ok(*v as u64),
        _ => Err(malformed(format!("source.{name} missing"))),
    };
    Ok((
        SourceTable {
            schema: text("schema")?,
            name: text("table")?,
        },
        Position {
            commit_lsn: number("commit_lsn")?,
            seq: number("seq")?,
        },
    ))
}

/// Exact decimal text of an unscaled integer at `scale`.
pub(crate) fn decimal_text(unscaled: &BigInt, scale: u32) -> String {
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

fn wrong(column: &str, kind: &ColumnKind, got: &str) -> DecodeError {
    malformed(format!(
        "column {column}: a {got} where {kind:?} was expected"
    ))
}

fn avro_value(value: &Avro, kind: &ColumnKind, column: &str) -> Result<Value, DecodeError> {
    let value = unwrap_union(value);
    Ok(match (value, kind) {
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(v), _) => Value::Bool(*v),
        (Avro::Int(v), ColumnKind::Int16) => {
            Value::Int16(i16::try_from(*v).map_err(|_| wrong(column, kind, "32-bit int"))?)
        }
        (Avro::Int(v) | Avro::Date(v), ColumnKind::Date) => Value::Date(*v),
        (Avro::Int(v), _) => Value::Int32(*v),
        (Avro::Long(v) | Avro::TimeMicros(v), ColumnKind::Time) => Value::Time(*v),
        (Avro::Long(v) | Avro::TimestampMicros(v), ColumnKind::TimestampTz) => {
            Value::TimestampTz(*v)
        }
        (Avro::Long(v) | Avro::LocalTimestampMicros(v), ColumnKind::Timestamp) => {
            Value::Timestamp(*v)
        }
        (Avro::Long(v), _) => Value::Int64(*v),
        (Avro::Date(v), _) => Value::Date(*v),
        (Avro::TimeMicros(v), _) => Value::Time(*v),
        (Avro::TimestampMicros(v), _) => Value::TimestampTz(*v),
        (Avro::LocalTimestampMicros(v), _) => Value::Timestamp(*v),
        (Avro::Float(v), _) => Value::Float32(*v),
        (Avro::Double(v), _) => Value::Float64(*v),
        (Avro::Decimal(d), ColumnKind::Decimal { scale, .. }) => {
            Value::Numeric(decimal_text(&BigInt::from(d.clone()), *scale))
        }
        (Avro::Bytes(b), ColumnKind::Decimal { scale, .. }) => {
            Value::Numeric(decimal_text(&BigInt::from_signed_bytes_be(b), *scale))
        }
        (Avro::Bytes(b) | Avro::Fixed(_, b), _) => Value::Bytes(b.clone()),
        (Avro::Uuid(u), _) => Value::Uuid(u.to_string()),
        (Avro::String(s), ColumnKind::Uuid) => Value::Uuid(s.clone()),
        (Avro::String(s), ColumnKind::Json) => Value::Json(s.clone()),
        (Avro::String(s), ColumnKind::Numeric) => Value::Numeric(s.clone()),
        (Avro::String(s) | Avro::Enum(_, s), _) => Value::Text(s.clone()),
        (Avro::Array(items), ColumnKind::Array(inner)) => Value::Array(
            items
                .iter()
                .map(|i| avro_value(i, inner, column))
                .collect::<Result<_, _>>()?,
        ),
        (Avro::Array(items), _) => Value::Array(
            items
                .iter()
                .map(|i| avro_value(i, &ColumnKind::Text, column))
                .collect::<Result<_, _>>()?,
        ),
        (other, _) => return Err(wrong(column, kind, &format!("{other:?}"))),
    })
}

fn json_float(value: &Json, column: &str, kind: &ColumnKind) -> Result<f64, DecodeError> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| wrong(column, kind, "number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(wrong(column, kind, "string")),
        },
        _ => Err(wrong(column, kind, "non-number")),
    }
}

fn json_value(value: &Json, kind: &ColumnKind, column: &str) -> Result<Value, DecodeError> {
    let int = |value: &Json| {
        value
            .as_i64()
            .ok_or_else(|| wrong(column, kind, "non-integer"))
    };
    Ok(match (value, kind) {
        (Json::Null, _) => Value::Null,
        (Json::Bool(v), _) => Value::Bool(*v),
        (v, ColumnKind::Int16) => Value::Int16(
            i16::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Int32) => Value::Int32(
            i32::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Date) => Value::Date(
            i32::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Int64) => Value::Int64(int(v)?),
        (v, ColumnKind::Time) => Value::Time(int(v)?),
        (v, ColumnKind::Timestamp) => Value::Timestamp(int(v)?),
        (v, ColumnKind::TimestampTz) => Value::TimestampTz(int(v)?),
        (v, ColumnKind::Float32) => Value::Float32(json_float(v, column, kind)? as f32),
        (v, ColumnKind::Float64) => Value::Float64(json_float(v, column, kind)?),
        (Json::String(s), ColumnKind::Decimal { .. } | ColumnKind::Numeric) => {
            Value::Numeric(s.clone())
        }
        (Json::Number(n), ColumnKind::Decimal { .. } | ColumnKind::Numeric) => {
            Value::Numeric(n.to_string())
        }
        (Json::String(s), ColumnKind::Bytes) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| malformed(format!("column {column}: bad base64: {e}")))?,
        ),
        (Json::String(s), ColumnKind::Uuid) => Value::Uuid(s.clone()),
        (Json::String(s), ColumnKind::Json) => Value::Json(s.clone()),
        (Json::String(s), _) => Value::Text(s.clone()),
        (Json::Array(items), ColumnKind::Array(inner)) => Value::Array(
            items
                .iter()
                .map(|i| json_value(i, inner, column))
                .collect::<Result<_, _>>()?,
        ),
        (v @ (Json::Object(_) | Json::Array(_)), ColumnKind::Json | ColumnKind::Text) => {
            Value::Json(v.to_string())
        }
        (Json::Number(n), ColumnKind::Text | ColumnKind::Other(_)) => Value::Text(n.to_string()),
        (other, _) => return Err(wrong(column, kind, &other.to_string())),
    })
}

/// The delete a tombstone stands for: its key columns (every one a key column) and values.
fn tombstone_delete(
    table: SourceTable,
    columns: Vec<SinkColumn>,
    row: Vec<Value>,
    position: Position,
) -> SinkRecord {
    let key = columns.iter().map(|c| c.name.clone()).collect();
    SinkRecord {
        table,
        shape: Arc::new(TableShape {
            columns,
            key,
            renamed: Vec::new(),
        }),
        op: SinkOp::Delete,
        position,
        row,
        unchanged: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_every_digit() {
        assert_eq!(decimal_text(&BigInt::from(-1205), 2), "-12.05");
        assert_eq!(decimal_text(&BigInt::from(5), 3), "0.005");
        assert_eq!(decimal_text(&BigInt::from(0), 0), "0");
        let big: BigInt = "123456789012345678901234567890123456789"
            .parse()
            .unwrap_or_default();
        assert_eq!(
            decimal_text(&big, 10),
            "12345678901234567890123456789.0123456789"
        );
    }

    #[test]
    fn json_values_follow_the_kind() {
        let v =
            |j: Json, k: ColumnKind| json_value(&j, &k, "c").unwrap_or(Value::Text("ERR".into()));
        // NaN arrives as a string and must come back as a NaN float, not null or an error.
        assert!(
            matches!(v(serde_json::json!("NaN"), ColumnKind::Float64), Value::Float64(f) if f.is_nan())
        );
        assert_eq!(
            v(serde_json::json!("AP8="), ColumnKind::Bytes),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(
            v(serde_json::json!("12.50"), ColumnKind::Numeric),
            Value::Numeric("12.50".into())
        );
        assert!(json_value(&serde_json::json!(70000), &ColumnKind::Int16, "c").is_err());
    }

    #[tokio::test]
    async fn corrupt_bytes_are_an_error_not_a_skip() {
        let mut decoder = Decoder::new("p", None);
        let raw = RawRecord {
            topic: "p.public.t",
            key: None,
            value: Some(b"\x01\x02garbage"),
            header_position: None,
        };
        let error = decoder.decode(&raw).await.err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("neither Avro nor JSON")),
            "{error:?}"
        );
    }
}
