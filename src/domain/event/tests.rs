use super::*;

/// `nn (id int PK, n int NOT NULL, t text NOT NULL DEFAULT 'x', at timestamptz DEFAULT
/// now(), tz timestamptz NOT NULL, u uuid NOT NULL, arr int[] NOT NULL, free text)`.
fn table(identity: ReplicaIdentity) -> TableSchema {
    let column = |name: &str, kind: TypeKind, not_null: bool, default: ColumnDefault| Column {
        not_null,
        default,
        ..Column::new(name, kind)
    };
    TableSchema {
        relation_id: 1,
        schema: "public".into(),
        name: "nn".into(),
        columns: vec![
            column("id", TypeKind::Int4, true, ColumnDefault::None),
            column("n", TypeKind::Int4, true, ColumnDefault::None),
            column(
                "t",
                TypeKind::Text,
                true,
                ColumnDefault::Constant(Value::Text("x".into())),
            ),
            column(
                "at",
                TypeKind::TimestampTz,
                false,
                ColumnDefault::Expression,
            ),
            column("tz", TypeKind::TimestampTz, true, ColumnDefault::None),
            column("u", TypeKind::Uuid, true, ColumnDefault::None),
            column(
                "arr",
                TypeKind::Array(Box::new(TypeKind::Int4)),
                true,
                ColumnDefault::None,
            ),
            column("free", TypeKind::Text, false, ColumnDefault::None),
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: identity,
    }
}

/// The `before` of a delete of row 7 whose old row carries the key only, as JSON.
fn delete_before(identity: ReplicaIdentity, context: &EnvelopeContext) -> serde_json::Value {
    let mut before = vec![Value::Null; 8];
    before[0] = Value::Int32(7);
    let event = ChangeEvent {
        op: Op::Delete,
        table: Some(Arc::new(table(identity))),
        before: Some(before),
        after: None,
        unchanged_toast: Vec::new(),
        source: SourcePosition::default(),
        data_collection_order: 1,
        message: None,
        truncate: None,
        key_change: None,
    };
    let record = JsonRecord {
        event: &event,
        context,
        now_ms: 0,
    };
    let value = serde_json::to_value(record.value_json()).unwrap_or_else(|e| panic!("{e}"));
    value["before"].clone()
}

#[test]
fn a_key_only_old_row_holds_debeziums_stand_ins_for_the_columns_it_lacks() {
    let context = EnvelopeContext::new("shop", "db");
    assert_eq!(
        delete_before(ReplicaIdentity::Default, &context),
        serde_json::json!({
            "id": 7,
            // NOT NULL without a default: the zero of the type.
            "n": 0,
            // A constant default.
            "t": "x",
            // An expression default: the declared zero, in the column's digits.
            "at": "1970-01-01T00:00:00.000000Z",
            // Debezium's stand-ins for a missing timestamptz and uuid.
            "tz": "1970-01-01T00:00:00Z",
            "u": "",
            "arr": [],
            // Nullable without a default: null.
            "free": null,
        })
    );
}

#[test]
fn a_whole_old_row_and_the_native_preset_keep_their_nulls() {
    let context = EnvelopeContext::new("shop", "db");
    let full = delete_before(ReplicaIdentity::Full, &context);
    assert_eq!(full["n"], serde_json::Value::Null);
    assert_eq!(full["t"], serde_json::Value::Null);
    let native = EnvelopeContext {
        debezium_types: false,
        ..EnvelopeContext::new("shop", "db")
    };
    let before = delete_before(ReplicaIdentity::Default, &native);
    assert_eq!(before["n"], serde_json::Value::Null);
    assert_eq!(before["at"], serde_json::Value::Null);
}

#[test]
fn defaults_are_declared_as_debezium_declares_them() {
    let table = table(ReplicaIdentity::Default);
    let mode = EnvelopeContext::new("shop", "db").wire_mode();
    let declared = |name: &str| {
        let column = table
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        declared_default(column, mode)
    };
    assert_eq!(declared("t"), Some(Value::Text("x".into())));
    assert_eq!(declared("at"), Some(Value::TimestampTz(0)));
    assert_eq!(declared("n"), None);
    // Arrays declare none, as Debezium's do.
    assert_eq!(declared("arr"), None);
    let native = WireMode {
        debezium_types: false,
        ..mode
    };
    assert_eq!(declared_default(&table.columns[2], native), None);
}

#[test]
fn unchanged_toast_holds_the_configured_placeholder_in_its_types_form() {
    let table = TableSchema {
        relation_id: 1,
        schema: "public".into(),
        name: "docs".into(),
        columns: vec![
            Column::new("id", TypeKind::Int4),
            Column::new("body", TypeKind::Text),
            Column::new("blob", TypeKind::Bytea),
            Column::new("ids", TypeKind::Array(Box::new(TypeKind::Int4))),
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    };
    let event = ChangeEvent {
        op: Op::Update,
        table: Some(Arc::new(table)),
        before: None,
        after: Some(vec![Value::Int32(1), Value::Null, Value::Null, Value::Null]),
        unchanged_toast: vec![1, 2, 3],
        source: SourcePosition::default(),
        data_collection_order: 1,
        message: None,
        truncate: None,
        key_change: None,
    };
    let context = EnvelopeContext {
        unavailable_value: Arc::from(&b"N/A"[..]),
        ..EnvelopeContext::new("shop", "db")
    };
    let record = JsonRecord {
        event: &event,
        context: &context,
        now_ms: 0,
    };
    let value = serde_json::to_value(record.value_json()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        value["after"],
        serde_json::json!({"id": 1, "body": "N/A", "blob": "Ti9B", "ids": [78, 47, 65]})
    );
}
