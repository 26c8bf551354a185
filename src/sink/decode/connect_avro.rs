//! Avro written by a Kafka Connect Avro converter (Debezium's own Avro topics), or by
//! tidemark's `connect` Avro mapping (`crate::schema::connect_avro`, the `debezium`
//! preset's): the record carries Connect's schema as Avro properties (`connect.name`,
//! `connect.version`, `connect.parameters`, `connect.type`) instead of tidemark's own
//! attributes, and Debezium's value forms. Such a record is read back
//! into what Kafka Connect's `JsonConverter` would have written for the same Connect data:
//! the schema translated once per schema id into a Connect schema (and so a table shape),
//! each datum into the payload (`crate::schema::avro::connect_json_value`, no JSON text in
//! between), decoded as Debezium's JSON topics are: one reading of Debezium's encodings
//! (decimals, millisecond times, `MicroDuration`, `Bits`, ...) for both.
//!
//! The schema's translation follows the Avro converter's in reverse: a record is a struct
//! named by `connect.name`, `["null", T]` an optional `T`, `int` an `int32` (or the
//! `connect.type`, `int16`/`int8`), a `decimal` logical type Connect's `Decimal`, an enum a
//! string, a map a map. Data: records as objects, bytes and decimals as base64 (JsonConverter's
//! bytes), unions by their branch.

use serde_json::{Value as Json, json};

/// Whether an Avro value schema is in Kafka Connect's form (Debezium's through an Avro
/// converter, or tidemark's `connect` mapping): its top record names its Connect schema.
pub(super) fn is_connect_avro(schema: &Json) -> bool {
    schema.get("connect.name").is_some()
}

/// The Connect schema (as `JsonConverter` writes it) of an Avro schema, `field` named when
/// it is a record's field.
pub(super) fn connect_schema(avro: &Json, optional: bool) -> Json {
    let mut schema = match avro {
        Json::String(primitive) => json!({ "type": connect_primitive(primitive, None) }),
        Json::Array(branches) => {
            let types: Vec<&Json> = branches.iter().filter(|b| *b != "null").collect();
            return match types.as_slice() {
                [only] => connect_schema(only, optional || types.len() < branches.len()),
                _ => json!({ "type": "string", "optional": true }),
            };
        }
        Json::Object(object) => {
            let kind = object
                .get("type")
                .and_then(Json::as_str)
                .unwrap_or("string");
            let mut schema = match kind {
                "record" => {
                    let fields: Vec<Json> = object
                        .get("fields")
                        .and_then(Json::as_array)
                        .map(|fields| {
                            fields
                                .iter()
                                .map(|f| {
                                    let mut field = connect_schema(&f["type"], false);
                                    // tidemark's Connect mapping keeps a column's own name
                                    // where Avro's rules changed it, and a renamed column's
                                    // old name (read by `shape::from_connect`).
                                    field["field"] = f
                                        .get(crate::schema::avro::COLUMN_ATTRIBUTE)
                                        .unwrap_or(&f["name"])
                                        .clone();
                                    if let Some(aliases) = f.get("aliases") {
                                        field["aliases"] = aliases.clone();
                                    }
                                    field
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    json!({ "type": "struct", "fields": fields })
                }
                "array" => json!({
                    "type": "array",
                    "items": connect_schema(object.get("items").unwrap_or(&Json::Null), false),
                }),
                "map" => json!({
                    "type": "map",
                    "keys": { "type": "string", "optional": false },
                    "values": connect_schema(object.get("values").unwrap_or(&Json::Null), false),
                }),
                "enum" => json!({ "type": "string" }),
                primitive => {
                    let connect_type = object.get("connect.type").and_then(Json::as_str);
                    json!({ "type": connect_primitive(primitive, connect_type) })
                }
            };
            if object.get("logicalType") == Some(&json!("decimal")) {
                schema["name"] = json!("org.apache.kafka.connect.data.Decimal");
                schema["parameters"] =
                    json!({ "scale": object.get("scale").unwrap_or(&json!(0)).to_string() });
            }
            for (from, to) in [
                ("connect.name", "name"),
                ("connect.version", "version"),
                ("connect.parameters", "parameters"),
                ("connect.doc", "doc"),
            ] {
                if let Some(value) = object.get(from) {
                    schema[to] = value.clone();
                }
            }
            schema
        }
        _ => json!({ "type": "string" }),
    };
    schema["optional"] = json!(optional);
    schema
}

fn connect_primitive(avro: &str, connect_type: Option<&str>) -> &'static str {
    match (avro, connect_type) {
        ("int", Some("int16")) => "int16",
        ("int", Some("int8")) => "int8",
        ("int", _) => "int32",
        ("long", _) => "int64",
        ("float", _) => "float",
        ("double", _) => "double",
        ("boolean", _) => "boolean",
        ("bytes" | "fixed", _) => "bytes",
        _ => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;

    #[test]
    fn connect_properties_become_the_connect_schema() {
        let avro = json!({"type": "record", "name": "Value", "namespace": "p.public.t",
        "connect.name": "p.public.t.Value",
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "s", "type": ["null", {"type": "int", "connect.type": "int16"}], "default": null},
            {"name": "at", "type": ["null", {"type": "string", "connect.version": 1,
                "connect.name": "io.debezium.time.ZonedTimestamp"}], "default": null},
            {"name": "n", "type": {"type": "bytes", "scale": 2, "precision": 10, "logicalType": "decimal",
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"}}}
        ]});
        let connect = connect_schema(&avro, false);
        assert_eq!(connect["type"], "struct");
        assert_eq!(connect["name"], "p.public.t.Value");
        let fields = &connect["fields"];
        assert_eq!(
            fields[0],
            json!({"type": "int32", "optional": false, "field": "id"})
        );
        assert_eq!(
            fields[1],
            json!({"type": "int16", "optional": true, "field": "s"})
        );
        assert_eq!(fields[2]["name"], "io.debezium.time.ZonedTimestamp");
        assert_eq!(fields[2]["optional"], true);
        assert_eq!(fields[3]["name"], "org.apache.kafka.connect.data.Decimal");
        assert_eq!(fields[3]["parameters"]["scale"], "2");
    }

    #[test]
    fn data_is_written_as_json_converter_writes_it() {
        let value = Avro::Record(vec![
            ("id".into(), Avro::Int(1)),
            (
                "b".into(),
                Avro::Union(1, Box::new(Avro::Bytes(vec![1, 2]))),
            ),
            ("none".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("nan".into(), Avro::Double(f64::NAN)),
            ("inf".into(), Avro::Float(f32::NEG_INFINITY)),
        ]);
        assert_eq!(
            crate::schema::avro::connect_json_value(&value),
            json!({"id": 1, "b": "AQI=", "none": null, "nan": "NaN", "inf": "-Infinity"})
        );
    }

    #[test]
    fn tidemarks_own_avro_is_not_taken_for_a_converters() {
        let ours = json!({"type": "record", "name": "p.public.t.Envelope", "fields": [
            {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "commit_lsn", "type": ["null", "long"]}]}}]});
        assert!(!is_connect_avro(&ours));
        let connect_mapping = json!({"type": "record", "name": "Envelope", "connect.name": "p.public.t.Envelope",
            "fields": [{"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "commit_lsn", "type": ["null", "long"]}]}}]});
        assert!(is_connect_avro(&connect_mapping));
        let theirs = json!({"type": "record", "name": "Envelope", "connect.name": "p.public.t.Envelope",
            "fields": [{"name": "source", "type": {"type": "record", "name": "Source", "fields": [
                {"name": "lsn", "type": ["null", "long"]}]}}]});
        assert!(is_connect_avro(&theirs));
    }
}
