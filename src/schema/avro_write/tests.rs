use std::sync::Arc;

use apache_avro::types::Value as Avro;
use proptest::prelude::*;

use super::*;
use crate::domain::event::Column;
use crate::schema::avro::tests::{context, event, table};
use crate::schema::avro::{decimal_bytes, derive, envelope_datum, key_datum, maps_to_string};

/// apache-avro's encoding of the same event, through its value tree.
fn reference(event: &ChangeEvent) -> (Option<Vec<u8>>, Vec<u8>) {
    let table = event.table.as_deref().unwrap_or_else(|| panic!("no table"));
    let avro = derive(table, "shop").unwrap_or_else(|e| panic!("{e}"));
    let envelope = envelope_datum(event, &context(), 5).unwrap_or_else(|e| panic!("{e}"));
    let value = crate::schema::avro::write_datum(&avro.envelope, envelope)
        .unwrap_or_else(|e| panic!("{e}"));
    let key = key_datum(event)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|key| {
            let schema = avro.key.clone().unwrap_or_else(|| panic!("no key schema"));
            crate::schema::avro::write_datum(&schema, key).unwrap_or_else(|e| panic!("{e}"))
        });
    (key, value)
}

fn ours(event: &ChangeEvent) -> (Option<Vec<u8>>, Vec<u8>) {
    let mut writer = AvroWriter::default();
    let mut key = Vec::new();
    let has_key = writer
        .key(event, &mut key)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut value = Vec::new();
    writer
        .envelope(event, &context(), 5, &mut value)
        .unwrap_or_else(|e| panic!("{e}"));
    (has_key.then_some(key), value)
}

#[test]
fn every_type_is_written_byte_for_byte_as_apache_avro_writes_it() {
    let mut event = event();
    // apache-avro refuses nothing here, so use a finite ratio for a byte comparison too.
    assert_eq!(ours(&event), reference(&event), "insert");
    event.op = Op::Update;
    event.before = event.after.clone();
    event.unchanged_toast = vec![6, 7];
    assert_eq!(
        ours(&event),
        reference(&event),
        "update with before and toast"
    );
    event.op = Op::Delete;
    event.after = None;
    event.unchanged_toast.clear();
    event.source.snapshot = crate::domain::event::SnapshotMarker::Last;
    assert_eq!(ours(&event), reference(&event), "delete");
    event.op = Op::Truncate;
    event.before = None;
    assert_eq!(ours(&event), reference(&event), "truncate: no key");
}

#[test]
fn every_column_null_and_empty_arrays_round_trip() {
    let mut event = event();
    let width = event.table.as_ref().map_or(0, |t| t.columns.len());
    let mut row = vec![Value::Null; width];
    row[0] = Value::Int64(-1);
    row[14] = Value::Array(vec![]);
    event.after = Some(row);
    assert_eq!(ours(&event), reference(&event));
}

#[test]
fn a_null_key_value_or_a_mismatched_value_is_an_error_not_bad_bytes() {
    let mut event = event();
    if let Some(after) = event.after.as_mut() {
        after[0] = Value::Null;
    }
    let mut out = Vec::new();
    let error = AvroWriter::default()
        .key(&event, &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("id") && error.contains("null"), "{error}");
    let mut event = super::super::avro::tests::event();
    if let Some(after) = event.after.as_mut() {
        after[1] = Value::Int32(1);
    }
    let error = AvroWriter::default()
        .envelope(&event, &context(), 5, &mut out)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("flag"), "{error}");
}

#[test]
fn decimals_without_allocation_match_the_bigint_reference() {
    let cases = [
        ("0", 2),
        ("-0.00", 2),
        ("1", 0),
        ("-1", 0),
        ("127", 0),
        ("128", 0),
        ("-128", 0),
        ("-129", 0),
        ("255", 0),
        ("32768", 0),
        ("-32769", 0),
        ("12.34", 2),
        ("-0.01", 2),
        (".5", 1),
        ("5", 3),
        ("99999999999999999999999999999999999999", 0),
        ("-99999999999999999999999999999999999999", 0),
        ("170141183460469231731687303715884105728", 0), // beyond i128: the BigInt path
        ("-123456789012345678901.123456789", 9),
    ];
    for (text, scale) in cases {
        let mut fast = Vec::new();
        write_decimal(&mut fast, text, scale, "c").unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut reference = Vec::new();
        let bytes = decimal_bytes(text, scale, "c").unwrap_or_else(|e| panic!("{e}"));
        write_bytes(&mut reference, &bytes);
        assert_eq!(fast, reference, "{text} at scale {scale}");
    }
    for bad in ["NaN", "Infinity", "1.234", "", "-", "+5", "1e5"] {
        assert!(
            write_decimal(&mut Vec::new(), bad, 2, "c").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_non_finite_decimal_is_written_as_null_like_the_reference() {
    for special in ["NaN", "Infinity", "-Infinity"] {
        let mut event = event();
        if let Some(after) = event.after.as_mut() {
            after[4] = Value::Numeric(special.into());
        }
        assert_eq!(ours(&event), reference(&event), "{special}");
    }
}

#[test]
fn a_multidimensional_array_is_written_as_null_like_the_reference() {
    let mut event = event();
    let last = event.after.as_ref().map_or(0, Vec::len) - 1;
    if let Some(after) = event.after.as_mut() {
        after[last] = Value::Array(vec![
            Value::Array(vec![Value::Int32(1), Value::Int32(2)]),
            Value::Array(vec![Value::Int32(3), Value::Null]),
        ]);
    }
    let (key, value) = ours(&event);
    assert_eq!((key.clone(), value.clone()), reference(&event));
    // The same bytes as with a null in that column: the rest of the row is intact.
    if let Some(after) = event.after.as_mut() {
        after[last] = Value::Null;
    }
    assert_eq!((key, value), ours(&event));
}

#[test]
fn unchanged_toast_columns_hold_debeziums_placeholder_like_the_reference() {
    let mut event = event();
    let names = |event: &ChangeEvent| -> Vec<String> {
        let table = event.table.as_deref().unwrap_or_else(|| panic!("no table"));
        event
            .unchanged_toast
            .iter()
            .map(|&i| table.columns[i].name.clone())
            .collect()
    };
    let table = event.table.clone().unwrap_or_else(|| panic!("no table"));
    let index = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let unavailable = [index("note"), index("blob"), index("doc"), index("tags")];
    if let Some(after) = event.after.as_mut() {
        for &i in &unavailable {
            after[i] = Value::Null;
        }
    }
    event.unchanged_toast = unavailable.to_vec();
    assert_eq!(names(&event), ["note", "blob", "doc", "tags"]);
    let (ours_key, ours_value) = ours(&event);
    assert_eq!((ours_key, ours_value.clone()), reference(&event));
    // The text, bytes and JSON columns carry the placeholder; the array stays null.
    let placeholder = crate::domain::event::UNAVAILABLE_VALUE.as_bytes();
    let count = ours_value
        .windows(placeholder.len())
        .filter(|w| *w == placeholder)
        .count();
    assert_eq!(count, 3, "note, blob and doc hold the placeholder");
}

#[test]
fn string_kinds_are_the_kinds_the_schema_maps_to_string() {
    let kinds = [
        TypeKind::Bool,
        TypeKind::Int2,
        TypeKind::Int4,
        TypeKind::Int8,
        TypeKind::Float4,
        TypeKind::Float8,
        TypeKind::Numeric {
            precision: Some(5),
            scale: Some(2),
        },
        TypeKind::Numeric {
            precision: Some(5),
            scale: Some(-2),
        },
        TypeKind::Numeric {
            precision: None,
            scale: None,
        },
        TypeKind::Text,
        TypeKind::Bytea,
        TypeKind::Date,
        TypeKind::Time,
        TypeKind::TimeTz,
        TypeKind::Timestamp,
        TypeKind::TimestampTz,
        TypeKind::Interval,
        TypeKind::Uuid,
        TypeKind::Json,
        TypeKind::Enum,
        TypeKind::Array(Box::new(TypeKind::Text)),
        TypeKind::Other,
    ];
    for kind in kinds {
        let mut table = narrow_table();
        table.columns = vec![Column::new("c", kind.clone())];
        table.key_columns = vec![];
        let schema = derive(&table, "p").unwrap_or_else(|e| panic!("{e}"));
        let field = &schema.envelope_json["fields"][0]["type"][1]["fields"][0]["type"][1];
        assert_eq!(
            maps_to_string(&kind),
            *field == "string",
            "{kind:?}: {field}"
        );
    }
    // A text value in a boolean column is refused, not written as a string.
    let mut event = event();
    if let Some(after) = event.after.as_mut() {
        after[1] = Value::Text("true".into());
    }
    assert!(
        AvroWriter::default()
            .envelope(&event, &context(), 5, &mut Vec::new())
            .is_err()
    );
}

fn narrow_table() -> TableSchema {
    let mut table = table();
    table.columns = vec![
        Column::new("id", TypeKind::Int4),
        Column::new("n", TypeKind::Int8),
        Column::new("f", TypeKind::Float4),
        Column::new("t", TypeKind::Text),
        Column::new("b", TypeKind::Bytea),
        Column::new("a", TypeKind::Array(Box::new(TypeKind::Text))),
    ];
    table.key_columns = vec![0];
    table
}

proptest! {
    #[test]
    fn random_rows_match_apache_avro(
        id in any::<i32>(),
        n in proptest::option::of(any::<i64>()),
        f in proptest::option::of(-1e30f32..1e30),
        t in proptest::option::of(".{0,40}"),
        b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        a in proptest::option::of(proptest::collection::vec(proptest::option::of("[a-z]{0,5}"), 0..70)),
        seq in 0u64..1_000_000,
    ) {
        let mut event = event();
        event.table = Some(Arc::new(narrow_table()));
        event.source.seq = seq;
        event.after = Some(vec![
            Value::Int32(id),
            n.map_or(Value::Null, Value::Int64),
            f.map_or(Value::Null, Value::Float32),
            t.map_or(Value::Null, Value::Text),
            b.map_or(Value::Null, Value::Bytes),
            a.map_or(Value::Null, |items| Value::Array(items.into_iter().map(|i| i.map_or(Value::Null, Value::Text)).collect())),
        ]);
        prop_assert_eq!(ours(&event), reference(&event));
        let table = event.table.as_deref().unwrap_or_else(|| panic!("table"));
        let schema = derive(table, "shop").unwrap_or_else(|e| panic!("{e}")).envelope;
        let (_, value) = ours(&event);
        let read = crate::schema::avro::read_datum(&schema, &mut value.as_slice());
        prop_assert!(matches!(read, Ok(Avro::Record(_))));
    }
}
