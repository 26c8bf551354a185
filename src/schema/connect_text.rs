//! Connect schemas as JSON text in the order Kafka Connect's `JsonConverter` writes them.
//!
//! With `schemas.enable=true` a record's key is `{"schema": …, "payload": …}`, and those
//! bytes are what Kafka's partitioner hashes and what log compaction compares. Two
//! producers that write the same key in a different field order put it on different
//! partitions, so a consumer switched from Debezium to tidemark would see a row's changes
//! split across two partitions (out of order) and a compacted topic keep both copies.
//!
//! `JsonConverter` (Jackson, insertion order) writes a schema's members as: `type`, then
//! the type's own members (`items`; `keys`, `values`; `fields`), `optional`, `name`,
//! `version`, `doc`, `parameters`, `default`, and, for a struct's field, `field` last.
//! Parameters keep the order Kafka Connect and Debezium add them in (`Decimal`'s `scale`
//! before `connect.decimal.precision`). `serde_json`'s map sorts its keys, so the schemas
//! built as [`serde_json::Value`] are written here member by member in that order; members
//! it does not know follow in the map's order.

use serde_json::Value as Json;

/// A schema's members in `JsonConverter`'s order.
const SCHEMA_ORDER: &[&str] = &[
    "type",
    "items",
    "keys",
    "values",
    "fields",
    "optional",
    "name",
    "version",
    "doc",
    "parameters",
    "default",
    "field",
];

/// Parameters in the order Kafka Connect and Debezium add them.
const PARAMETER_ORDER: &[&str] = &["scale", "connect.decimal.precision", "length", "allowed"];

/// `schema` as JSON text in `JsonConverter`'s member order.
pub(crate) fn schema_text(schema: &Json) -> String {
    let mut out = String::with_capacity(256);
    write_schema(schema, &mut out);
    out
}

fn write_schema(schema: &Json, out: &mut String) {
    write_object(schema, SCHEMA_ORDER, out, |key, value, out| match key {
        "items" | "keys" | "values" => write_schema(value, out),
        "fields" => write_fields(value, out),
        "parameters" => write_object(value, PARAMETER_ORDER, out, |_, v, out| {
            out.push_str(&v.to_string())
        }),
        // A default is a payload value, and everything unknown is written as it is.
        _ => out.push_str(&value.to_string()),
    });
}

/// `object`'s members in `order` ([`ordered`]), each value written by `member`; anything
/// but an object as it is.
fn write_object(
    object: &Json,
    order: &'static [&'static str],
    out: &mut String,
    member: impl Fn(&str, &Json, &mut String),
) {
    let Json::Object(members) = object else {
        out.push_str(&object.to_string());
        return;
    };
    out.push('{');
    for (index, (key, value)) in ordered(members, order).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Json::from(key.as_str()).to_string());
        out.push(':');
        member(key, value, out);
    }
    out.push('}');
}

fn write_fields(fields: &Json, out: &mut String) {
    let Json::Array(items) = fields else {
        out.push_str(&fields.to_string());
        return;
    };
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_schema(item, out);
    }
    out.push(']');
}

/// The members of `object`, those named in `order` first and in that order, then the rest.
fn ordered<'a>(
    object: &'a serde_json::Map<String, Json>,
    order: &'static [&'static str],
) -> impl Iterator<Item = (&'a String, &'a Json)> {
    let known = order
        .iter()
        .filter_map(move |name| object.get_key_value(*name));
    let rest = object
        .iter()
        .filter(move |(key, _)| !order.contains(&key.as_str()));
    known.chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_follow_json_converters_order() {
        // As JsonConverter 4.x writes a Debezium key of a `numeric(10,2)` and an int column.
        let schema = json!({
            "name": "shop.public.t.Key", "optional": false, "type": "struct",
            "fields": [
                {"field": "id", "optional": false, "type": "int32", "default": 0},
                {"field": "d", "name": "org.apache.kafka.connect.data.Decimal", "optional": false,
                 "parameters": {"connect.decimal.precision": "10", "scale": "2"}, "type": "bytes", "version": 1},
                {"field": "a", "items": {"optional": true, "type": "string"}, "optional": true, "type": "array"},
            ],
        });
        assert_eq!(
            schema_text(&schema),
            concat!(
                r#"{"type":"struct","fields":[{"type":"int32","optional":false,"default":0,"field":"id"},"#,
                r#"{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"#,
                r#""parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"d"},"#,
                r#"{"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"a"}],"#,
                r#""optional":false,"name":"shop.public.t.Key"}"#,
            )
        );
        // The text is the same JSON.
        assert_eq!(
            serde_json::from_str::<Json>(&schema_text(&schema)).ok(),
            Some(schema)
        );
    }
}
