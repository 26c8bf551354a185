//! Avro in the form a Kafka Connect worker with an Avro converter writes Debezium's records:
//! the Connect schema of a record (as `JsonConverter` declares it,
//! [`super::connect_schema`]) translated into an Avro schema, and its Connect
//! payload (as `JsonConverter` writes it) into Avro binary, following Kafka Connect's Avro
//! translation (Confluent's `AvroData`, with its defaults: `connect.meta.data` on, no
//! enhanced schema support). This is how the `debezium` preset writes Avro, so that a
//! consumer reading Debezium's Avro topics (through an Avro converter, or with a plain Avro
//! reader that looks at `connect.name`) reads tidemark's the same way.
//!
//! The translation, type by type:
//!
//! - `int8`/`int16` are Avro `int` with `"connect.type"` saying which; `int32` `int`,
//!   `int64` `long`, `float32` `float`, `float64` `double`, `boolean`, `string`, `bytes`;
//! - a `struct` is a `record` named by its Connect name (split at the last dot into
//!   namespace and name; each part made a valid Avro name), or `ConnectDefault` in
//!   `io.confluent.connect.avro` when it has none;
//! - `array` is an Avro array, `map` with string keys an Avro map;
//! - Connect's `Decimal` is `bytes` with the `decimal` logical type, its `scale` and its
//!   `precision` (the `connect.decimal.precision` parameter, else 64); Debezium's own
//!   semantic types (`io.debezium.time.Date`, `ZonedTimestamp`, `MicroDuration`, ...) are
//!   their Connect type with no Avro logical type;
//! - every non-union type carries the Connect schema's `connect.doc`, `connect.version`,
//!   `connect.parameters` (an object of strings), `connect.default` and `connect.name`;
//! - an optional schema is the union `["null", T]` with the field's default `null`, but an
//!   optional schema with a default value is `[T, "null"]` with that default (Avro takes a
//!   union field's default from its first branch); a required field with a default carries
//!   it as the field's default. Defaults are in Avro's JSON form: bytes as a string of
//!   ISO-8859-1 characters, one per byte;
//! - a named record met again (`after` after `before`) is referred to by its name, relative
//!   to the enclosing namespace as Avro's Java library writes it.
//!
//! Data follows the schema, written as the record's payload is serialized, with no JSON
//! value in between ([`stream`]; through the JSON value only for a payload the streaming
//! writer cannot follow): a union as its branch index then the value, bytes and decimals
//! (base64 in the Connect payload) as their raw bytes, non-finite floats (`"NaN"`,
//! `"Infinity"`, `"-Infinity"` in tidemark's payloads) as the floats. A field a record's
//! payload lacks is null. An array of arrays in a column of a one-dimensional array type
//! (PostgreSQL's array types carry no dimension count) is written as null with a warning and
//! `tidemark_values_nulled_total`, as in tidemark's own mapping. A Connect field name Avro
//! does not allow is made valid (as Debezium's `field.name.adjustment.mode = avro` does) and
//! keeps its own name in a `tidemark.column` attribute, which the sink reads back.

use std::collections::HashSet;

use base64::Engine;
use serde_json::{Map, Value as Json, json};

use super::avro::{AvroError, COLUMN_ATTRIBUTE, avro_name, frame_header};
use super::avro_write::{write_bytes, write_long};
use super::connect_schema::{
    avro_value_schema, key_schema, message_key_schema, message_value_schema,
};
use crate::domain::event::{EnvelopeContext, JsonRecord, TableSchema};

/// The namespace of records without a Connect name (`AvroData.NAMESPACE`).
const DEFAULT_NAMESPACE: &str = "io.confluent.connect.avro";
/// The name of records without a Connect name (`AvroData.DEFAULT_SCHEMA_NAME`).
const DEFAULT_NAME: &str = "ConnectDefault";
/// Connect's decimal logical type.
const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
/// The precision of a decimal without `connect.decimal.precision`.
const DEFAULT_PRECISION: i64 = 64;

/// A Connect schema translated to Avro: the schema to register and the plan its data is
/// written by.
#[derive(Debug, Clone)]
pub struct ConnectAvro {
    /// The Avro schema, as JSON (what the registry stores).
    pub schema: Json,
    plan: Plan,
}

/// How one Connect value is written.
#[derive(Debug, Clone)]
struct Plan {
    node: Node,
    union: Union,
}

/// Where `null` sits in a field's union, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Union {
    /// A required value: no union.
    None,
    /// `["null", T]`.
    NullFirst,
    /// `[T, "null"]` (an optional value with a default).
    NullLast,
}

#[derive(Debug, Clone)]
enum Node {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    Bytes,
    Array(Box<Plan>),
    Map(Box<Plan>),
    /// Fields by their name in the payload.
    Record(Vec<(String, Plan)>),
}

impl ConnectAvro {
    /// Translates a Connect schema (`JsonConverter`'s form: `type`, `optional`, `name`,
    /// `version`, `parameters`, `default`, `doc`, `fields`, `items`, `keys`/`values`).
    pub fn from_connect(connect: &Json) -> Result<ConnectAvro, AvroError> {
        let mut names = Names::default();
        let (schema, plan) = translate(connect, &mut names, false)?;
        // apache-avro must accept what it will be read with.
        apache_avro::Schema::parse(&schema).map_err(|e| AvroError::Schema {
            name: connect["name"].as_str().unwrap_or("connect").to_owned(),
            detail: e.to_string(),
        })?;
        Ok(ConnectAvro { schema, plan })
    }

    /// Annotates the row record's fields as tidemark's own mapping does: a column's
    /// comment (`(column, comment)` pairs) as the field's `doc`, and a column renamed by
    /// captured DDL (`(old, new)` pairs) with its old name in `aliases`, so the sink renames
    /// the column instead of seeing a drop and an add. Neither changes the data. The row
    /// record is the `before` field's (`after` refers to it by name).
    pub fn annotate_row(
        &mut self,
        comments: &[(&str, &str)],
        renames: &[(String, String)],
    ) -> Result<(), AvroError> {
        let fields = self.schema["fields"]
            .as_array_mut()
            .and_then(|fields| fields.iter_mut().find(|f| f["name"] == "before"))
            .and_then(|before| before["type"].as_array_mut())
            .and_then(|branches| branches.iter_mut().find(|b| b.is_object()))
            .and_then(|row| row["fields"].as_array_mut())
            .ok_or_else(|| AvroError::Schema {
                name: "Envelope".into(),
                detail: "no before record to annotate".into(),
            })?;
        for (column, comment) in comments {
            if let Some(field) = fields.iter_mut().find(|f| f["name"] == avro_name(column)) {
                field["doc"] = json!(comment);
            }
        }
        for (old, new) in renames {
            if let Some(field) = fields.iter_mut().find(|f| f["name"] == avro_name(new)) {
                field["aliases"] = json!([avro_name(old)]);
            }
        }
        Ok(())
    }

    /// Writes a Connect payload (as `JsonConverter` writes it) as Avro binary.
    pub fn write(&self, payload: &Json, out: &mut Vec<u8>) -> Result<(), AvroError> {
        write_value(&self.plan, payload, "", out)
    }

    /// Writes a Connect payload as Avro binary while it is serialized ([`stream`]), with
    /// no JSON value in between; a payload the streaming writer cannot follow is written
    /// again through its JSON value ([`ConnectAvro::write`]), which also names the error
    /// of one that does not fit. (A warning counted while writing it, a nulled decimal or
    /// array, is then counted twice.)
    pub fn write_serialized(
        &self,
        payload: &impl serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), AvroError> {
        let start = out.len();
        match stream::write(&self.plan, payload, out) {
            Ok(()) => Ok(()),
            Err(unfit) => {
                tracing::debug!(%unfit, "written through the JSON value");
                out.truncate(start);
                self.write(&json_value(payload)?, out)
            }
        }
    }
}

/// A table description's key and envelope schemas in the Connect mapping (or the logical
/// messages'), with the plans their records are written by.
#[derive(Debug)]
pub struct ConnectPlans {
    /// The key's, when records have a key.
    pub key: Option<ConnectAvro>,
    /// The envelope's.
    pub value: ConnectAvro,
}

impl ConnectPlans {
    /// A table's key and envelope schemas in the Connect mapping: its Connect schemas, as
    /// the JSON output declares them ([`super::connect_schema`]) in `context`'s modes,
    /// translated, but for NOT NULL value columns other than the key's, which stay optional
    /// ([`super::connect_schema::avro_value_schema`]); in the row record, column
    /// comments are the fields' `doc` and renamed columns (`(old, new)`) carry their old
    /// names as `aliases`.
    pub fn of_table(
        table: &TableSchema,
        context: &EnvelopeContext,
        renames: &[(String, String)],
    ) -> Result<ConnectPlans, AvroError> {
        let mode = context.wire_mode();
        let key = (!table.record_key_columns().is_empty())
            .then(|| ConnectAvro::from_connect(&key_schema(table, &context.prefix, mode)))
            .transpose()?;
        let mut value =
            ConnectAvro::from_connect(&avro_value_schema(table, &context.prefix, mode))?;
        let comments: Vec<(&str, &str)> = table
            .columns
            .iter()
            .filter_map(|c| Some((c.name.as_str(), c.comment.as_deref()?)))
            .collect();
        if !comments.is_empty() || !renames.is_empty() {
            value.annotate_row(&comments, renames)?;
        }
        Ok(ConnectPlans { key, value })
    }

    /// Logical messages' schemas: Debezium's `MessageKey` and `MessageValue`, translated.
    pub fn of_messages() -> Result<ConnectPlans, AvroError> {
        Ok(ConnectPlans {
            key: Some(ConnectAvro::from_connect(&message_key_schema())?),
            value: ConnectAvro::from_connect(&message_value_schema())?,
        })
    }

    /// Writes a record in Confluent's framing with schema ids `(key, value)` into the
    /// (cleared) buffers; the key is left empty when there is none. Returns whether a key
    /// was written.
    pub fn write_framed(
        &self,
        record: &JsonRecord<'_>,
        (key_id, value_id): (Option<u32>, u32),
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, AvroError> {
        key.clear();
        if let Some(id) = key_id {
            frame_header(key, id);
        }
        value.clear();
        frame_header(value, value_id);
        let has_key = self.write(record, key, value)?;
        if !has_key {
            key.clear();
        }
        Ok(has_key)
    }

    /// Writes a record's key (when it has one and there is a key schema) and value, as
    /// their Connect payloads say, after whatever the buffers hold (the frame headers).
    /// Returns whether a key was written.
    pub fn write(
        &self,
        record: &JsonRecord<'_>,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, AvroError> {
        let has_key = match (&self.key, record.key_json()) {
            (Some(plan), Some(key_json)) => {
                plan.write_serialized(&key_json, key)?;
                true
            }
            _ => false,
        };
        self.value.write_serialized(&record.value_json(), value)?;
        Ok(has_key)
    }
}

/// A record's Connect payload as a JSON value.
fn json_value(record: &impl serde::Serialize) -> Result<Json, AvroError> {
    serde_json::to_value(record).map_err(|e| AvroError::Encode(e.to_string()))
}

/// The record names defined so far and the namespace being written in (Avro's Java
/// library writes a name relative to it).
#[derive(Default)]
struct Names {
    defined: HashSet<String>,
    space: Option<String>,
}

fn invalid(connect: &Json, detail: &str) -> AvroError {
    AvroError::Schema {
        name: connect["name"]
            .as_str()
            .or(connect["field"].as_str())
            .unwrap_or("connect")
            .to_owned(),
        detail: format!("{detail} in the Connect schema {connect}"),
    }
}

/// A Connect name as an Avro full name: each dotted part valid; `(namespace, name)`.
fn split_name(full: &str) -> (Option<String>, String) {
    let parts: Vec<String> = full.split('.').map(avro_name).collect();
    match parts.split_last() {
        Some((name, [])) => (None, name.clone()),
        Some((name, space)) => (Some(space.join(".")), name.clone()),
        None => (None, avro_name(full)),
    }
}

/// Translates `connect`; `ignore_optional` gives the bare type of an optional one.
fn translate(
    connect: &Json,
    names: &mut Names,
    ignore_optional: bool,
) -> Result<(Json, Plan), AvroError> {
    let kind = connect["type"]
        .as_str()
        .ok_or_else(|| invalid(connect, "no type"))?;
    let optional = connect["optional"].as_bool().unwrap_or(false) && !ignore_optional;
    let name = connect["name"].as_str();
    let parameters = connect["parameters"].as_object();
    let mut connect_type = None;
    let (mut base, node) = match kind {
        "int8" | "int16" => {
            connect_type = Some(kind);
            (json!({"type": "int"}), Node::Int)
        }
        "int32" => (json!({"type": "int"}), Node::Int),
        "int64" => (json!({"type": "long"}), Node::Long),
        "float" | "float32" => (json!({"type": "float"}), Node::Float),
        "double" | "float64" => (json!({"type": "double"}), Node::Double),
        "boolean" => (json!({"type": "boolean"}), Node::Boolean),
        "string" => (json!({"type": "string"}), Node::String),
        "bytes" => {
            let mut base = json!({"type": "bytes"});
            if name == Some(DECIMAL) {
                let scale = parameter_int(parameters, "scale").unwrap_or(0);
                let precision = parameter_int(parameters, "connect.decimal.precision")
                    .unwrap_or(DEFAULT_PRECISION);
                base["scale"] = json!(scale);
                base["precision"] = json!(precision);
            }
            (base, Node::Bytes)
        }
        "array" => {
            let (items, plan) = translate(&connect["items"], names, false)?;
            (
                json!({"type": "array", "items": items}),
                Node::Array(Box::new(plan)),
            )
        }
        "map" => {
            if connect["keys"]["type"] != "string" || connect["keys"]["optional"] == true {
                return Err(invalid(
                    connect,
                    "a map whose keys are not required strings (not written by tidemark)",
                ));
            }
            let (values, plan) = translate(&connect["values"], names, false)?;
            (
                json!({"type": "map", "values": values}),
                Node::Map(Box::new(plan)),
            )
        }
        "struct" if optional => {
            // The record itself, then the union around it.
            let (record, plan) = translate(connect, names, true)?;
            return Ok((
                json!(["null", record]),
                Plan {
                    node: plan.node,
                    union: Union::NullFirst,
                },
            ));
        }
        "struct" => return record(connect, names),
        other => return Err(invalid(connect, &format!("unknown type {other:?}"))),
    };
    add_properties(&mut base, connect, connect_type)?;
    if name == Some(DECIMAL) {
        base["logicalType"] = json!("decimal");
    }
    let base = compact(base);
    Ok(optional_of(connect, base, node, optional))
}

/// The union of an optional type (see the module docs for its order).
fn optional_of(connect: &Json, base: Json, node: Node, optional: bool) -> (Json, Plan) {
    match (
        optional,
        connect.get("default").is_some_and(|d| !d.is_null()),
    ) {
        (false, _) => (
            base,
            Plan {
                node,
                union: Union::None,
            },
        ),
        (true, true) => (
            json!([base, "null"]),
            Plan {
                node,
                union: Union::NullLast,
            },
        ),
        (true, false) => (
            json!(["null", base]),
            Plan {
                node,
                union: Union::NullFirst,
            },
        ),
    }
}

/// A primitive without properties as its bare name (`"int"`), as Avro writes it.
fn compact(base: Json) -> Json {
    match base.as_object() {
        Some(object) if object.len() == 1 => object["type"].clone(),
        _ => base,
    }
}

fn parameter_int(parameters: Option<&Map<String, Json>>, key: &str) -> Option<i64> {
    parameters?.get(key)?.as_str()?.parse().ok()
}

/// Kafka Connect's schema properties on a translated type.
fn add_properties(
    base: &mut Json,
    connect: &Json,
    connect_type: Option<&str>,
) -> Result<(), AvroError> {
    if let Some(doc) = connect.get("doc").filter(|d| !d.is_null()) {
        base["connect.doc"] = doc.clone();
    }
    if let Some(version) = connect.get("version").filter(|v| !v.is_null()) {
        base["connect.version"] = version.clone();
    }
    if let Some(parameters) = connect["parameters"].as_object().filter(|p| !p.is_empty()) {
        base["connect.parameters"] = Json::Object(parameters.clone());
    }
    if let Some(default) = connect.get("default").filter(|d| !d.is_null()) {
        base["connect.default"] = avro_default(connect, default)?;
    }
    if let Some(name) = connect["name"].as_str() {
        base["connect.name"] = json!(full_name(name));
    }
    if let Some(connect_type) = connect_type {
        base["connect.type"] = json!(connect_type);
    }
    Ok(())
}

/// A Connect name as a valid Avro full name.
fn full_name(name: &str) -> String {
    match split_name(name) {
        (Some(space), name) => format!("{space}.{name}"),
        (None, name) => name,
    }
}

/// A struct as an Avro record (or a reference to it when its name is defined already).
fn record(connect: &Json, names: &mut Names) -> Result<(Json, Plan), AvroError> {
    let (space, short) = match connect["name"].as_str() {
        Some(full) => split_name(full),
        None => (Some(DEFAULT_NAMESPACE.to_owned()), DEFAULT_NAME.to_owned()),
    };
    let full = match &space {
        Some(space) => format!("{space}.{short}"),
        None => short.clone(),
    };
    let fields_connect = connect["fields"]
        .as_array()
        .ok_or_else(|| invalid(connect, "a struct without fields"))?;
    let mut avro = json!({"type": "record", "name": short});
    if space.is_some() && space != names.space {
        avro["namespace"] = json!(space);
    }
    let reference = if space == names.space {
        short.clone()
    } else {
        full.clone()
    };
    let known = !names.defined.insert(full.clone());
    let saved = std::mem::replace(&mut names.space, space);
    let mut fields = Vec::with_capacity(fields_connect.len());
    let mut plans = Vec::with_capacity(fields_connect.len());
    for field in fields_connect {
        let name = field["field"]
            .as_str()
            .ok_or_else(|| invalid(field, "a struct field without a name"))?;
        let (schema, plan) = translate(field, names, false)?;
        let field_name = avro_name(name);
        let mut avro_field = json!({"name": field_name, "type": schema});
        if let Some(default) = field.get("default").filter(|d| !d.is_null()) {
            avro_field["default"] = avro_default(field, default)?;
        } else if field["optional"] == true {
            avro_field["default"] = Json::Null;
        }
        if field_name != name {
            avro_field[COLUMN_ATTRIBUTE] = json!(name);
        }
        fields.push(avro_field);
        plans.push((name.to_owned(), plan));
    }
    names.space = saved;
    avro["fields"] = Json::Array(fields);
    add_properties(&mut avro, connect, None)?;
    let plan = Plan {
        node: Node::Record(plans),
        union: Union::None,
    };
    if known {
        return Ok((json!(reference), plan));
    }
    Ok((avro, plan))
}

/// A default in the Connect payload's form as Avro's JSON form of it.
fn avro_default(connect: &Json, default: &Json) -> Result<Json, AvroError> {
    Ok(match connect["type"].as_str() {
        Some("bytes") => {
            let bytes = default
                .as_str()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .ok_or_else(|| invalid(connect, "a bytes default that is not base64"))?;
            // One ISO-8859-1 character per byte.
            json!(bytes.iter().map(|&b| char::from(b)).collect::<String>())
        }
        Some("array") => json!(
            default
                .as_array()
                .map(|items| items
                    .iter()
                    .map(|item| avro_default(&connect["items"], item))
                    .collect::<Result<Vec<_>, _>>())
                .transpose()?
        ),
        _ => default.clone(),
    })
}

fn value_error(field: &str, detail: String) -> AvroError {
    AvroError::Value {
        column: if field.is_empty() {
            "(record)".to_owned()
        } else {
            field.to_owned()
        },
        detail,
    }
}

fn write_value(plan: &Plan, value: &Json, field: &str, out: &mut Vec<u8>) -> Result<(), AvroError> {
    match (plan.union, value.is_null()) {
        (Union::None, true) => {
            return Err(value_error(
                field,
                "null in a required field (a bug: please report it)".to_owned(),
            ));
        }
        (Union::NullFirst, true) | (Union::NullLast, true) => {
            write_long(out, if plan.union == Union::NullFirst { 0 } else { 1 });
            return Ok(());
        }
        (Union::NullFirst, false) => write_long(out, 1),
        (Union::NullLast, false) => write_long(out, 0),
        (Union::None, false) => {}
    }
    let mismatch = || {
        value_error(
            field,
            format!("{value} does not fit its Connect type (a bug: please report it)"),
        )
    };
    match &plan.node {
        Node::Boolean => out.push(u8::from(value.as_bool().ok_or_else(mismatch)?)),
        Node::Int => {
            let int = value.as_i64().ok_or_else(mismatch)?;
            i32::try_from(int).map_err(|_| mismatch())?;
            write_long(out, int);
        }
        Node::Long => write_long(out, value.as_i64().ok_or_else(mismatch)?),
        Node::Float => {
            out.extend_from_slice(&(float(value).ok_or_else(mismatch)? as f32).to_le_bytes())
        }
        Node::Double => out.extend_from_slice(&float(value).ok_or_else(mismatch)?.to_le_bytes()),
        Node::String => write_bytes(out, value.as_str().ok_or_else(mismatch)?.as_bytes()),
        Node::Bytes => {
            let bytes = value
                .as_str()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .ok_or_else(mismatch)?;
            write_bytes(out, &bytes);
        }
        Node::Array(items) => {
            let values = value.as_array().ok_or_else(mismatch)?;
            if !values.is_empty() {
                write_long(out, values.len() as i64);
                for item in values {
                    write_value(items, item, field, out)?;
                }
            }
            write_long(out, 0);
        }
        Node::Map(values) => {
            let entries = value.as_object().ok_or_else(mismatch)?;
            if !entries.is_empty() {
                write_long(out, entries.len() as i64);
                for (key, item) in entries {
                    write_bytes(out, key.as_bytes());
                    write_value(values, item, field, out)?;
                }
            }
            write_long(out, 0);
        }
        Node::Record(fields) => {
            let object = value.as_object().ok_or_else(mismatch)?;
            for (name, plan) in fields {
                let value = object.get(name).unwrap_or(&Json::Null);
                if plan.union != Union::None && is_multidimensional(plan, value) {
                    // PostgreSQL's array types carry no dimension count, so the schema is
                    // one-dimensional: null with a warning, never a halt.
                    super::avro_write::note_multidimensional(name);
                    write_value(plan, &Json::Null, name, out)?;
                    continue;
                }
                write_value(plan, value, name, out)?;
            }
        }
    }
    Ok(())
}

/// Whether `value` is an array of arrays for an array of scalars.
fn is_multidimensional(plan: &Plan, value: &Json) -> bool {
    match (&plan.node, value) {
        (Node::Array(items), Json::Array(values)) => {
            !matches!(items.node, Node::Array(_)) && values.iter().any(Json::is_array)
        }
        _ => false,
    }
}

/// A float of a Connect payload: a number, or the text of a non-finite one.
fn float(value: &Json) -> Option<f64> {
    match value {
        Json::Number(number) => number.as_f64(),
        Json::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

mod stream;
#[cfg(test)]
mod tests;
