use super::*;
use serde_json::json;

pub(crate) fn column(name: &str, type_name: &str, key: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        type_name: type_name.into(),
        key,
        optional: None,
    }
}

fn kinds(changes: &[Change]) -> Vec<(String, Option<String>)> {
    changes
        .iter()
        .map(|c| (c.kind.clone(), c.column.clone()))
        .collect()
}

#[test]
fn adds_drops_type_and_key_changes_are_named() {
    let before = vec![
        column("id", "int4", true),
        column("a", "int4", false),
        column("b", "text", false),
    ];
    let after = vec![
        column("id", "int8", true),
        column("b", "text", true),
        column("c", "bool", false),
    ];
    let changes = diff(&before, &after, &[]);
    assert_eq!(
        kinds(&changes),
        vec![
            ("type".into(), Some("id".into())),
            ("drop".into(), Some("a".into())),
            ("add".into(), Some("c".into())),
            ("key".into(), None),
        ]
    );
    assert_eq!(changes[0].old.as_deref(), Some("int4"));
    assert_eq!(changes[3].new.as_deref(), Some("id,b"));
}

#[test]
fn without_capture_a_rename_is_a_drop_and_an_add_and_with_it_a_rename() {
    let before = vec![column("id", "int4", true), column("old", "text", false)];
    let after = vec![column("id", "int4", true), column("new", "text", false)];
    assert_eq!(
        kinds(&diff(&before, &after, &[])),
        vec![
            ("drop".into(), Some("old".into())),
            ("add".into(), Some("new".into()))
        ]
    );
    let ddl: CapturedDdl = serde_json::from_value(serde_json::json!({
        "event": "ddl_command_end", "tag": "ALTER TABLE", "statement": "ALTER TABLE t RENAME old TO new",
        "objects": [{"object_type": "table column", "relid": 5, "attnum": 3}],
        "tables": [{"relid": 5, "schema": "public", "table": "t", "columns": [
            {"attnum": 1, "name": "id", "typname": "int4", "typmod": -1, "not_null": true, "key": true},
            {"attnum": 3, "name": "new", "typname": "text", "typmod": -1, "not_null": false, "key": false}]}]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let renames = ddl.renames(5, &before);
    assert_eq!(renames, vec![("old".to_owned(), "new".to_owned())]);
    let changes = diff(&before, &after, &renames);
    assert_eq!(kinds(&changes), vec![("rename".into(), Some("new".into()))]);
    assert_eq!(ddl.tables[0].column_infos()[0].optional, Some(false));
}

#[test]
fn registered_envelopes_give_their_columns_back() {
    use crate::domain::column_type::TypeKind;
    use crate::domain::event::ReplicaIdentity;
    use crate::domain::event::{Column, KeySource, TableSchema};
    let mut varchar = Column::new("na-me", TypeKind::Text);
    varchar.column_type.name = "varchar".into();
    varchar.type_modifier = 14;
    let table = TableSchema {
        relation_id: 1,
        schema: "public".into(),
        name: "t".into(),
        columns: vec![Column::new("id", TypeKind::Int4), varchar],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    };
    let avro = crate::schema::avro::derive(&table, "p").unwrap_or_else(|e| panic!("{e}"));
    let key = avro.key_json.map(|k| k.to_string());
    let columns = columns_of_envelope(&avro.envelope_json.to_string(), key.as_deref())
        .unwrap_or_else(|| panic!("no columns"));
    assert_eq!(columns, columns_of_table(&table));
    assert_eq!(columns[1].name, "na-me");
    assert_eq!(columns[1].type_name, "varchar(10)");
}

#[test]
fn columns_of_a_connect_mapping_envelope_come_from_its_connect_parameters() {
    let typed = |t: &str, pg: &str| json!({"type": t, "connect.parameters": {"__debezium.source.column.type": pg}});
    let envelope = json!({"type": "record", "name": "Envelope", "namespace": "p.public.t",
    "connect.name": "p.public.t.Envelope", "fields": [
    {"name": "before", "default": null, "type": ["null", {"type": "record", "name": "Value",
        "fields": [
            {"name": "id", "type": typed("int", "int4")},
            {"name": "na_me", "tidemark.column": "na-me", "default": null,
             "type": ["null", typed("string", "varchar(10)")]},
        ]}]}]});
    let key = json!({"type": "record", "name": "Key", "fields": [{"name": "id", "type": typed("int", "int4")}]});
    let columns = columns_of_envelope(&envelope.to_string(), Some(&key.to_string()))
        .unwrap_or_else(|| panic!("no columns"));
    assert_eq!(columns.len(), 2);
    assert_eq!(
        (columns[0].type_name.as_str(), columns[0].key),
        ("int4", true)
    );
    assert_eq!(columns[1].name, "na-me");
    assert_eq!(columns[1].type_name, "varchar(10)");
}
