use std::sync::Arc;

use super::*;
use crate::domain::event::ReplicaIdentity;
use crate::domain::event::{Column, KeySource, Op, SourcePosition};
use crate::domain::lsn::Lsn;
use num_bigint::BigInt;

fn column(name: &str, kind: TypeKind) -> Column {
    Column::new(name, kind)
}

pub fn table() -> TableSchema {
    TableSchema {
        relation_id: 1,
        schema: "public".into(),
        name: "all-kinds".into(),
        columns: vec![
            column("id", TypeKind::Int8),
            column("flag", TypeKind::Bool),
            column("small", TypeKind::Int2),
            column("ratio", TypeKind::Float8),
            column(
                "price",
                TypeKind::Numeric {
                    precision: Some(30),
                    scale: Some(9),
                },
            ),
            column(
                "free",
                TypeKind::Numeric {
                    precision: None,
                    scale: None,
                },
            ),
            column("note", TypeKind::Text),
            column("blob", TypeKind::Bytea),
            column("day", TypeKind::Date),
            column("at", TypeKind::Time),
            column("local", TypeKind::Timestamp),
            column("utc", TypeKind::TimestampTz),
            column("uid", TypeKind::Uuid),
            column("doc", TypeKind::Json),
            column("tags", TypeKind::Array(Box::new(TypeKind::Int4))),
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    }
}

pub fn event() -> ChangeEvent {
    ChangeEvent {
        op: Op::Create,
        table: Some(Arc::new(table())),
        before: None,
        after: Some(vec![
            Value::Int64(42),
            Value::Bool(true),
            Value::Int16(-7),
            Value::Float64(f64::NAN),
            Value::Numeric("-123456789012345678901.123456789".into()),
            Value::Numeric("NaN".into()),
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255]),
            Value::Date(i32::MAX),
            Value::Time(86_400_000_000),
            Value::Timestamp(i64::MIN),
            Value::TimestampTz(1_704_067_200_000_000),
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            Value::Json("{\"a\":1}".into()),
            Value::Array(vec![Value::Int32(1), Value::Null]),
        ]),
        unchanged_toast: vec![],
        source: SourcePosition {
            lsn: Lsn(100),
            commit_lsn: Lsn(200),
            seq: 3,
            xid: 9,
            commit_time_micros: 1_000_000,
            snapshot: Default::default(),
            last_commit_end: Some(Lsn(50)),
            first_lsn: Default::default(),
        },
        data_collection_order: 4,
        message: None,
        truncate: None,
        key_change: None,
    }
}

pub fn context() -> EnvelopeContext {
    EnvelopeContext::new("shop", "app")
}

#[test]
fn fixed_schemas_are_valid_avro() {
    for (name, text) in [("source", SOURCE_AVSC), ("transaction", TRANSACTION_AVSC)] {
        Schema::parse_str(text).unwrap_or_else(|e| panic!("{name}.avsc: {e}"));
    }
}

#[test]
fn derived_schemas_follow_debezium_names_and_the_type_table() {
    let avro = derive(&table(), "shop").unwrap_or_else(|e| panic!("{e}"));
    let key = avro.key_json.unwrap_or_default();
    assert_eq!(key["namespace"], "shop.public.all_kinds");
    assert_eq!(key["name"], "Key");
    assert_eq!(key["fields"][0], json!({"name": "id", "type": "long"}));
    let value_fields = &avro.envelope_json["fields"][0]["type"][1]["fields"];
    assert_eq!(
        value_fields[4]["type"][1],
        json!({"type": "bytes", "logicalType": "decimal", "precision": 30, "scale": 9})
    );
    assert_eq!(
        value_fields[5]["type"][1],
        json!("string"),
        "unconstrained numeric is text"
    );
    assert_eq!(
        value_fields[11]["type"][1],
        json!({"type": "long", "logicalType": "timestamp-micros"})
    );
    assert_eq!(
        value_fields[10]["type"][1],
        json!({"type": "long", "logicalType": "local-timestamp-micros"})
    );
    assert_eq!(
        value_fields[14]["type"][1],
        json!({"type": "array", "items": ["null", "int"]})
    );
    assert_eq!(
        avro.envelope_json["fields"][1]["type"][1],
        json!("shop.public.all_kinds.Value")
    );
    assert_eq!(avro_name("9lives-x"), "_9lives_x");
}

#[test]
fn decimals_are_exact() {
    let check = |text: &str, scale: i32, unscaled: &str| {
        let bytes = decimal_bytes(text, scale, "c").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            BigInt::from_signed_bytes_be(&bytes).to_string(),
            unscaled,
            "{text}"
        );
    };
    check("12.34", 2, "1234");
    check("-0.01", 2, "-1");
    check("5", 3, "5000");
    check(".5", 1, "5");
    check(
        "-123456789012345678901.123456789",
        9,
        "-123456789012345678901123456789",
    );
    for bad in ["NaN", "Infinity", "-Infinity", "1.234", "", "1e5"] {
        assert!(decimal_bytes(bad, 2, "c").is_err(), "{bad}");
    }
    let error = decimal_bytes("NaN", 2, "price")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("price") && error.contains("no decimal form"),
        "{error}"
    );
}

#[test]
fn events_encode_in_confluent_framing_and_read_back_equal() {
    let avro = derive(&table(), "shop").unwrap_or_else(|e| panic!("{e}"));
    let datum = envelope_datum(&event(), &context(), 5).unwrap_or_else(|e| panic!("{e}"));
    let mut framed = Vec::new();
    confluent_frame(7, &avro.envelope, datum.clone(), &mut framed)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(framed[..5], [0, 0, 0, 0, 7], "magic byte and schema id");
    let decoded =
        super::read_datum(&avro.envelope, &mut &framed[5..]).unwrap_or_else(|e| panic!("{e}"));
    // NaN never equals itself: compare the rest field by field, and the float separately.
    let (Avro::Record(written), Avro::Record(read)) = (&datum, &decoded) else {
        panic!("not records: {decoded:?}");
    };
    assert_eq!(written.len(), read.len());
    for ((name, w), (_, r)) in written.iter().zip(read) {
        if name == "after" {
            let (Avro::Union(1, w), Avro::Union(1, r)) = (w, r) else {
                panic!("after: {r:?}")
            };
            let (Avro::Record(w), Avro::Record(r)) = (w.as_ref(), r.as_ref()) else {
                panic!("after")
            };
            for ((column, wv), (_, rv)) in w.iter().zip(r) {
                if column == "ratio" {
                    assert!(
                        matches!(rv, Avro::Union(1, v) if matches!(v.as_ref(), Avro::Double(d) if d.is_nan()))
                    );
                } else {
                    assert_eq!(wv, rv, "column {column}");
                }
            }
        } else {
            assert_eq!(w, r, "field {name}");
        }
    }
    let key = key_datum(&event())
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or(Avro::Null);
    let key_schema = avro.key.unwrap_or_else(|| panic!("no key schema"));
    let mut framed_key = Vec::new();
    confluent_frame(6, &key_schema, key, &mut framed_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(framed_key, [0, 0, 0, 0, 6, 84], "zigzag varint of 42");
}

#[test]
fn a_non_finite_value_in_a_decimal_column_is_written_as_null_not_a_halt() {
    for special in ["NaN", "Infinity", "-Infinity"] {
        let mut event = event();
        if let Some(after) = event.after.as_mut() {
            after[4] = Value::Numeric(special.into());
        }
        let envelope = envelope_datum(&event, &context(), 5).unwrap_or_else(|e| panic!("{e}"));
        let Avro::Record(fields) = envelope else {
            panic!("not a record")
        };
        let after = fields
            .iter()
            .find(|(name, _)| name == "after")
            .map(|(_, v)| v.clone());
        let Some(Avro::Union(1, after)) = after else {
            panic!("no after: {after:?}")
        };
        let Avro::Record(columns) = *after else {
            panic!("after is not a record")
        };
        assert_eq!(
            columns[4],
            ("price".to_string(), Avro::Union(0, Box::new(Avro::Null))),
            "{special}"
        );
    }
}
