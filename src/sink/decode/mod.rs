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
//!   left of a deleted key. Debezium's tombstones carry no position and are skipped (the
//!   delete before each applies it).
//! - Positions: tidemark's `source.commit_lsn`/`source.seq`; in records Debezium wrote
//!   (JSON), Debezium's `source.sequence` (see [`json::debezium_position`]), so the sink
//!   applies Debezium's own topics too.
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
use crate::domain::decimal::text_of_unscaled;
use crate::domain::event::UNAVAILABLE_VALUE;
use crate::domain::value::Value;
use crate::schema::registry_client::RegistryClient;
use crate::schema::registry_store::RegistryStore;

/// A table shape read from a Connect key schema's text (none for a keyless record) and the
/// value schema it is kept under, with its columns' encodings.
type ConnectShape = (Option<String>, Arc<TableShape>, Encodings);

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
    /// Whether a Kafka Connect Avro converter wrote it (`connect_avro::is_connect_avro`),
    /// decided once per schema.
    from_connect: bool,
}

/// Each column's Connect `Decimal` scale, where its values are unscaled bytes.
type Encodings = Arc<[Option<shape::ConnectEncoding>]>;

/// Decodes records of one connector's topics.
pub struct Decoder {
    lookup: Option<SchemaLookup>,
    avro: HashMap<u32, Arc<AvroSchema>>,
    avro_shapes: HashMap<(Option<u32>, u32), Arc<TableShape>>,
    /// Shapes by Connect value schema text, then key schema text (a new primary key can
    /// leave the value schema as it was), with each column's Connect `Decimal` scale (its
    /// values are unscaled bytes).
    connect_shapes: HashMap<String, Vec<ConnectShape>>,
    inferred: HashMap<SourceTable, Arc<TableShape>>,
    topic_tables: HashMap<String, (SourceTable, Arc<TableShape>)>,
    prefix: String,
    /// The bytes of the placeholder the topics' unchanged TOASTed values hold (Debezium's
    /// `unavailable.value.placeholder`).
    placeholder: Arc<[u8]>,
    /// Shapes of Avro records in Kafka Connect's form, by key and value schema id, with each
    /// column's Connect encoding (`connect_avro`).
    connect_avro_shapes: HashMap<(Option<u32>, u32), (Arc<TableShape>, Encodings)>,
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
            placeholder: Arc::from(UNAVAILABLE_VALUE.as_bytes()),
            connect_avro_shapes: HashMap::new(),
        }
    }

    /// Recognises `placeholder` (the bytes of `[events] unavailable_value_placeholder`,
    /// Debezium's `unavailable.value.placeholder`) as an unchanged TOASTed value, instead of
    /// Debezium's default.
    pub fn with_placeholder(self, placeholder: &[u8]) -> Self {
        Decoder {
            placeholder: Arc::from(placeholder),
            ..self
        }
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
    /// The table a tombstone's topic holds: the one last seen on it, else the topic name
    /// `<prefix>.<schema>.<table>`.
    fn tombstone_table(&self, topic: &str) -> Option<SourceTable> {
        if let Some((table, _)) = self.topic_tables.get(topic) {
            return Some(table.clone());
        }
        let (schema, name) = crate::kafka::topics::table_of_topic(&self.prefix, topic)?;
        Some(SourceTable {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }
}

fn wrong(column: &str, kind: &ColumnKind, got: &str) -> DecodeError {
    malformed(format!(
        "column {column}: a {got} where {kind:?} was expected"
    ))
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
        before: None,
    }
}

/// The columns whose unchanged TOASTed value the source did not send: those the record
/// lists (tidemark's `unchanged_toast`) and those holding the placeholder (`placeholder`'s
/// bytes, Debezium's [`UNAVAILABLE_VALUE`] unless configured; Debezium's own topics list
/// nothing), in any of its forms: the text, the bytes, a text array of the one text, an
/// integer array of the bytes. Their values become null: the warehouse keeps its own (the
/// MERGE's `CASE`), and a typed staging column never sees the placeholder.
fn unavailable_columns(
    shape: &TableShape,
    row: &mut [Value],
    mut listed: Vec<String>,
    placeholder: &[u8],
) -> Vec<String> {
    for (column, value) in shape.columns.iter().zip(row.iter_mut()) {
        let is_placeholder = match value {
            Value::Text(text) | Value::Json(text) | Value::Numeric(text) => {
                text.as_bytes() == placeholder
            }
            Value::Bytes(bytes) => bytes == placeholder,
            Value::Array(items) => is_array_placeholder(items, placeholder),
            _ => false,
        };
        let is_listed = listed.contains(&column.name);
        if is_placeholder && !is_listed {
            listed.push(column.name.clone());
        }
        if is_placeholder || is_listed {
            *value = Value::Null;
        }
    }
    listed
}

/// Whether an array is Debezium's placeholder for an unchanged TOASTed array: the one text
/// for a text array, the placeholder's bytes as the elements of an integer array.
fn is_array_placeholder(items: &[Value], placeholder: &[u8]) -> bool {
    match items {
        [Value::Text(text)] => text.as_bytes() == placeholder,
        _ => {
            items.len() == placeholder.len()
                && items
                    .iter()
                    .zip(placeholder)
                    .all(|(item, &byte)| match item {
                        Value::Int16(n) => i64::from(*n) == i64::from(byte),
                        Value::Int32(n) => i64::from(*n) == i64::from(byte),
                        Value::Int64(n) => *n == i64::from(byte),
                        _ => false,
                    })
        }
    }
}

mod avro;
mod connect_avro;
mod json;

#[cfg(test)]
mod tests {
    use super::json::json_value;
    use super::*;
    use crate::domain::decimal::text_of_unscaled as decimal_text;

    #[test]
    fn debeziums_sequence_orders_its_changes() {
        use super::json::debezium_position;
        let source = |snapshot: &str, sequence: &str| serde_json::json!({"snapshot": snapshot, "sequence": sequence});
        let at = |commit_lsn, seq| Position { commit_lsn, seq };
        let position = |snapshot, sequence| {
            debezium_position(&source(snapshot, sequence)).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(position("first", "[null,\"500\"]"), at(0, 0));
        assert_eq!(position("false", "[\"700\",\"720\"]"), at(700, 720));
        // The first transaction after Debezium starts: its change's own LSN.
        assert_eq!(position("false", "[null,\"650\"]"), at(650, 650));
        let error = debezium_position(&serde_json::json!({"snapshot": "false"}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("neither tidemark's commit_lsn"), "{error}");
        assert!(debezium_position(&source("false", "[\"x\",\"1\"]")).is_err());
    }

    #[tokio::test]
    async fn a_new_key_under_the_same_value_schema_gives_a_new_shape() {
        let value_schema = serde_json::json!({"type": "struct", "name": "p.public.t.Envelope", "fields": [
            {"type": "struct", "optional": true, "field": "before", "fields": [
                {"type": "int32", "optional": false, "field": "id"},
                {"type": "string", "optional": true, "field": "code"}]},
            {"type": "struct", "optional": true, "field": "after", "fields": [
                {"type": "int32", "optional": false, "field": "id"},
                {"type": "string", "optional": true, "field": "code"}]},
            {"type": "struct", "field": "source", "fields": []},
            {"type": "string", "field": "op"}]});
        let value = |id: i32| {
            serde_json::json!({"schema": value_schema, "payload": {"before": null,
                "after": {"id": id, "code": format!("c{id}")}, "op": "c",
                "source": {"schema": "public", "table": "t", "commit_lsn": 10, "seq": id}}})
            .to_string()
        };
        let key = |column: &str, payload: serde_json::Value| {
            serde_json::json!({"schema": {"type": "struct", "name": "p.public.t.Key", "fields": [
                {"type": if column == "id" { "int32" } else { "string" }, "optional": false, "field": column}]},
                "payload": payload})
            .to_string()
        };
        let mut decoder = Decoder::new("p", None);
        let mut keys = Vec::new();
        for (key, value) in [
            (key("id", serde_json::json!({"id": 1})), value(1)),
            // The primary key moves to code; the value schema is the same text.
            (key("code", serde_json::json!({"code": "c2"})), value(2)),
        ] {
            let raw = RawRecord {
                topic: "p.public.t",
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                header_position: None,
            };
            let record = decoder
                .decode(&raw)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no record"));
            keys.push(record.shape.key.clone());
        }
        assert_eq!(keys, vec![vec!["id".to_string()], vec!["code".to_string()]]);
    }

    #[test]
    fn listed_and_placeholder_columns_are_unchanged_and_null() {
        let shape = TableShape {
            columns: ["id", "note", "blob", "doc", "other", "tags", "ids", "nums"]
                .iter()
                .map(|name| SinkColumn {
                    name: (*name).into(),
                    kind: ColumnKind::Text,
                })
                .collect(),
            key: vec!["id".into()],
            ..Default::default()
        };
        let mut row = vec![
            Value::Int32(1),
            Value::Text(UNAVAILABLE_VALUE.into()),
            Value::Bytes(UNAVAILABLE_VALUE.as_bytes().to_vec()),
            Value::Null,
            Value::Text("kept".into()),
            // Debezium's placeholders for a text array and an integer array.
            Value::Array(vec![Value::Text(UNAVAILABLE_VALUE.into())]),
            Value::Array(
                UNAVAILABLE_VALUE
                    .bytes()
                    .map(|b| Value::Int64(b.into()))
                    .collect(),
            ),
            // A real array of numbers is kept.
            Value::Array(vec![Value::Int64(95), Value::Int64(95)]),
        ];
        let unchanged = unavailable_columns(
            &shape,
            &mut row,
            vec!["doc".into()],
            UNAVAILABLE_VALUE.as_bytes(),
        );
        assert_eq!(unchanged, ["doc", "note", "blob", "tags", "ids"]);
        assert_eq!(
            row,
            [
                Value::Int32(1),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Text("kept".into()),
                Value::Null,
                Value::Null,
                Value::Array(vec![Value::Int64(95), Value::Int64(95)]),
            ]
        );
    }

    #[test]
    fn a_configured_placeholder_is_recognised_instead_of_debeziums() {
        let shape = TableShape {
            columns: ["note", "other", "ids"]
                .iter()
                .map(|name| SinkColumn {
                    name: (*name).into(),
                    kind: ColumnKind::Text,
                })
                .collect(),
            ..Default::default()
        };
        let mut row = vec![
            Value::Text("N/A".into()),
            Value::Text(UNAVAILABLE_VALUE.into()),
            Value::Array(b"N/A".iter().map(|&b| Value::Int64(b.into())).collect()),
        ];
        let unchanged = unavailable_columns(&shape, &mut row, Vec::new(), b"N/A");
        assert_eq!(unchanged, ["note", "ids"]);
        assert_eq!(row[1], Value::Text(UNAVAILABLE_VALUE.into()));
    }

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
