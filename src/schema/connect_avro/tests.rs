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
