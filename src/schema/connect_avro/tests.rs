use super::*;
use apache_avro::types::Value as Avro;

fn envelope() -> Json {
    let row = |field: &str| {
        json!({"type": "struct", "optional": true, "name": "p.public.t.Value", "field": field,
        "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "int16", "optional": true, "field": "small"},
            {"type": "bytes", "optional": true, "name": DECIMAL, "version": 1,
             "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "n"},
            {"type": "string", "optional": true, "default": "x", "field": "s"},
            {"type": "int64", "optional": false, "default": 0, "name": "io.debezium.time.MicroTimestamp",
             "version": 1, "field": "at"},
            {"type": "array", "optional": true, "items": {"type": "string", "optional": true},
             "field": "tags"},
            {"type": "map", "optional": true, "keys": {"type": "string", "optional": false},
             "values": {"type": "string", "optional": true}, "field": "pairs"},
            {"type": "double", "optional": true, "field": "f"},
            {"type": "bytes", "optional": true, "default": "AP8=", "field": "b-y"},
        ]})
    };
    json!({"type": "struct", "optional": false, "name": "p.public.t.Envelope", "version": 2,
        "fields": [row("before"), row("after"), {"type": "string", "optional": false, "field": "op"}]})
}

type Fields = Vec<(String, Avro)>;

/// `payload` written with `translated` and read back with apache-avro: the envelope's
/// fields and its `after` row's.
fn written(translated: &ConnectAvro, payload: &Json) -> (Fields, Fields) {
    let mut out = Vec::new();
    translated
        .write(payload, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let schema = apache_avro::Schema::parse(&translated.schema).unwrap_or_else(|e| panic!("{e}"));
    let read =
        crate::schema::avro::read_datum(&schema, &mut &out[..]).unwrap_or_else(|e| panic!("{e}"));
    let Avro::Record(fields) = read else {
        panic!("not a record: {read:?}")
    };
    let row = match &fields[1].1 {
        Avro::Union(1, after) => match &**after {
            Avro::Record(row) => row.clone(),
            other => panic!("after: {other:?}"),
        },
        other => panic!("after: {other:?}"),
    };
    (fields, row)
}

#[test]
fn a_connect_schema_becomes_what_an_avro_converter_registers() {
    let translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    let schema = &translated.schema;
    assert_eq!(schema["name"], "Envelope");
    assert_eq!(schema["namespace"], "p.public.t");
    assert_eq!(schema["connect.name"], "p.public.t.Envelope");
    assert_eq!(schema["connect.version"], 2);
    let before = &schema["fields"][0];
    assert_eq!(before["default"], Json::Null);
    let row = &before["type"][1];
    // Nested in the same namespace: the name alone.
    assert_eq!(row["name"], "Value");
    assert!(row.get("namespace").is_none());
    // `after` refers to the record by its name, relative to the namespace.
    assert_eq!(schema["fields"][1]["type"], json!(["null", "Value"]));
    let field = |name: &str| {
        row["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no field {name} in {row}"))
    };
    assert_eq!(field("id")["type"], "int");
    assert_eq!(
        field("small")["type"],
        json!(["null", {"type": "int", "connect.type": "int16"}])
    );
    assert_eq!(
        field("n")["type"][1],
        json!({"type": "bytes", "scale": 2, "precision": 10, "connect.version": 1,
            "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
            "connect.name": DECIMAL, "logicalType": "decimal"})
    );
    // An optional field with a default: its type first, the default the field's.
    assert_eq!(
        field("s")["type"],
        json!([{"type": "string", "connect.default": "x"}, "null"])
    );
    assert_eq!(field("s")["default"], "x");
    // A required one with a default: no union, the default kept.
    assert_eq!(field("at")["default"], 0);
    assert_eq!(
        field("at")["type"]["connect.name"],
        "io.debezium.time.MicroTimestamp"
    );
    assert_eq!(
        field("pairs")["type"][1],
        json!({"type": "map", "values": ["null", "string"]})
    );
    // Bytes defaults are ISO-8859-1 text; a name Avro refuses is made valid and kept.
    assert_eq!(field("b_y")["default"], "\u{0}\u{ff}");
    assert_eq!(field("b_y")["tidemark.column"], "b-y");
}

#[test]
fn payloads_are_written_as_the_schema_says_and_read_back() {
    let translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    let payload = json!({
        "before": null,
        "after": {"id": 7, "small": -3, "n": "BNI=", "s": null, "at": 1_700_000_000_000_000_i64,
                  "tags": ["a", null], "pairs": {"k": "v", "z": null}, "f": "NaN", "b-y": "AQI="},
        "op": "c"
    });
    let (fields, row) = written(&translated, &payload);
    assert_eq!(fields[0].1, Avro::Union(0, Box::new(Avro::Null)));
    assert_eq!(fields[2].1, Avro::String("c".into()));
    let column = |name: &str| {
        row.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(column("id"), Avro::Int(7));
    assert_eq!(column("small"), Avro::Union(1, Box::new(Avro::Int(-3))));
    assert!(matches!(column("n"), Avro::Union(1, _)));
    // A null in a `[T, "null"]` union is its second branch.
    assert_eq!(column("s"), Avro::Union(1, Box::new(Avro::Null)));
    assert_eq!(column("at"), Avro::Long(1_700_000_000_000_000));
    assert!(
        matches!(column("f"), Avro::Union(1, v) if matches!(*v, Avro::Double(d) if d.is_nan()))
    );
    assert_eq!(
        column("b_y"),
        Avro::Union(0, Box::new(Avro::Bytes(vec![1, 2])))
    );
}

#[test]
fn a_null_in_a_required_field_is_an_error_naming_it() {
    let translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    let payload = json!({"before": null, "after": {"id": null}, "op": "c"});
    let error = translated
        .write(&payload, &mut Vec::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("column id"), "{error}");
}

#[test]
fn comments_are_docs_and_renamed_columns_keep_their_old_names_as_aliases() {
    let mut translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    translated
        .annotate_row(
            &[("id", "the row's id")],
            &[("old small".into(), "small".into())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let row = &translated.schema["fields"][0]["type"][1];
    assert_eq!(row["fields"][0]["doc"], "the row's id");
    assert_eq!(row["fields"][1]["aliases"], json!(["old_small"]));
}

#[test]
fn an_array_of_arrays_in_a_one_dimensional_column_is_null() {
    let translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    let payload =
        json!({"before": null, "after": {"id": 1, "at": 0, "tags": [["a"], ["b"]]}, "op": "c"});
    let (_, row) = written(&translated, &payload);
    assert_eq!(
        row[5],
        ("tags".into(), Avro::Union(0, Box::new(Avro::Null)))
    );
}

#[test]
fn debeziums_fixed_records_translate_and_round_trip() {
    use crate::schema::connect_schema::fixed_schema;
    use crate::schema::fixed::FixedSchema;
    for (fixed, data) in [
        (FixedSchema::HeartbeatKey, json!({"serverName": "shop"})),
        (
            FixedSchema::Heartbeat,
            json!({"ts_ms": 1_700_000_000_000_i64, "lsn": 4_242}),
        ),
        (FixedSchema::TransactionKey, json!({"id": "758:28875680"})),
        (
            FixedSchema::TransactionMetadata,
            json!({"status": "END", "id": "758:28875680", "event_count": 3,
                "data_collections": [{"data_collection": "public.t", "event_count": 3}],
                "ts_ms": 1_700_000_000_000_i64}),
        ),
    ] {
        let translated =
            ConnectAvro::from_connect(&fixed_schema(fixed)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            translated.schema["connect.name"].is_string(),
            "{fixed:?}: {}",
            translated.schema
        );
        let mut out = Vec::new();
        translated
            .write(&data, &mut out)
            .unwrap_or_else(|e| panic!("{fixed:?}: {e}"));
        let schema =
            apache_avro::Schema::parse(&translated.schema).unwrap_or_else(|e| panic!("{e}"));
        let read = crate::schema::avro::read_datum(&schema, &mut &out[..])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::schema::avro::connect_json_value(&read),
            data,
            "{fixed:?}"
        );
    }
}

/// A table of every kind the Connect mapping writes, the types carried as text under
/// their PostgreSQL names (`Column::new` names the type after the column).
fn every_kind() -> (TableSchema, Vec<crate::domain::value::Value>) {
    use crate::domain::column_type::TypeKind;
    use crate::domain::event::Column;
    use crate::domain::value::Value;
    let mut table = crate::schema::avro::tests::table();
    let mut row = crate::schema::avro::tests::event()
        .after
        .unwrap_or_else(|| panic!("no row"));
    let mut add = |column: Column, value: Value| {
        table.columns.push(column);
        row.push(value);
    };
    add(
        Column::new("interval", TypeKind::Interval),
        Value::Text("P1Y2M3DT4H5M6.5S".into()),
    );
    add(
        Column::new("timetz", TypeKind::TimeTz),
        Value::Text("10:20:30.123456+02".into()),
    );
    add(
        Column::new("money", TypeKind::Other),
        Value::Text("$1,234.50".into()),
    );
    let mut bits = Column::new("bit", TypeKind::Other);
    bits.type_modifier = 12;
    add(bits, Value::Text("101100111000".into()));
    let mut bit = Column::new("bit", TypeKind::Other);
    bit.name = "one_bit".into();
    bit.type_modifier = 1;
    add(bit, Value::Text("1".into()));
    add(
        Column::new("hstore", TypeKind::Other),
        Value::Text("\"b\"=>\"2\", \"a\"=>NULL".into()),
    );
    add(
        Column::new("point", TypeKind::Other),
        Value::Text("(1.5,-2)".into()),
    );
    add(
        Column::new("oid", TypeKind::Other),
        Value::Text("4294967295".into()),
    );
    add(
        Column::new("xml", TypeKind::Other),
        Value::Text("<a>1</a>".into()),
    );
    add(
        Column::new("ratio4", TypeKind::Float4),
        Value::Float32(f32::INFINITY),
    );
    add(
        Column::new("texts", TypeKind::Array(Box::new(TypeKind::Text))),
        Value::Array(vec![Value::Text("x".into()), Value::Null]),
    );
    add(
        Column::new(
            "fixed",
            TypeKind::Numeric {
                precision: Some(10),
                scale: Some(2),
            },
        ),
        Value::Numeric("12.5".into()),
    );
    (table, row)
}

/// Every mode a `[events]` section sets.
fn every_mode() -> Vec<EnvelopeContext> {
    use crate::domain::decimal::DecimalMode;
    use crate::domain::wire::{BinaryMode, HstoreMode, IntervalMode, TimePrecision};
    let base = || EnvelopeContext::new("shop", "app");
    let mut modes = vec![base()];
    for decimal in [DecimalMode::Double, DecimalMode::String] {
        modes.push(EnvelopeContext {
            decimal_mode: decimal,
            ..base()
        });
    }
    for time in [
        TimePrecision::AdaptiveTimeMicroseconds,
        TimePrecision::Microseconds,
    ] {
        modes.push(EnvelopeContext {
            time_precision: time,
            ..base()
        });
    }
    modes.push(EnvelopeContext {
        interval_mode: IntervalMode::String,
        ..base()
    });
    modes.push(EnvelopeContext {
        binary_mode: BinaryMode::Base64,
        ..base()
    });
    modes.push(EnvelopeContext {
        hstore_mode: HstoreMode::Map,
        ..base()
    });
    modes
}

/// The record written as it is serialized and through its JSON value: the same bytes,
/// and the first with no fallback.
fn same_both_ways(translated: &ConnectAvro, payload: &impl serde::Serialize, what: &str) {
    let mut streamed = Vec::new();
    if let Err(unfit) = stream::write(&translated.plan, payload, &mut streamed) {
        panic!("{what}: the streaming writer gave up: {unfit}");
    }
    let mut through_json = Vec::new();
    translated
        .write(
            &json_value(payload).unwrap_or_else(|e| panic!("{e}")),
            &mut through_json,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(streamed, through_json, "{what}");
}

#[test]
fn records_written_as_they_are_serialized_equal_those_written_through_json() {
    use crate::domain::event::{JsonRecord, Op};
    use crate::domain::value::Value;
    let (table, row) = every_kind();
    let table = std::sync::Arc::new(table);
    for context in every_mode() {
        let plans = ConnectPlans::of_table(&table, &context, &[]).unwrap_or_else(|e| panic!("{e}"));
        let key = plans.key.as_ref().unwrap_or_else(|| panic!("no key plan"));
        let mut event = crate::schema::avro::tests::event();
        event.table = Some(table.clone());
        event.after = Some(row.clone());
        let mut cases = vec![("insert", event.clone())];
        event.op = Op::Update;
        event.before = Some(row.clone());
        event.unchanged_toast = vec![6, 7, 13];
        if let Some(after) = event.after.as_mut() {
            for index in [6, 7, 13] {
                after[index] = Value::Null;
            }
        }
        cases.push(("update with unchanged TOAST", event.clone()));
        event.op = Op::Delete;
        event.after = None;
        event.unchanged_toast.clear();
        let mut key_only = vec![Value::Null; row.len()];
        key_only[0] = row[0].clone();
        event.before = Some(key_only);
        cases.push(("delete with the key alone", event.clone()));
        let mut nulls = vec![Value::Null; row.len()];
        nulls[0] = Value::Int64(1);
        event.op = Op::Create;
        event.before = None;
        event.after = Some(nulls);
        cases.push(("every column null", event.clone()));
        event.op = Op::Truncate;
        event.after = None;
        event.truncate = Some(crate::domain::event::TruncateOptions {
            cascade: true,
            restart_identity: false,
        });
        cases.push(("truncate", event.clone()));
        for (what, event) in &cases {
            let record = JsonRecord {
                event,
                context: &context,
                now_ms: 7,
            };
            let what = format!("{what} ({:?})", context.wire_mode());
            same_both_ways(&plans.value, &record.value_json(), &what);
            if event.op != Op::Truncate {
                let key_json = record.key_json().unwrap_or_else(|| panic!("no key"));
                same_both_ways(key, &key_json, &format!("{what}: key"));
            }
        }
        let messages = ConnectPlans::of_messages().unwrap_or_else(|e| panic!("{e}"));
        let mut message = crate::schema::avro::tests::event();
        message.op = Op::Message;
        message.table = None;
        message.after = None;
        for transactional in [true, false] {
            message.message = Some(crate::domain::event::LogicalMessage {
                prefix: "audit".into(),
                content: bytes::Bytes::from_static(b"\x00\xffhello"),
                transactional,
            });
            let record = JsonRecord {
                event: &message,
                context: &context,
                now_ms: 7,
            };
            same_both_ways(&messages.value, &record.value_json(), "a logical message");
            let key_json = record.key_json().unwrap_or_else(|| panic!("no key"));
            same_both_ways(
                messages
                    .key
                    .as_ref()
                    .unwrap_or_else(|| panic!("no key plan")),
                &key_json,
                "a message key",
            );
        }
    }
}

#[test]
fn a_nested_array_is_null_when_streamed_too() {
    use crate::domain::event::JsonRecord;
    use crate::domain::value::Value;
    let context = EnvelopeContext::new("shop", "app");
    let mut event = crate::schema::avro::tests::event();
    if let Some(after) = event.after.as_mut() {
        after[14] = Value::Array(vec![Value::Array(vec![Value::Int32(1)])]);
    }
    let table = event.table.clone().unwrap_or_else(|| panic!("no table"));
    let plans = ConnectPlans::of_table(&table, &context, &[]).unwrap_or_else(|e| panic!("{e}"));
    let record = JsonRecord {
        event: &event,
        context: &context,
        now_ms: 7,
    };
    same_both_ways(
        &plans.value,
        &record.value_json(),
        "a two-dimensional array",
    );
}

#[test]
fn a_payload_out_of_the_schemas_order_is_written_through_json() {
    let translated = ConnectAvro::from_connect(&envelope()).unwrap_or_else(|e| panic!("{e}"));
    // `op` before `after`: the streaming writer gives up, the record is still written.
    let mut payload = Map::new();
    payload.insert("op".into(), json!("c"));
    payload.insert("after".into(), json!({"id": 1, "at": 5}));
    let mut ordered = Vec::new();
    let mut out = Vec::new();
    assert!(stream::write(&translated.plan, &payload, &mut Vec::new()).is_err());
    translated
        .write_serialized(&payload, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    translated
        .write(&Json::Object(payload), &mut ordered)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, ordered);
}
