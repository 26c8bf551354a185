//! Insert, update, delete and truncate over every type of the design brief's table, on a
//! real server. Expected temporal values are computed by PostgreSQL itself.

use crate::common;

use common::*;
use tidemark::domain::event::Op;
use tidemark::domain::value::Value;

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN price AS numeric(10,2);
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
  n numeric(10,2), nu numeric, t text, vc varchar(10), c char(3), nm name, ci text,
  by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, ai int[], at text[], aai int[][], e mood, ea mood[],
  dom posint, dp price, ip inet, pt point, tsr tstzrange
);";

const ROW1: &str = "INSERT INTO all_types VALUES (
  1, true, -32768, 2147483647, 9223372036854775807, 1.5, 0.1,
  12.34, 123456789012345678901234567890.123456789, 'héllo ☃', 'short', 'ab', 'nm', '',
  '\\x00ff10', '2024-02-29', '13:14:15.5', '13:14:15+02', '2024-01-02 03:04:05.678',
  '2024-01-02 03:04:05.123456+02', '1 year 2 mons 3 days 04:05:06.5',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null, \"a\": 1}',
  '{1,NULL,3}', '{\"a b\",NULL,\"q\\\"uote\",\"\"}', '{{1,2},{3,4}}', 'happy', '{sad,happy}',
  5, 3.5, '192.168.0.1/24', '(1,2)', '[2024-01-01,2024-02-01)')";

const ROW2: &str = "INSERT INTO all_types (id, f4, f8, nu, d, ts, tstz) VALUES
  (2, 'NaN', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity'),
  (3, '-0', 'Infinity', '-0.000001', '0044-03-15 BC', '0001-01-01 00:00:00 BC', '1969-12-31 23:59:59.999999+00')";

async fn oracle_i64(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, i64>(0)
}

#[tokio::test]
async fn every_type_round_trips_through_the_stream() {
    let (db, client) = database("types").await;
    exec(&client, SCHEMA).await;
    // Truncates delivered (Debezium's skipped.operations default skips them).
    let events_section = "[events]\nskipped_operations = [\"none\"]";
    let mut reader = Running::start(config(&db, "types", events_section), &client).await;
    exec(&client, ROW1).await;
    exec(&client, ROW2).await;
    let events = reader.wait_for_events(3).await;
    assert_eq!(ops(&events), vec![Op::Create; 3]);

    let row1 = &events[0];
    let expect = |name: &str, value: Value| assert_eq!(column(row1, name), &value, "column {name}");
    expect("id", Value::Int32(1));
    expect("b", Value::Bool(true));
    expect("i2", Value::Int16(i16::MIN));
    expect("i4", Value::Int32(i32::MAX));
    expect("i8", Value::Int64(i64::MAX));
    expect("f4", Value::Float32(1.5));
    expect("f8", Value::Float64(0.1));
    expect("n", Value::Numeric("12.34".into()));
    expect(
        "nu",
        Value::Numeric("123456789012345678901234567890.123456789".into()),
    );
    expect("t", Value::Text("héllo ☃".into()));
    expect("vc", Value::Text("short".into()));
    expect("c", Value::Text("ab ".into()));
    expect("nm", Value::Text("nm".into()));
    expect("ci", Value::Text(String::new()));
    expect("by", Value::Bytes(vec![0, 255, 16]));
    let date = oracle_i64(
        &client,
        "SELECT ('2024-02-29'::date - '1970-01-01'::date)::int8",
    )
    .await;
    expect("d", Value::Date(date as i32));
    expect(
        "tm",
        Value::Time(
            oracle_i64(
                &client,
                "SELECT (extract(epoch FROM '13:14:15.5'::time) * 1000000)::int8",
            )
            .await,
        ),
    );
    expect("ttz", Value::Text("13:14:15+02".into()));
    expect(
        "ts",
        Value::Timestamp(
            oracle_i64(
                &client,
                "SELECT (extract(epoch FROM '2024-01-02 03:04:05.678'::timestamp) * 1000000)::int8",
            )
            .await,
        ),
    );
    expect("tstz", Value::TimestampTz(oracle_i64(&client, "SELECT (extract(epoch FROM '2024-01-02 03:04:05.123456+02'::timestamptz) * 1000000)::int8").await));
    expect("iv", Value::Text("P1Y2M3DT4H5M6.5S".into()));
    expect(
        "u",
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
    );
    expect("j", Value::Json("{\"a\": [1, 2]}".into()));
    expect("jb", Value::Json("{\"a\": 1, \"b\": null}".into()));
    expect(
        "ai",
        Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(3)]),
    );
    expect(
        "at",
        Value::Array(vec![
            Value::Text("a b".into()),
            Value::Null,
            Value::Text("q\"uote".into()),
            Value::Text(String::new()),
        ]),
    );
    expect(
        "aai",
        Value::Array(vec![
            Value::Array(vec![Value::Int32(1), Value::Int32(2)]),
            Value::Array(vec![Value::Int32(3), Value::Int32(4)]),
        ]),
    );
    expect("e", Value::Text("happy".into()));
    expect(
        "ea",
        Value::Array(vec![Value::Text("sad".into()), Value::Text("happy".into())]),
    );
    expect("dom", Value::Int32(5));
    expect("dp", Value::Numeric("3.50".into()));
    expect("ip", Value::Text("192.168.0.1/24".into()));
    expect("pt", Value::Text("(1,2)".into()));
    expect(
        "tsr",
        Value::Text("[\"2024-01-01 00:00:00+00\",\"2024-02-01 00:00:00+00\")".into()),
    );
    let table = row1
        .table
        .as_ref()
        .map(|t| t.as_ref())
        .unwrap_or_else(|| panic!("no table"));
    let numeric = &table.columns[7].column_type.kind;
    assert_eq!(
        format!("{numeric:?}"),
        "Numeric { precision: Some(10), scale: Some(2) }"
    );

    let row2 = &events[1];
    assert!(matches!(column(row2, "f4"), Value::Float32(v) if v.is_nan()));
    assert_eq!(column(row2, "f8"), &Value::Float64(f64::NEG_INFINITY));
    assert_eq!(column(row2, "nu"), &Value::Numeric("NaN".into()));
    assert_eq!(column(row2, "d"), &Value::Date(i32::MAX));
    assert_eq!(column(row2, "ts"), &Value::Timestamp(i64::MIN));
    assert_eq!(column(row2, "tstz"), &Value::TimestampTz(i64::MAX));
    assert_eq!(column(row2, "b"), &Value::Null);
    assert_eq!(column(row2, "ai"), &Value::Null);

    let row3 = &events[2];
    assert_eq!(column(row3, "f4"), &Value::Float32(-0.0));
    assert_eq!(column(row3, "nu"), &Value::Numeric("-0.000001".into()));
    let bc_date = oracle_i64(
        &client,
        "SELECT ('0044-03-15 BC'::date - '1970-01-01'::date)::int8",
    )
    .await;
    assert_eq!(column(row3, "d"), &Value::Date(bc_date as i32));
    let bc_ts = oracle_i64(
        &client,
        "SELECT (extract(epoch FROM '0001-01-01 00:00:00 BC'::timestamp) * 1000000)::int8",
    )
    .await;
    assert_eq!(column(row3, "ts"), &Value::Timestamp(bc_ts));
    assert_eq!(column(row3, "tstz"), &Value::TimestampTz(-1));
    // Same transaction: one xid, sequence numbers 0 and 1.
    assert_eq!(row2.source.xid, row3.source.xid);
    assert_eq!((row2.source.seq, row3.source.seq), (0, 1));

    exec(
        &client,
        "UPDATE all_types SET t = 'changed', ai = '{}' WHERE id = 1",
    )
    .await;
    exec(&client, "DELETE FROM all_types WHERE id = 2").await;
    exec(&client, "TRUNCATE all_types").await;
    let events = reader.wait_for_events(6).await;
    let update = &events[3];
    assert_eq!(update.op, Op::Update);
    assert_eq!(
        update.before, None,
        "REPLICA IDENTITY DEFAULT sends no old row when the key is unchanged"
    );
    assert_eq!(column(update, "t"), &Value::Text("changed".into()));
    assert_eq!(column(update, "ai"), &Value::Array(vec![]));
    assert_eq!(
        column(update, "jb"),
        &Value::Json("{\"a\": 1, \"b\": null}".into())
    );
    let delete = &events[4];
    assert_eq!(delete.op, Op::Delete);
    assert_eq!(
        delete.key().unwrap_or_default(),
        vec![("id", &Value::Int32(2))]
    );
    assert_eq!(
        column(delete, "f8"),
        &Value::Null,
        "only the key is in a DEFAULT identity's old row"
    );
    let truncate = &events[5];
    assert_eq!(truncate.op, Op::Truncate);
    assert!(truncate.key().is_none());
    assert!(
        events
            .windows(2)
            .all(|w| w[0].source.commit_lsn <= w[1].source.commit_lsn)
    );
    reader.stop().await;
}

/// Bad input: a column type the mapping does not know (a composite type, an array of it, a
/// geometric type) is carried as its text form, and the reader says so once per column,
/// naming the column, the type and what to do for a typed value.
#[tokio::test]
async fn a_type_without_a_mapping_is_carried_as_text_with_a_warning() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The test runtime runs the reader on this thread, so a thread-local subscriber sees it.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (db, client) = database("untyped").await;
    exec(
        &client,
        "CREATE TYPE pair AS (a int, b text);
         CREATE TABLE untyped (id int PRIMARY KEY, p pair, ps pair[], pt point);",
    )
    .await;
    let mut reader = Running::start(config(&db, "untyped", ""), &client).await;
    exec(
        &client,
        "INSERT INTO untyped VALUES (1, ROW(1, 'x y'), ARRAY[ROW(2, NULL)::pair, NULL], '(1.5,-2)');
         UPDATE untyped SET pt = '(0,0)' WHERE id = 1;",
    )
    .await;
    let events = reader.wait_for_events(2).await;
    assert_eq!(column(&events[0], "p"), &Value::Text("(1,\"x y\")".into()));
    assert_eq!(
        column(&events[0], "ps"),
        &Value::Array(vec![Value::Text("(2,)".into()), Value::Null])
    );
    assert_eq!(column(&events[0], "pt"), &Value::Text("(1.5,-2)".into()));
    assert_eq!(column(&events[1], "pt"), &Value::Text("(0,0)".into()));
    let text = logs.text();
    for (name, pg_type) in [("p", "pair"), ("ps", "_pair"), ("pt", "point")] {
        let expected = format!(
            "column public.untyped.{name} has type {pg_type}, which tidemark has no mapping for"
        );
        assert_eq!(
            text.matches(&expected).count(),
            1,
            "one warning for {name}; the logs:\n{text}"
        );
    }
    assert!(
        text.contains("carried as PostgreSQL's text form") && text.contains("GENERATED ALWAYS AS"),
        "the warning names what happens and the remedy:\n{text}"
    );
}

/// Debezium skips truncates by default (`skipped.operations = t`), and so does tidemark:
/// the truncate's transaction is read and confirmed, nothing is delivered for it, and the
/// changes after it arrive in order.
#[tokio::test]
async fn truncates_are_skipped_by_default_as_debezium_does() {
    let (db, client) = database("skip_truncate").await;
    exec(&client, "CREATE TABLE st (id int PRIMARY KEY)").await;
    let mut reader = Running::start(config(&db, "skiptrunc", ""), &client).await;
    exec(&client, "INSERT INTO st VALUES (1)").await;
    exec(&client, "TRUNCATE st").await;
    exec(
        &client,
        "INSERT INTO st VALUES (2); DELETE FROM st WHERE id = 2",
    )
    .await;
    let events = reader.wait_for_events(3).await;
    assert_eq!(ops(&events), vec![Op::Create, Op::Create, Op::Delete]);
    assert_eq!(column(&events[1], "id"), &Value::Int32(2));
}
