use super::*;
use crate::domain::column_type::TypeKind;
use crate::domain::event::ReplicaIdentity;
use crate::domain::event::{Column, KeySource};
use bytes::Bytes;

fn table(identity: ReplicaIdentity, key_columns: Vec<usize>) -> TableSchema {
    let column = Column::new;
    TableSchema {
        relation_id: 10,
        schema: "public".into(),
        name: "t".into(),
        columns: vec![column("id", TypeKind::Int4), column("body", TypeKind::Text)],
        key_source: if key_columns.is_empty() {
            KeySource::None
        } else {
            KeySource::PrimaryKey
        },
        key_columns,
        replica_identity: identity,
    }
}

fn text(s: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn assembler(t: TableSchema, policy: UnidentifiedRowPolicy) -> ChangeAssembler {
    let mut a = ChangeAssembler::new(policy);
    a.set_relation(t);
    a.begin(5, Lsn(100), 0);
    a
}

fn run(a: &mut ChangeAssembler, m: PgOutputMessage) -> Result<Vec<ChangeEvent>, AssemblyError> {
    let mut out = Vec::new();
    a.assemble(&m, Lsn(50), &mut out)?;
    Ok(out)
}

#[test]
fn insert_then_update_with_unchanged_toast() {
    let mut a = assembler(
        table(ReplicaIdentity::Default, vec![0]),
        UnidentifiedRowPolicy::Fail,
    );
    let inserted = run(
        &mut a,
        PgOutputMessage::Insert {
            xid: None,
            relation_id: 10,
            new: vec![text("1"), text("hello")],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inserted[0].op, Op::Create);
    assert_eq!(
        inserted[0].after,
        Some(vec![Value::Int32(1), Value::Text("hello".into())])
    );
    let updated = run(
        &mut a,
        PgOutputMessage::Update {
            xid: None,
            relation_id: 10,
            old: None,
            new: vec![text("1"), TupleValue::UnchangedToast],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(updated[0].op, Op::Update);
    assert_eq!(updated[0].before, None);
    assert_eq!(updated[0].unchanged_toast, vec![1]);
    assert_eq!(updated[0].source.seq, 1);
    assert_eq!(updated[0].data_collection_order, 2);
    assert_eq!(updated[0].source.commit_lsn, Lsn(100));
    let key = updated[0].key().unwrap_or_default();
    assert_eq!(key, vec![("id", &Value::Int32(1))]);
}

#[test]
fn full_identity_fills_unchanged_toast_from_the_old_row() {
    let mut a = assembler(
        table(ReplicaIdentity::Full, vec![0]),
        UnidentifiedRowPolicy::Fail,
    );
    let events = run(
        &mut a,
        PgOutputMessage::Update {
            xid: None,
            relation_id: 10,
            old: Some((OldTupleKind::Full, vec![text("1"), text("big")])),
            new: vec![text("1"), TupleValue::UnchangedToast],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].after,
        Some(vec![Value::Int32(1), Value::Text("big".into())])
    );
    assert!(events[0].unchanged_toast.is_empty());
    assert_eq!(
        events[0].before,
        Some(vec![Value::Int32(1), Value::Text("big".into())])
    );
}

#[test]
fn key_change_becomes_delete_then_create() {
    let mut a = assembler(
        table(ReplicaIdentity::Default, vec![0]),
        UnidentifiedRowPolicy::Fail,
    );
    let events = run(
        &mut a,
        PgOutputMessage::Update {
            xid: None,
            relation_id: 10,
            old: Some((OldTupleKind::Key, vec![text("1"), TupleValue::Null])),
            new: vec![text("2"), text("x")],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        events.iter().map(|e| e.op).collect::<Vec<_>>(),
        vec![Op::Delete, Op::Create]
    );
    assert_eq!(
        events[0].key().unwrap_or_default(),
        vec![("id", &Value::Int32(1))]
    );
    assert_eq!(
        events[1].key().unwrap_or_default(),
        vec![("id", &Value::Int32(2))]
    );
}

#[test]
fn unidentifiable_rows_fail_with_the_remedy_or_are_skipped() {
    let keyless = || table(ReplicaIdentity::Nothing, vec![]);
    let delete = || PgOutputMessage::Delete {
        xid: None,
        relation_id: 10,
        old: (OldTupleKind::Key, vec![TupleValue::Null, TupleValue::Null]),
    };
    let mut failing = assembler(keyless(), UnidentifiedRowPolicy::Fail);
    let error = run(&mut failing, delete())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("ALTER TABLE public.t REPLICA IDENTITY FULL"),
        "{error}"
    );
    let mut skipping = assembler(keyless(), UnidentifiedRowPolicy::Skip);
    assert!(
        run(&mut skipping, delete())
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert_eq!(skipping.skipped(), 1);
    // Inserts of keyless tables are fine.
    let insert = PgOutputMessage::Insert {
        xid: None,
        relation_id: 10,
        new: vec![text("1"), TupleValue::Null],
    };
    assert_eq!(
        run(&mut failing, insert)
            .unwrap_or_else(|e| panic!("{e}"))
            .len(),
        1
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut a = assembler(
        table(ReplicaIdentity::Default, vec![0]),
        UnidentifiedRowPolicy::Fail,
    );
    let wrong_count = PgOutputMessage::Insert {
        xid: None,
        relation_id: 10,
        new: vec![text("1")],
    };
    assert!(matches!(
        run(&mut a, wrong_count),
        Err(AssemblyError::ColumnCount { .. })
    ));
    let bad_value = PgOutputMessage::Insert {
        xid: None,
        relation_id: 10,
        new: vec![text("one"), TupleValue::Null],
    };
    let error = run(&mut a, bad_value)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("public.t.id"), "{error}");
    let unknown = PgOutputMessage::Insert {
        xid: None,
        relation_id: 99,
        new: vec![],
    };
    assert!(matches!(
        run(&mut a, unknown),
        Err(AssemblyError::UnknownRelation(99))
    ));
    a.end(Lsn(200));
    let outside = PgOutputMessage::Insert {
        xid: None,
        relation_id: 10,
        new: vec![text("1"), TupleValue::Null],
    };
    assert!(matches!(
        run(&mut a, outside),
        Err(AssemblyError::OutsideTransaction(_))
    ));
}

#[test]
fn a_null_in_a_not_null_column_makes_it_optional_from_then_on() {
    let mut described = table(ReplicaIdentity::Default, vec![0]);
    for column in &mut described.columns {
        column.not_null = true;
    }
    // A third NOT NULL column of an array type without a TOAST placeholder (float8[]).
    let mut tags = Column::new("tags", TypeKind::Array(Box::new(TypeKind::Float8)));
    tags.not_null = true;
    described.columns.push(tags);
    let mut a = assembler(described, UnidentifiedRowPolicy::Fail);
    // The text column's unchanged TOASTed value is written as the placeholder: still
    // NOT NULL. The array's has none: now optional.
    let toasted = run(
        &mut a,
        PgOutputMessage::Update {
            xid: None,
            relation_id: 10,
            old: None,
            new: vec![
                text("1"),
                TupleValue::UnchangedToast,
                TupleValue::UnchangedToast,
            ],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let not_null = |event: &ChangeEvent| -> Vec<bool> {
        let table = event.table.as_deref().unwrap_or_else(|| panic!("no table"));
        table.columns.iter().map(|c| c.not_null).collect()
    };
    assert_eq!(not_null(&toasted[0]), vec![true, true, false]);
    // A real NULL in the text column (a DROP NOT NULL the description missed).
    let inserted = run(
        &mut a,
        PgOutputMessage::Insert {
            xid: None,
            relation_id: 10,
            new: vec![text("2"), TupleValue::Null, text("{1}")],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not_null(&inserted[0]), vec![true, false, false]);
    // Kept for the relation: the next row is described the same without another null.
    let next = run(
        &mut a,
        PgOutputMessage::Insert {
            xid: None,
            relation_id: 10,
            new: vec![text("3"), text("x"), text("{2}")],
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not_null(&next[0]), vec![true, false, false]);
}
