//! Kafka Connect schemas for Debezium's JsonConverter shape with `schemas.enable=true`:
//! every key and value is `{"schema": {…}, "payload": {…}}`.
//!
//! Column types map to Connect types as the JSON payload carries them: integers and floats
//! to `int16`…`double`, `numeric` by the decimal mode (`precise`: `bytes` named
//! `org.apache.kafka.connect.data.Decimal` with `scale` and `connect.decimal.precision`
//! parameters for `numeric(p,s)`, the `io.debezium.data.VariableScaleDecimal` struct for
//! unconstrained `numeric`; `double`; `string`), text-like types to `string`,
//! `bytea` to `bytes` (base64 in JSON), `date` to `int32` named `io.debezium.time.Date`,
//! `time` to `int64` `io.debezium.time.MicroTime`, `timestamp` to `int64`
//! `io.debezium.time.MicroTimestamp` (microseconds since the epoch) or, for columns of at
//! most millisecond precision in the `adaptive` time mode, `int32` `io.debezium.time.Time`
//! and `int64` `io.debezium.time.Timestamp` (milliseconds), `interval` to `int64`
//! `io.debezium.time.MicroDuration` (or, in the `string` interval mode, `string`
//! `io.debezium.time.Interval`), `timetz` to `string` `io.debezium.time.ZonedTime` (but
//! in the `native` preset), enums to `string` `io.debezium.data.Enum` with their labels in
//! an `allowed` parameter, `money` by the decimal mode (`Decimal` of scale 2 in `precise`),
//! `timestamptz` to
//! `string` `io.debezium.time.ZonedTimestamp` (ISO-8601 in UTC, as Debezium writes it),
//! `uuid` and `json` to `string` named `io.debezium.data.Uuid` / `io.debezium.data.Json`, and
//! arrays to `array` with optional items. Key columns are required; value columns are
//! required when the catalog says NOT NULL, in the `debezium` preset (the `native` one
//! declares every value column optional, as its unchanged TOASTed values are nulls), and
//! carry a constant default as `"default"` in the field's encoding, as Debezium declares
//! them. Record names follow Debezium:
//! `<prefix>.<schema>.<table>.Key`, `.Value`, `.Envelope`.
//!
//! Key schemas carry no column-type parameter (the value's columns do), so a key's bytes
//! are Debezium's. Schemas are built once per table description and kept as JSON text in
//! `JsonConverter`'s member order (`super::connect_text`), so each record only splices the
//! cached text in front of its payload, and a key's bytes, partition and compaction key
//! are what Debezium's would be.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::connect_text::schema_text;

use crate::domain::column_type::TypeKind;
use crate::domain::decimal::DecimalMode;
use crate::domain::event::{Column, TableSchema, declared_default};
use crate::domain::wire::fixed_scale;
use crate::domain::wire::{
    BinaryMode, HstoreMode, IntervalMode, MONEY_SCALE, TextType, WireMode, WireValue,
    time_precision,
};
use crate::schema::fixed::FixedSchema;

/// A `numeric` column's Connect type in `mode`, as Debezium declares it.
fn numeric_type(kind: &TypeKind, mode: DecimalMode) -> Json {
    match (mode, fixed_scale(kind), kind) {
        (DecimalMode::String, ..) => json!({ "type": "string" }),
        (DecimalMode::Double, ..) => json!({ "type": "double" }),
        (
            DecimalMode::Precise,
            Some(scale),
            TypeKind::Numeric {
                precision: Some(precision),
                ..
            },
        ) => json!({
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": { "scale": scale.to_string(), "connect.decimal.precision": precision.to_string() },
        }),
        (DecimalMode::Precise, ..) => json!({
            "type": "struct",
            "fields": [simple("int32", false, "scale"), simple("bytes", false, "value")],
            "name": "io.debezium.data.VariableScaleDecimal",
            "version": 1,
            "doc": "Variable scaled decimal",
        }),
    }
}

fn field_type(kind: &TypeKind, modifier: i32, mode: WireMode) -> Json {
    let precision = time_precision(modifier);
    let (connect, name) = match kind {
        TypeKind::Bool => ("boolean", None),
        TypeKind::Int2 => ("int16", None),
        TypeKind::Int4 => ("int32", None),
        TypeKind::Int8 => ("int64", None),
        TypeKind::Float4 => ("float", None),
        TypeKind::Float8 => ("double", None),
        TypeKind::Bytea if mode.binary == BinaryMode::Bytes => ("bytes", None),
        TypeKind::Bytea => ("string", None),
        TypeKind::Date => ("int32", Some("io.debezium.time.Date")),
        TypeKind::Time if mode.time.time_in_millis(precision) => {
            ("int32", Some("io.debezium.time.Time"))
        }
        TypeKind::Time => ("int64", Some("io.debezium.time.MicroTime")),
        TypeKind::Timestamp if mode.time.timestamp_in_millis(precision) => {
            ("int64", Some("io.debezium.time.Timestamp"))
        }
        TypeKind::Timestamp => ("int64", Some("io.debezium.time.MicroTimestamp")),
        TypeKind::TimestampTz => ("string", Some("io.debezium.time.ZonedTimestamp")),
        TypeKind::Uuid => ("string", Some("io.debezium.data.Uuid")),
        TypeKind::Json => ("string", Some("io.debezium.data.Json")),
        TypeKind::Array(element) => {
            let mut items = field_type(element, modifier, mode);
            items["optional"] = json!(true);
            return json!({ "type": "array", "items": items });
        }
        TypeKind::Numeric { .. } => return numeric_type(kind, mode.decimal),
        TypeKind::Interval if mode.interval == IntervalMode::Numeric => {
            ("int64", Some("io.debezium.time.MicroDuration"))
        }
        TypeKind::Interval => ("string", Some("io.debezium.time.Interval")),
        TypeKind::TimeTz if mode.zoned_time() => ("string", Some("io.debezium.time.ZonedTime")),
        TypeKind::Text | TypeKind::Enum | TypeKind::Other | TypeKind::TimeTz => ("string", None),
    };
    match name {
        Some(name) => json!({ "type": connect, "name": name, "version": 1 }),
        None => json!({ "type": connect }),
    }
}

/// Connect parameter naming the column's PostgreSQL type, as Debezium writes it with
/// `column.propagate.source.type`; the sink reads it to create exact warehouse types.
pub(crate) const SOURCE_TYPE_PARAMETER: &str = "__debezium.source.column.type";

/// `money`'s Connect type in `mode`: as Debezium declares it, a `Decimal` of scale 2 (no
/// precision parameter) in `precise` mode.
fn money_type(mode: DecimalMode) -> Json {
    match mode {
        DecimalMode::String => json!({ "type": "string" }),
        DecimalMode::Double => json!({ "type": "double" }),
        DecimalMode::Precise => json!({
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": { "scale": MONEY_SCALE.to_string() },
        }),
    }
}

/// A column's Connect field; `source_type`: with the [`SOURCE_TYPE_PARAMETER`] (value rows,
/// not keys: a key's schema is part of its bytes, which must be Debezium's).
fn column_field(column: &Column, optional: bool, source_type: bool, mode: WireMode) -> Json {
    let mut field = match TextType::of(column, mode) {
        TextType::Money => money_type(mode.decimal),
        TextType::Bits(1) => json!({ "type": "boolean" }),
        TextType::Bits(length) => json!({
            "type": "bytes",
            "name": "io.debezium.data.Bits",
            "version": 1,
            "parameters": { "length": (if length < 0 { i32::MAX } else { length }).to_string() },
        }),
        TextType::Oid => json!({ "type": "int64" }),
        TextType::Hstore if mode.hstore == HstoreMode::Map => json!({
            "type": "map",
            "keys": { "type": "string", "optional": false },
            "values": { "type": "string", "optional": true },
        }),
        TextType::Hstore => {
            json!({ "type": "string", "name": "io.debezium.data.Json", "version": 1 })
        }
        TextType::Xml => json!({ "type": "string", "name": "io.debezium.data.Xml", "version": 1 }),
        TextType::Point => json!({
            "type": "struct",
            "fields": [
                simple("double", false, "x"),
                simple("double", false, "y"),
                simple("bytes", true, "wkb"),
                simple("int32", true, "srid"),
            ],
            "name": "io.debezium.data.geometry.Point",
            "version": 1,
            "doc": "Geometry (POINT)",
        }),
        TextType::Plain => match (&column.column_type.kind, &column.column_type.enum_labels) {
            (TypeKind::Enum, Some(labels)) if mode.debezium_types => json!({
                "type": "string",
                "name": "io.debezium.data.Enum",
                "version": 1,
                "parameters": { "allowed": labels },
            }),
            (kind, _) => field_type(kind, column.type_modifier, mode),
        },
    };
    field["optional"] = json!(optional);
    if let Some(default) = declared_default(column, mode) {
        // The default in the field's own encoding, as JsonConverter writes a default. A
        // value the mode cannot write (NaN as a decimal) declares none.
        if let Ok(default) = serde_json::to_value(WireValue::new(column, &default, mode)) {
            if !default.is_null() {
                field["default"] = default;
            }
        }
    }
    field["field"] = json!(column.name);
    if !source_type {
        return field;
    }
    match field.get_mut("parameters").and_then(Json::as_object_mut) {
        Some(parameters) => {
            parameters.insert(SOURCE_TYPE_PARAMETER.into(), json!(column.type_display()));
        }
        None => field["parameters"] = json!({ SOURCE_TYPE_PARAMETER: column.type_display() }),
    }
    field
}

fn simple(kind: &str, optional: bool, field: &str) -> Json {
    json!({ "type": kind, "optional": optional, "field": field })
}

/// The key schema of a table, decimals and times in `mode`: Debezium's, without the
/// column-type parameter the value's columns carry. The schema is part of the key's bytes
/// (JSON with schemas; the registry's id in Avro), which the partitioner hashes and
/// compaction compares, so it must be what Debezium writes; the sink takes the key columns'
/// types from the value.
pub fn key_schema(table: &TableSchema, prefix: &str, mode: WireMode) -> Json {
    let fields: Vec<Json> = table
        .record_key_columns()
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .map(|c| column_field(c, false, false, mode))
        .collect();
    json!({
        "type": "struct",
        "fields": fields,
        "optional": false,
        "name": format!("{}.Key", crate::domain::names::topic_name(prefix, &table.schema, &table.name)),
    })
}

/// Debezium's `source` schema (version 1), then tidemark's `commit_lsn` and `seq`.
/// `schema` and `table` are required (a message's block writes `""`, as Debezium's does).
fn source_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [
            simple("string", false, "version"),
            simple("string", false, "connector"),
            simple("string", false, "name"),
            simple("int64", false, "ts_ms"),
            { "type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
              "parameters": { "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental" },
              "default": "false", "field": "snapshot" },
            simple("string", false, "db"),
            simple("string", true, "sequence"),
            simple("int64", true, "ts_us"),
            simple("int64", true, "ts_ns"),
            simple("string", false, "schema"),
            simple("string", false, "table"),
            simple("int64", true, "txId"),
            simple("int64", true, "lsn"),
            simple("int64", true, "xmin"),
            simple("string", true, "origin"),
            simple("int64", true, "origin_lsn"),
            simple("int64", true, "commit_lsn"),
            simple("int64", true, "seq"),
        ],
        "optional": false,
        "name": "io.debezium.connector.postgresql.Source",
        "version": 1,
        "field": "source",
    })
}

fn transaction_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [
            simple("string", false, "id"),
            simple("int64", false, "total_order"),
            simple("int64", false, "data_collection_order"),
        ],
        "optional": true,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    })
}

/// The envelope (value) schema of a table's events, decimals and times in `mode`.
pub fn value_schema(table: &TableSchema, prefix: &str, mode: WireMode) -> Json {
    envelope_schema(table, prefix, mode, false)
}

/// [`value_schema`] for Avro (the Connect Avro mapping): NOT NULL value columns stay
/// optional (with their defaults), all but the record key's. A registry refuses a field
/// that turns required as an incompatible change, so with Debezium's required fields an
/// `ALTER COLUMN … SET NOT NULL` would stop a running pipeline (Debezium behind an Avro
/// converter stops there). JSON keeps Debezium's required fields: nothing checks its
/// compatibility.
pub fn avro_value_schema(table: &TableSchema, prefix: &str, mode: WireMode) -> Json {
    envelope_schema(table, prefix, mode, true)
}

/// The envelope schema; `avro`: NOT NULL only required for the record key's columns.
fn envelope_schema(table: &TableSchema, prefix: &str, mode: WireMode, avro: bool) -> Json {
    let row_name = format!("{prefix}.{}.{}.Value", table.schema, table.name);
    let key = table.record_key_columns();
    let required = |index: usize, column: &Column| {
        column.not_null && mode.debezium_types && (!avro || key.contains(&index))
    };
    let row = |field: &str| {
        let fields: Vec<Json> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| column_field(c, !required(i, c), true, mode))
            .collect();
        json!({ "type": "struct", "fields": fields, "optional": true, "name": row_name, "field": field })
    };
    json!({
        "type": "struct",
        "fields": [
            row("before"),
            row("after"),
            source_schema(),
            transaction_schema(),
            simple("string", false, "op"),
            simple("int64", true, "ts_ms"),
            simple("int64", true, "ts_us"),
            simple("int64", true, "ts_ns"),
            { "type": "array", "items": { "type": "string", "optional": false }, "optional": true, "field": "unchanged_toast" },
            { "type": "struct", "fields": [simple("boolean", false, "cascade"), simple("boolean", false, "restart_identity")],
              "optional": true, "name": "tidemark.Truncate", "field": "truncate" },
        ],
        "optional": false,
        "name": format!("{}.Envelope", crate::domain::names::topic_name(prefix, &table.schema, &table.name)),
        "version": 2,
    })
}

/// The value schema of logical-message events (`op = m`): Debezium's `MessageValue`, with
/// tidemark's `commit_lsn` and `seq` in `source` and `transactional` in `message`.
pub(crate) fn message_value_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [
            simple("string", false, "op"),
            simple("int64", true, "ts_ms"),
            source_schema(),
            transaction_schema(),
            { "type": "struct",
              "fields": [simple("string", true, "prefix"), simple("bytes", true, "content"), simple("boolean", true, "transactional")],
              "optional": false, "name": "io.debezium.connector.postgresql.Message", "version": 1, "field": "message" },
        ],
        "optional": false,
        "name": "io.debezium.connector.postgresql.MessageValue",
        "version": 1,
    })
}

/// The key schema of logical-message events: Debezium's `MessageKey`, the prefix.
pub(crate) fn message_key_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [simple("string", true, "prefix")],
        "optional": false,
        "name": "io.debezium.connector.postgresql.MessageKey",
        "version": 1,
    })
}

/// The Connect schema of one of tidemark's fixed records (transaction metadata,
/// heartbeat, schema change, their keys), derived from its Avro schema the way Confluent's
/// AvroConverter reads one back: records become structs named `namespace.name`, `["null",
/// T]` unions optional fields, arrays and maps keep their items. The heartbeat's value
/// takes Debezium's name, `io.debezium.connector.common.Heartbeat`.
pub(crate) fn fixed_schema(fixed: FixedSchema) -> Json {
    let avro: Json = serde_json::from_str(fixed.text()).unwrap_or(Json::Null);
    let mut schema = from_avro(&avro, None, false);
    match fixed {
        FixedSchema::Heartbeat => {
            schema["name"] = json!("io.debezium.connector.common.Heartbeat");
            schema["version"] = json!(1);
        }
        // Debezium's names and versions, which its Avro schemas cannot carry.
        FixedSchema::TransactionKey | FixedSchema::HeartbeatKey => schema["version"] = json!(1),
        FixedSchema::TransactionMetadata => {
            schema["version"] = json!(1);
            if let Some(fields) = schema["fields"].as_array_mut() {
                for field in fields {
                    if field["field"] == "data_collections" {
                        field["items"]["name"] = json!("event.collection");
                        field["items"]["optional"] = json!(true);
                        field["items"]["version"] = json!(1);
                    }
                }
            }
        }
        _ => {}
    }
    schema
}

/// One Avro type as a Connect schema; `namespace` is the enclosing record's.
fn from_avro(avro: &Json, namespace: Option<&str>, optional: bool) -> Json {
    match avro {
        Json::String(name) => json!({ "type": connect_primitive(name), "optional": optional }),
        Json::Array(branches) => {
            let types: Vec<&Json> = branches
                .iter()
                .filter(|b| b.as_str() != Some("null"))
                .collect();
            match types.as_slice() {
                [only] => from_avro(only, namespace, optional || types.len() < branches.len()),
                _ => json!({ "type": "string", "optional": true }),
            }
        }
        Json::Object(object) => match object.get("type").and_then(Json::as_str) {
            Some("record") => {
                let namespace = object.get("namespace").and_then(Json::as_str).or(namespace);
                let name = object
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("record");
                let fields: Vec<Json> = object
                    .get("fields")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .map(|field| {
                        let mut connect =
                            from_avro(field.get("type").unwrap_or(&Json::Null), namespace, false);
                        connect["field"] = field.get("name").cloned().unwrap_or(Json::Null);
                        connect
                    })
                    .collect();
                let full_name = match namespace {
                    Some(namespace) => format!("{namespace}.{name}"),
                    None => name.to_owned(),
                };
                json!({ "type": "struct", "fields": fields, "optional": optional, "name": full_name })
            }
            Some("array") => json!({
                "type": "array",
                "items": from_avro(object.get("items").unwrap_or(&Json::Null), namespace, false),
                "optional": optional,
            }),
            Some("map") => json!({
                "type": "map",
                "keys": { "type": "string", "optional": false },
                "values": from_avro(object.get("values").unwrap_or(&Json::Null), namespace, false),
                "optional": optional,
            }),
            Some("enum") | Some("fixed") => json!({ "type": "string", "optional": optional }),
            Some(primitive) => {
                json!({ "type": connect_primitive(primitive), "optional": optional })
            }
            None => json!({ "type": "string", "optional": optional }),
        },
        _ => json!({ "type": "string", "optional": optional }),
    }
}

/// The Connect type of an Avro primitive.
fn connect_primitive(avro: &str) -> &'static str {
    match avro {
        "boolean" => "boolean",
        "int" => "int32",
        "long" => "int64",
        "float" => "float",
        "double" => "float64",
        "bytes" => "bytes",
        _ => "string",
    }
}

/// The schemas of one table description, as JSON text.
#[derive(Debug, Clone)]
struct CachedSchemas {
    table: Arc<TableSchema>,
    key: Arc<str>,
    value: Arc<str>,
}

/// Schemas as JSON text, built once per table description.
#[derive(Debug, Default, Clone)]
pub(crate) struct SchemaCache {
    tables: HashMap<u32, CachedSchemas>,
    message: Option<(Arc<str>, Arc<str>)>,
    fixed: HashMap<FixedSchema, Arc<str>>,
    mode: WireMode,
}

impl SchemaCache {
    /// An empty cache for schemas with decimals and times in `mode`.
    pub fn new(mode: WireMode) -> Self {
        SchemaCache {
            mode,
            ..SchemaCache::default()
        }
    }

    /// Key and value schema text for `table` (rebuilt when its description changes).
    pub fn table(&mut self, table: &Arc<TableSchema>, prefix: &str) -> (Arc<str>, Arc<str>) {
        if let Some(cached) = self.tables.get_mut(&table.relation_id)
            && (Arc::ptr_eq(&cached.table, table) || *cached.table == **table)
        {
            // Keep the newest `Arc` so its next events take the pointer check.
            cached.table = table.clone();
            return (cached.key.clone(), cached.value.clone());
        }
        let key: Arc<str> = schema_text(&key_schema(table, prefix, self.mode)).into();
        let value: Arc<str> = schema_text(&value_schema(table, prefix, self.mode)).into();
        let cached = CachedSchemas {
            table: table.clone(),
            key: key.clone(),
            value: value.clone(),
        };
        self.tables.insert(table.relation_id, cached);
        (key, value)
    }

    /// Schema text of a fixed record ([`fixed_schema`]).
    pub fn fixed(&mut self, fixed: FixedSchema) -> Arc<str> {
        self.fixed
            .entry(fixed)
            .or_insert_with(|| schema_text(&fixed_schema(fixed)).into())
            .clone()
    }

    /// Key and value schema text for logical messages.
    pub fn message(&mut self) -> (Arc<str>, Arc<str>) {
        self.message
            .get_or_insert_with(|| {
                (
                    schema_text(&message_key_schema()).into(),
                    schema_text(&message_value_schema()).into(),
                )
            })
            .clone()
    }
}

/// Writes `{"schema":<schema>,"payload":<payload>}` into `out`, where `payload` is already
/// serialized JSON.
pub(crate) fn wrap(schema: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"schema\":");
    out.extend_from_slice(schema.as_bytes());
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    fn decimals(decimal: DecimalMode) -> WireMode {
        WireMode {
            decimal,
            ..WireMode::default()
        }
    }

    use super::*;
    use crate::domain::event::ReplicaIdentity;
    use crate::domain::event::{ColumnDefault, KeySource};

    fn table() -> TableSchema {
        let column = Column::new;
        TableSchema {
            relation_id: 1,
            schema: "public".into(),
            name: "orders".into(),
            columns: vec![
                column("id", TypeKind::Int8),
                column("at", TypeKind::TimestampTz),
                column("tags", TypeKind::Array(Box::new(TypeKind::Text))),
            ],
            key_columns: vec![0],
            key_source: KeySource::PrimaryKey,
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn fixed_records_get_connect_schemas_with_their_avro_fields() {
        let heartbeat = fixed_schema(FixedSchema::Heartbeat);
        assert_eq!(heartbeat["type"], "struct");
        assert_eq!(heartbeat["name"], "io.debezium.connector.common.Heartbeat");
        assert_eq!(
            heartbeat["fields"],
            json!([
                { "type": "int64", "optional": false, "field": "ts_ms" },
                { "type": "int64", "optional": true, "field": "lsn" },
            ])
        );
        let transaction = fixed_schema(FixedSchema::TransactionMetadata);
        assert_eq!(
            transaction["name"],
            "io.debezium.connector.common.TransactionMetadataValue"
        );
        let fields = transaction["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = fields.iter().filter_map(|f| f["field"].as_str()).collect();
        assert_eq!(
            names,
            ["status", "id", "event_count", "data_collections", "ts_ms"]
        );
        let collections = &fields[3];
        assert_eq!(collections["type"], "array");
        assert_eq!(collections["optional"], true);
        assert_eq!(collections["items"]["name"], "event.collection");
        assert_eq!(
            collections["items"]["fields"][1],
            json!({ "type": "int64", "optional": false, "field": "event_count" })
        );
        for fixed in [
            FixedSchema::HeartbeatKey,
            FixedSchema::TransactionKey,
            FixedSchema::SchemaChangeKey,
            FixedSchema::SchemaChange,
        ] {
            assert_eq!(fixed_schema(fixed)["type"], "struct", "{fixed:?}");
        }
    }

    #[test]
    fn not_null_columns_are_required_with_their_defaults_in_debeziums_preset() {
        let mut table = table();
        for column in &mut table.columns {
            column.not_null = true;
        }
        table.columns[0].default = ColumnDefault::Constant(crate::domain::value::Value::Int64(42));
        table.columns[1].default = ColumnDefault::Expression;
        let value = value_schema(&table, "shop", WireMode::default());
        let after = &value["fields"][1]["fields"];
        assert_eq!(after[0]["optional"], false);
        assert_eq!(after[0]["default"], 42);
        // An expression's default is the zero Debezium declares for it.
        assert_eq!(after[1]["default"], "1970-01-01T00:00:00.000000Z");
        // Arrays declare no default.
        assert_eq!(after[2]["optional"], false);
        assert!(after[2].get("default").is_none());
        // The native preset: every value column optional, no defaults.
        let native = WireMode {
            debezium_types: false,
            ..WireMode::default()
        };
        let value = value_schema(&table, "shop", native);
        let after = &value["fields"][1]["fields"];
        assert_eq!(after[0]["optional"], true);
        assert!(after[0].get("default").is_none());
    }

    #[test]
    fn key_and_value_schemas_follow_debezium_names_and_types() {
        let key = key_schema(&table(), "shop", decimals(DecimalMode::String));
        assert_eq!(
            key,
            json!({"type": "struct", "fields": [{"type": "int64", "optional": false, "field": "id"}],
                   "optional": false, "name": "shop.public.orders.Key"})
        );
        let value = value_schema(&table(), "shop", decimals(DecimalMode::String));
        assert_eq!(value["name"], "shop.public.orders.Envelope");
        let after = &value["fields"][1];
        assert_eq!(after["field"], "after");
        assert_eq!(after["name"], "shop.public.orders.Value");
        assert_eq!(
            after["fields"][1],
            json!({"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1, "optional": true, "field": "at",
                   "parameters": {SOURCE_TYPE_PARAMETER: "at"}})
        );
        assert_eq!(
            after["fields"][2],
            json!({"type": "array", "items": {"type": "string", "optional": true}, "optional": true, "field": "tags",
                   "parameters": {SOURCE_TYPE_PARAMETER: "tags"}})
        );
        assert_eq!(
            value["fields"][2]["name"],
            "io.debezium.connector.postgresql.Source"
        );
    }

    #[test]
    fn numerics_are_declared_as_the_decimal_mode_writes_them() {
        let mut table = table();
        let fixed = crate::domain::column_type::numeric_kind((10 << 16 | 2) + 4);
        let free = crate::domain::column_type::numeric_kind(-1);
        table.columns = vec![Column::new("n", fixed), Column::new("nu", free)];
        let value = value_schema(&table, "shop", decimals(DecimalMode::Precise));
        let after = &value["fields"][1]["fields"];
        // As Debezium 3.6.1 declares them (its parameters, plus the source type).
        assert_eq!(after[0]["type"], "bytes");
        assert_eq!(after[0]["name"], "org.apache.kafka.connect.data.Decimal");
        assert_eq!(after[0]["parameters"]["scale"], "2");
        assert_eq!(after[0]["parameters"]["connect.decimal.precision"], "10");
        assert_eq!(after[0]["parameters"][SOURCE_TYPE_PARAMETER], "n");
        assert_eq!(after[1]["name"], "io.debezium.data.VariableScaleDecimal");
        assert_eq!(
            after[1]["fields"][0],
            json!({"type": "int32", "optional": false, "field": "scale"})
        );
        assert_eq!(
            after[1]["fields"][1],
            json!({"type": "bytes", "optional": false, "field": "value"})
        );
        let doubles = value_schema(&table, "shop", decimals(DecimalMode::Double));
        assert_eq!(doubles["fields"][1]["fields"][1]["type"], "double");
        let text = value_schema(&table, "shop", decimals(DecimalMode::String));
        assert_eq!(text["fields"][1]["fields"][0]["type"], "string");
    }

    #[test]
    fn avro_keeps_not_null_columns_optional_with_their_defaults() {
        let mut table = table();
        for column in &mut table.columns {
            column.not_null = true;
        }
        table.columns[1].default = ColumnDefault::Expression;
        let value = avro_value_schema(&table, "shop", WireMode::default());
        let after = &value["fields"][1]["fields"];
        // The key column stays required; the others are optional, defaults kept.
        assert_eq!(after[0]["optional"], false);
        assert_eq!(after[1]["optional"], true);
        assert_eq!(after[1]["default"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(after[2]["optional"], true);
        assert_eq!(value["fields"][4]["field"], "op");
        assert_eq!(value["fields"][4]["optional"], false);
        // JSON keeps Debezium's required fields.
        let json = value_schema(&table, "shop", WireMode::default());
        assert_eq!(json["fields"][1]["fields"][1]["optional"], false);
    }

    #[test]
    fn cache_rebuilds_when_the_table_changes() {
        let mut cache = SchemaCache::default();
        let first = Arc::new(table());
        let (_, value1) = cache.table(&first, "p");
        let (_, again) = cache.table(&Arc::new(table()), "p");
        assert!(
            Arc::ptr_eq(&value1, &again),
            "an equal description reuses the cached text"
        );
        let mut changed = table();
        changed.columns.pop();
        let (_, value2) = cache.table(&Arc::new(changed), "p");
        assert!(!value2.contains("\"tags\""));
        let mut wrapped = Vec::new();
        wrap("{}", b"{\"id\":1}", &mut wrapped);
        assert_eq!(wrapped, b"{\"schema\":{},\"payload\":{\"id\":1}}");
    }
}
