//! Each replica identity gives correct events, and unchanged TOAST columns are listed, not
//! invented.

use crate::common;

use common::*;
use tidemark::domain::event::Op;
use tidemark::domain::value::Value;

#[tokio::test]
async fn each_replica_identity_gives_correct_before_images_and_keys() {
    let (db, client) = database("identity").await;
    exec(
        &client,
        "CREATE TABLE ident_default (id int PRIMARY KEY, v text);
         CREATE TABLE ident_full (id int, v text); ALTER TABLE ident_full REPLICA IDENTITY FULL;
         CREATE TABLE ident_full_pk (id int PRIMARY KEY, v text); ALTER TABLE ident_full_pk REPLICA IDENTITY FULL;
         CREATE TABLE ident_index (id int PRIMARY KEY, code text NOT NULL, v text);
         CREATE UNIQUE INDEX ident_index_code ON ident_index (code);
         ALTER TABLE ident_index REPLICA IDENTITY USING INDEX ident_index_code;
         CREATE TABLE ident_nothing (id int PRIMARY KEY, v text); ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING;
         INSERT INTO ident_default VALUES (1, 'a'); INSERT INTO ident_full VALUES (1, 'a');
         INSERT INTO ident_full_pk VALUES (1, 'a'); INSERT INTO ident_index VALUES (1, 'c1', 'a');",
    )
    .await;
    let config = config(
        &db,
        "ident",
        "tables = [\"public.ident_default\", \"public.ident_full\", \"public.ident_full_pk\", \"public.ident_index\"]",
    );
    let mut reader = Running::start(config, &client).await;
    exec(
        &client,
        "UPDATE ident_default SET v = 'b'; DELETE FROM ident_default;
         UPDATE ident_full SET v = 'b'; DELETE FROM ident_full;
         UPDATE ident_full_pk SET v = 'b'; DELETE FROM ident_full_pk;
         UPDATE ident_index SET v = 'b'; UPDATE ident_index SET code = 'c2'; DELETE FROM ident_index;",
    )
    .await;
    let events = reader.wait_for_events(10).await;
    let of = |table: &str| {
        events
            .iter()
            .filter(|e| e.table.as_ref().is_some_and(|t| t.name == table))
            .collect::<Vec<_>>()
    };

    let default = of("ident_default");
    assert_eq!(
        default.iter().map(|e| e.op).collect::<Vec<_>>(),
        vec![Op::Update, Op::Delete]
    );
    assert_eq!(default[0].before, None);
    assert_eq!(default[1].before, Some(vec![Value::Int32(1), Value::Null]));

    let full = of("ident_full");
    assert_eq!(
        full[0].before,
        Some(vec![Value::Int32(1), Value::Text("a".into())])
    );
    assert_eq!(
        full[0].after,
        Some(vec![Value::Int32(1), Value::Text("b".into())])
    );
    assert_eq!(
        full[1].before,
        Some(vec![Value::Int32(1), Value::Text("b".into())])
    );
    // No primary key: the row is identified by every column, but the record has no key
    // (as Debezium's), so a NULL anywhere or an update never touches a key.
    assert_eq!(full[1].key(), None);
    let identity = full[1].table.as_ref().map(|t| t.key_columns.len());
    assert_eq!(identity, Some(2), "the whole row identifies it");

    let full_pk = of("ident_full_pk");
    assert_eq!(
        full_pk[0].key().unwrap_or_default(),
        vec![("id", &Value::Int32(1))],
        "the primary key is preferred as the key"
    );
    assert_eq!(
        full_pk[0].before,
        Some(vec![Value::Int32(1), Value::Text("a".into())])
    );

    // USING INDEX: the key is the index column, because old rows carry only that column.
    let index = of("ident_index");
    assert_eq!(
        index.iter().map(|e| e.op).collect::<Vec<_>>(),
        vec![Op::Update, Op::Delete, Op::Create, Op::Delete]
    );
    assert_eq!(
        index[0].before, None,
        "identity columns unchanged: no old key"
    );
    assert_eq!(
        index[0].key().unwrap_or_default(),
        vec![("code", &Value::Text("c1".into()))]
    );
    assert_eq!(
        index[1].key().unwrap_or_default(),
        vec![("code", &Value::Text("c1".into()))]
    );
    assert_eq!(
        index[2].key().unwrap_or_default(),
        vec![("code", &Value::Text("c2".into()))]
    );
    assert_eq!(
        index[3].before,
        Some(vec![Value::Null, Value::Text("c2".into()), Value::Null])
    );
    assert_eq!(events.len(), 10, "no extra events");
    reader.stop().await;

    // REPLICA IDENTITY NOTHING: the source itself refuses the update once published.
    exec(&client, "ALTER PUBLICATION tidemark_ident ADD TABLE ident_nothing; INSERT INTO ident_nothing VALUES (1, 'a');").await;
    let refused = client
        .batch_execute("UPDATE ident_nothing SET v = 'b'")
        .await;
    let message = refused
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.message().to_owned()))
        .unwrap_or_default();
    assert!(message.contains("replica identity"), "{message}");
}

#[tokio::test]
async fn primary_key_change_becomes_delete_and_create() {
    let (db, client) = database("keychange").await;
    exec(
        &client,
        "CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a');",
    )
    .await;
    let mut reader = Running::start(config(&db, "keychange", ""), &client).await;
    exec(&client, "UPDATE k SET id = 2 WHERE id = 1").await;
    let events = reader.wait_for_events(2).await;
    assert_eq!(ops(&events), vec![Op::Delete, Op::Create]);
    assert_eq!(
        events[0].key().unwrap_or_default(),
        vec![("id", &Value::Int32(1))]
    );
    assert_eq!(
        events[1].key().unwrap_or_default(),
        vec![("id", &Value::Int32(2))]
    );
    assert_eq!(
        events[1].after,
        Some(vec![Value::Int32(2), Value::Text("a".into())])
    );
    reader.stop().await;
}

#[tokio::test]
async fn unchanged_toast_columns_are_listed_not_invented() {
    let (db, client) = database("toast").await;
    // Random text does not compress, so 200 kB of it is stored out of line (TOASTed).
    exec(
        &client,
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs_full REPLICA IDENTITY FULL;
         CREATE FUNCTION big_text() RETURNS text LANGUAGE sql AS
           $$ SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 6250) $$;
         INSERT INTO docs VALUES (1, 't', big_text());
         INSERT INTO docs_full SELECT * FROM docs;",
    )
    .await;
    let body: String = client
        .query_one("SELECT body FROM docs", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    let mut reader = Running::start(config(&db, "toast", ""), &client).await;
    exec(&client, "UPDATE docs SET title = 'u'; UPDATE docs_full SET title = 'u'; UPDATE docs SET body = 'short';").await;
    let events = reader.wait_for_events(3).await;
    assert_eq!(events[0].unchanged_toast, vec![2]);
    assert_eq!(column(&events[0], "body"), &Value::Null);
    assert_eq!(column(&events[0], "title"), &Value::Text("u".into()));
    assert!(
        events[1].unchanged_toast.is_empty(),
        "FULL identity carries the old value"
    );
    assert_eq!(column(&events[1], "body"), &Value::Text(body));
    assert!(events[2].unchanged_toast.is_empty());
    assert_eq!(column(&events[2], "body"), &Value::Text("short".into()));
    reader.stop().await;
}

#[tokio::test]
async fn relation_changes_mid_stream_refresh_the_table_description() {
    let (db, client) = database("ddl").await;
    exec(&client, "CREATE TABLE d (id int PRIMARY KEY, a text)").await;
    let mut reader = Running::start(config(&db, "ddl", ""), &client).await;
    exec(&client, "INSERT INTO d VALUES (1, 'x')").await;
    exec(&client, "ALTER TABLE d ADD COLUMN b numeric(5,1) DEFAULT 2.5; ALTER TABLE d ALTER COLUMN a TYPE int USING 7").await;
    exec(&client, "INSERT INTO d VALUES (2, 8, 1.5)").await;
    exec(&client, "ALTER TABLE d DROP COLUMN b").await;
    exec(&client, "UPDATE d SET a = 9 WHERE id = 2").await;
    let events = reader.wait_for_events(3).await;
    reader.stop().await;
    let names = |i: usize| {
        events[i]
            .table
            .as_ref()
            .map(|t| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(names(0), vec!["id", "a"]);
    assert_eq!(
        events[0].after,
        Some(vec![Value::Int32(1), Value::Text("x".into())])
    );
    assert_eq!(names(1), vec!["id", "a", "b"]);
    assert_eq!(
        events[1].after,
        Some(vec![
            Value::Int32(2),
            Value::Int32(8),
            Value::Numeric("1.5".into())
        ])
    );
    assert_eq!(names(2), vec!["id", "a"]);
    assert_eq!(
        events[2].after,
        Some(vec![Value::Int32(2), Value::Int32(9)])
    );
}
