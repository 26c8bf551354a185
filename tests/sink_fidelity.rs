//! Value fidelity, source to warehouse, with PostgreSQL as the oracle: random values of every
//! type in the design brief's table (numeric exactness, NaN and ±Infinity, timestamps with
//! time zones and ±infinity, arrays with nulls, unicode, empty strings against nulls, bytea)
//! are written on the source, half before tidemark starts (snapshotted) and half after
//! (streamed, then updated and deleted), go through Kafka (Apache Kafka, Avro, the embedded
//! registry), and must read back equal from a DuckDB warehouse and from a PostgreSQL one.
//! It runs the `native` preset, tidemark's lossless forms: the `debezium` preset writes
//! Debezium's, which lose what Debezium's lose (a `timetz`'s offset, an unconstrained
//! `numeric`'s `NaN`; docs/compatibility.md).
//!
//! Each column is compared through a canonical text form that is the same for equal values
//! on both sides (for example epoch microseconds for finite timestamps, hex for bytes, JSON
//! for arrays, parsed floats). A mismatch names the row, the column and both forms.

use crate::common;

use std::time::Duration;

use common::sink::{avro_output, spawn_sink, stop_sink};
use common::{database, exec, spawn_reader};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tidemark::config::Config;
use tidemark::testing::{KafkaBroker, TestDatabase};

/// How a column's canonical forms are compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    Text,
    /// Equal as `f64`s (PostgreSQL and DuckDB print the same double differently).
    Float,
    /// Equal as `f32`s: PostgreSQL prints a float4 with the fewest digits that read back
    /// as the same `f32` (`2.8351828e+06`), DuckDB its exact value (`2835182.75`); read as
    /// `f64` they differ though the stored value is the same.
    Float4,
    Json,
}

/// One column: name, source type, the canonical form on PostgreSQL (source and warehouse)
/// and on DuckDB (`{c}` is the quoted column), and a generator of SQL literals.
struct Column {
    name: &'static str,
    pg_type: &'static str,
    pg: &'static str,
    duck: &'static str,
    compare: Compare,
    values: BoxedStrategy<String>,
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Text without NUL (PostgreSQL text cannot hold it): any unicode, control characters,
/// quotes, backslashes, and the empty string.
fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just(String::new()),
        1 => Just("NULL".to_string()),
        1 => Just("a,\"b\"\\{c}\t\n\r'".to_string()),
        6 => prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
            .prop_map(|chars| chars.into_iter().collect()),
    ]
    .boxed()
}

/// Finite floats of the type's own width (`float4` from `f32`, so every value fits), and
/// NaN and ±Infinity.
fn float(cast: &'static str) -> BoxedStrategy<String> {
    let finite = if cast == "float4" {
        any::<f32>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(move |v| format!("'{v:?}'::{cast}"))
            .boxed()
    } else {
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(move |v| format!("'{v:?}'::{cast}"))
            .boxed()
    };
    prop_oneof![
        6 => finite,
        1 => Just(format!("'NaN'::{cast}")),
        1 => Just(format!("'Infinity'::{cast}")),
        1 => Just(format!("'-Infinity'::{cast}")),
    ]
    .boxed()
}

fn micros_literal(base: &'static str, range: std::ops::Range<i64>) -> BoxedStrategy<String> {
    prop_oneof![
        8 => range.prop_map(move |us| format!("({base} + interval '{us} microseconds')")),
        1 => Just(format!("'infinity'::{}", base.split(' ').next().unwrap_or("timestamp"))),
        1 => Just(format!("'-infinity'::{}", base.split(' ').next().unwrap_or("timestamp"))),
    ]
    .boxed()
}

/// Arrays as a JSON list of each element's text in hex (null for a null element), built
/// the same way on both sides (DuckDB's `to_json` needs its json extension, which a
/// bundled build without network cannot load).
const ARRAY_PG: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE coalesce((SELECT json_agg(upper(encode(convert_to(e::text, 'UTF8'), 'hex')) ORDER BY i) FROM unnest({c}) WITH ORDINALITY AS u(e, i)), '[]')::text END";
const ARRAY_DUCK: &str = "CASE WHEN {c} IS NULL THEN NULL WHEN len({c}) = 0 THEN '[]' ELSE '[' || array_to_string(list_transform({c}, e -> coalesce('\"' || hex(CAST(e AS VARCHAR)) || '\"', 'null')), ',') || ']' END";

/// 0001-01-01 and 9999-12-31 23:59:59.999999 in microseconds since 1970.
const FIRST_US: i64 = -62_135_596_800_000_000;
const LAST_US: i64 = 253_402_300_799_999_999;

fn columns() -> Vec<Column> {
    let column = |name, pg_type, pg, duck, compare, values| Column {
        name,
        pg_type,
        pg,
        duck,
        compare,
        values,
    };
    let text_pg = "{c}::text";
    let text_duck = "CAST({c} AS VARCHAR)";
    let epoch_pg = "CASE WHEN isfinite({c}) THEN (extract(epoch FROM {c}) * 1000000)::numeric(30,0)::text ELSE {c}::text END";
    let epoch_duck =
        "CASE WHEN isfinite({c}) THEN CAST(epoch_us({c}) AS VARCHAR) ELSE CAST({c} AS VARCHAR) END";
    vec![
        column("b", "bool", text_pg, text_duck, Compare::Text, any::<bool>().prop_map(|v| v.to_string()).boxed()),
        column("i2", "int2", text_pg, text_duck, Compare::Text, any::<i16>().prop_map(|v| format!("{v}::int2")).boxed()),
        column("i4", "int4", text_pg, text_duck, Compare::Text, any::<i32>().prop_map(|v| format!("{v}::int4")).boxed()),
        column("i8", "int8", text_pg, text_duck, Compare::Text, any::<i64>().prop_map(|v| format!("{v}::int8")).boxed()),
        column("f4", "float4", text_pg, text_duck, Compare::Float4, float("float4")),
        column("f8", "float8", text_pg, text_duck, Compare::Float, float("float8")),
        column(
            "dec", "numeric(20,6)", text_pg, text_duck, Compare::Text,
            (-99_999_999_999_999_999_999i128..99_999_999_999_999_999_999i128)
                .prop_map(|v| {
                    let sign = if v < 0 { "-" } else { "" };
                    let v = v.unsigned_abs();
                    format!("'{sign}{}.{:06}'::numeric(20,6)", v / 1_000_000, v % 1_000_000)
                })
                .boxed(),
        ),
        column(
            "num", "numeric", text_pg, text_duck, Compare::Text,
            prop_oneof![
                6 => ("-?[0-9]{1,40}", "[0-9]{0,30}").prop_map(|(int, frac)| {
                    if frac.is_empty() { format!("'{int}'::numeric") } else { format!("'{int}.{frac}'::numeric") }
                }),
                1 => Just("'NaN'::numeric".to_string()),
                1 => Just("'Infinity'::numeric".to_string()),
                1 => Just("'-Infinity'::numeric".to_string()),
            ]
            .boxed(),
        ),
        column("t", "text", text_pg, text_duck, Compare::Text, text(40).prop_map(|s| quote(&s)).boxed()),
        column("vc", "varchar(20)", text_pg, text_duck, Compare::Text, text(20).prop_map(|s| quote(&s)).boxed()),
        column("ch", "char(5)", "rpad({c}::text, 5)", "rpad({c}, 5, ' ')", Compare::Text, "[a-z ]{0,5}".prop_map(|s| quote(&s)).boxed()),
        column(
            "bin", "bytea", "encode({c}, 'hex')", "lower(hex({c}))", Compare::Text,
            prop::collection::vec(any::<u8>(), 0..48)
                .prop_map(|bytes| {
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    format!("'\\x{hex}'::bytea")
                })
                .boxed(),
        ),
        column(
            "d", "date", text_pg, text_duck, Compare::Text,
            prop_oneof![
                8 => (-719_162i32..2_932_896).prop_map(|days| format!("(date '1970-01-01' + {days})")),
                1 => Just("'infinity'::date".to_string()),
                1 => Just("'-infinity'::date".to_string()),
            ]
            .boxed(),
        ),
        column(
            "tm", "time", "(extract(epoch FROM {c}) * 1000000)::numeric(20,0)::text", "CAST(epoch_us({c}) AS VARCHAR)", Compare::Text,
            (0i64..86_400_000_000).prop_map(|us| format!("(time '00:00' + interval '{us} microseconds')")).boxed(),
        ),
        column(
            "ttz", "timetz", text_pg, text_duck, Compare::Text,
            (0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000, -14i32..15)
                .prop_map(|(h, m, s, us, off)| format!("'{h:02}:{m:02}:{s:02}.{us:06}{off:+03}'::timetz"))
                .boxed(),
        ),
        column("ts", "timestamp", epoch_pg, epoch_duck, Compare::Text, micros_literal("timestamp '1970-01-01'", FIRST_US..LAST_US)),
        column("tstz", "timestamptz", epoch_pg, epoch_duck, Compare::Text, micros_literal("timestamptz '1970-01-01 00:00:00+00'", FIRST_US..LAST_US)),
        column(
            "iv", "interval", text_pg, text_duck, Compare::Text,
            (-1200i32..1200, -400i32..400, -100_000_000_000i64..100_000_000_000)
                .prop_map(|(months, days, us)| format!("'{months} months {days} days {us} microseconds'::interval"))
                .boxed(),
        ),
        column(
            "u", "uuid", text_pg, text_duck, Compare::Text,
            any::<u128>().prop_map(|v| format!("'{}'::uuid", uuid::Uuid::from_u128(v))).boxed(),
        ),
        column(
            // A PostgreSQL warehouse holds json as jsonb (key order and spacing normalised):
            // equal as documents.
            "j", "json", text_pg, text_duck, Compare::Json,
            (text(12), any::<i32>(), any::<bool>())
                .prop_map(|(s, n, b)| quote(&serde_json::json!({"s": s, "n": n, "list": [b, null, s]}).to_string()) + "::json")
                .boxed(),
        ),
        column(
            "jb", "jsonb", text_pg, text_duck, Compare::Json,
            (text(12), any::<i64>())
                .prop_map(|(s, n)| quote(&serde_json::json!({"k": s, "n": n, "nested": {"empty": ""}}).to_string()) + "::jsonb")
                .boxed(),
        ),
        column(
            // `inet::text` always shows the netmask; the output function (what pgoutput sends)
            // leaves out /32 for a host.
            "ip", "inet", "CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END", text_duck, Compare::Text,
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, m)| format!("'{}.{}.{}.{}/{m}'::inet", a[0], a[1], a[2], a[3])).boxed(),
        ),
        column(
            // A bit string of fixed length greater than one: the PostgreSQL warehouse must
            // not create the column as `bit` (that is `bit(1)`).
            "bits", "bit(5)", text_pg, text_duck, Compare::Text,
            "[01]{5}".prop_map(|s| format!("B'{s}'")).boxed(),
        ),
        column(
            "vbits", "varbit(12)", text_pg, text_duck, Compare::Text,
            "[01]{0,12}".prop_map(|s| format!("B'{s}'::varbit")).boxed(),
        ),
        column(
            "mac", "macaddr", text_pg, text_duck, Compare::Text,
            any::<[u8; 6]>()
                .prop_map(|a| format!("'{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}'::macaddr", a[0], a[1], a[2], a[3], a[4], a[5]))
                .boxed(),
        ),
        column(
            "cash", "money", text_pg, text_duck, Compare::Text,
            (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|cents| format!("({cents}::numeric / 100)::money")).boxed(),
        ),
        column(
            "rng", "int4range", text_pg, text_duck, Compare::Text,
            (-1000i32..1000, 0i32..1000).prop_map(|(lo, len)| format!("int4range({lo}, {})", lo + len)).boxed(),
        ),
        column(
            "doc", "xml", text_pg, text_duck, Compare::Text,
            text(12).prop_map(|s| format!("xmlelement(name a, {})", quote(&s))).boxed(),
        ),
        column(
            "mood", "mood", text_pg, text_duck, Compare::Text,
            prop_oneof![Just("'sad'"), Just("'ok'"), Just("'happy'")].prop_map(|s| format!("{s}::mood")).boxed(),
        ),
        column("pos", "posint", text_pg, text_duck, Compare::Text, (1i32..i32::MAX).prop_map(|v| format!("{v}::posint")).boxed()),
        column(
            "ia", "int4[]", ARRAY_PG, ARRAY_DUCK, Compare::Json,
            prop::collection::vec(prop::option::weighted(0.8, any::<i32>()), 0..6)
                .prop_map(|items| {
                    let items: Vec<String> = items.iter().map(|i| i.map_or("NULL".into(), |v| v.to_string())).collect();
                    format!("ARRAY[{}]::int4[]", items.join(","))
                })
                .boxed(),
        ),
        column(
            "ta", "text[]", ARRAY_PG, ARRAY_DUCK, Compare::Json,
            prop::collection::vec(prop::option::weighted(0.8, text(8)), 0..5)
                .prop_map(|items| {
                    let items: Vec<String> = items.iter().map(|i| i.as_deref().map_or("NULL".into(), quote)).collect();
                    format!("ARRAY[{}]::text[]", items.join(","))
                })
                .boxed(),
        ),
    ]
}

/// A row of literals, each column null one time in ten.
fn random_row(columns: &[Column], runner: &mut TestRunner) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            let null = any::<u8>()
                .new_tree(runner)
                .map(|t| t.current() < 26)
                .unwrap_or(false);
            if null {
                return "NULL".to_string();
            }
            c.values
                .new_tree(runner)
                .map(|t| t.current())
                .unwrap_or_else(|e| panic!("generating {}: {e}", c.name))
        })
        .collect()
}

fn insert(columns: &[Column], id: i32, row: &[String]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    format!(
        "INSERT INTO fidelity (id, {}) VALUES ({id}, {})",
        names.join(", "),
        row.join(", ")
    )
}

fn canonical_select(columns: &[Column], duck: bool) -> String {
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| {
            let template = if duck { c.duck } else { c.pg };
            template.replace("{c}", &format!("\"{}\"", c.name))
        })
        .collect();
    format!(
        // DuckDB names `CAST(id AS VARCHAR)` "id", so order by the number explicitly.
        "SELECT CAST(id AS VARCHAR), {} FROM public.fidelity ORDER BY CAST(id AS BIGINT)",
        exprs.join(", ")
    )
}

type Rows = Vec<Vec<Option<String>>>;

fn duck_rows(path: &str, sql: &str) -> Result<Rows, String> {
    let connection = duckdb::Connection::open(path).map_err(|e| e.to_string())?;
    let mut statement = connection.prepare(sql).map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([], |row| {
            (0..row.as_ref().column_count())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn float_of(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn same(compare: Compare, expected: Option<&str>, actual: Option<&str>) -> bool {
    match (expected, actual) {
        (Some(e), Some(a)) => match compare {
            Compare::Text => e == a,
            Compare::Float => match (float_of(e), float_of(a)) {
                (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
                _ => false,
            },
            Compare::Float4 => match (float_of(e), float_of(a)) {
                (Some(x), Some(y)) => {
                    let (x, y) = (x as f32, y as f32);
                    x == y || (x.is_nan() && y.is_nan())
                }
                _ => false,
            },
            Compare::Json => {
                serde_json::from_str::<serde_json::Value>(e).ok()
                    == serde_json::from_str::<serde_json::Value>(a).ok()
            }
        },
        (e, a) => e == a,
    }
}

/// The first difference between the oracle's rows and a warehouse's, described.
fn difference(
    columns: &[Column],
    literals: &[(i32, Vec<String>)],
    expected: &Rows,
    actual: &Rows,
) -> Option<String> {
    if expected.len() != actual.len() {
        return Some(format!(
            "{} rows in the warehouse, {} at the source",
            actual.len(),
            expected.len()
        ));
    }
    for (want, got) in expected.iter().zip(actual) {
        if want.first() != got.first() {
            return Some(format!(
                "row ids differ: {:?} vs {:?}",
                want.first(),
                got.first()
            ));
        }
        for (index, column) in columns.iter().enumerate() {
            let (e, a) = (
                want.get(index + 1).cloned().flatten(),
                got.get(index + 1).cloned().flatten(),
            );
            if !same(column.compare, e.as_deref(), a.as_deref()) {
                let id = want.first().cloned().flatten().unwrap_or_default();
                let literal = literals
                    .iter()
                    .rev()
                    .find(|(i, _)| i.to_string() == id)
                    .and_then(|(_, row)| row.get(index).cloned());
                return Some(format!(
                    "row {id}, column {} ({}): source {e:?}, warehouse {a:?} (written as {literal:?})",
                    column.name, column.pg_type
                ));
            }
        }
    }
    None
}

fn pipeline_config(db: &TestDatabase, sink: &str, group: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"fidelity\"\n[events]\npreset = \"native\"\n[source]\nurl = \"{}\"\nsnapshot = \"initial\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\npartitions = 2\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_schemas_fidelity\"\n\
         [sink]\n{sink}\ngroup = \"{group}\"\nbatch_rows = 100\nbatch_ms = 200\n",
        db.url(),
        broker.bootstrap
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_values_of_every_type_read_back_equal_from_duckdb_and_postgres() {
    let (db, client) = database("sink_fidelity").await;
    let (warehouse_db, warehouse) = database("sink_fidelity_wh").await;
    let columns = columns();
    let definitions: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.pg_type))
        .collect();
    exec(
        &client,
        &format!(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN posint AS int CHECK (VALUE > 0);
             CREATE TABLE fidelity (id int PRIMARY KEY, {});",
            definitions.join(", ")
        ),
    )
    .await;
    let mut runner = TestRunner::default();
    let mut literals: Vec<(i32, Vec<String>)> = Vec::new();
    // Half before tidemark starts: these come through the snapshot.
    for id in 0..120 {
        let row = random_row(&columns, &mut runner);
        exec(&client, &insert(&columns, id, &row)).await;
        literals.push((id, row));
    }

    let duck_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let duck_path = duck_dir
        .path()
        .join("fidelity.duckdb")
        .display()
        .to_string();
    let duck_config = pipeline_config(
        &db,
        &format!("kind = \"duckdb\"\nurl = \"{duck_path}\""),
        "fidelity-duck",
    );
    let pg_config = pipeline_config(
        &db,
        &format!("kind = \"postgres\"\nurl = \"{}\"", warehouse_db.url()),
        "fidelity-pg",
    );
    let (output, _registry, registry_url) = avro_output(&duck_config, &db.name).await;
    let (stop_source, source) = spawn_reader(duck_config.clone(), output, &client).await;
    let pg_sink = spawn_sink(pg_config, &registry_url);

    // The other half streamed, then updates (new random values, nulls among them) and
    // deletes.
    for id in 120..240 {
        let row = random_row(&columns, &mut runner);
        exec(&client, &insert(&columns, id, &row)).await;
        literals.push((id, row));
    }
    for id in (0..240).step_by(6) {
        let row = random_row(&columns, &mut runner);
        let sets: Vec<String> = columns
            .iter()
            .zip(&row)
            .map(|(c, v)| format!("{} = {v}", c.name))
            .collect();
        exec(
            &client,
            &format!("UPDATE fidelity SET {} WHERE id = {id}", sets.join(", ")),
        )
        .await;
        literals.push((id, row));
    }
    exec(&client, "DELETE FROM fidelity WHERE id % 17 = 5").await;

    // tidemark reads intervals in ISO 8601 (its sessions set IntervalStyle), which is the
    // text a DuckDB warehouse holds; both PostgreSQL sides print the same way here.
    exec(&client, "SET IntervalStyle = iso_8601").await;
    exec(&warehouse, "SET IntervalStyle = iso_8601").await;
    let expected = common::text_rows(&client, &canonical_select(&columns, false))
        .await
        .unwrap_or_else(|e| panic!("the oracle's query: {e}"));
    assert_eq!(expected.len(), 240 - 14, "the source has the rows written");
    let pg_select = canonical_select(&columns, false);
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        if pg_sink.1.is_finished() {
            let ended = pg_sink.1.await;
            panic!("the PostgreSQL sink ended early: {ended:?}");
        }
        last = match common::text_rows(&warehouse, &pg_select).await {
            Ok(actual) => difference(&columns, &literals, &expected, &actual),
            Err(error) => Some(format!("the warehouse query: {error}")),
        };
        if last.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(last, None, "the PostgreSQL warehouse equals the source");

    // DuckDB: one writer per file, so the sink runs until the topics are applied (the
    // PostgreSQL warehouse above shows they are complete), then stops to be read.
    let duck_select = canonical_select(&columns, true);
    let mut last = Some("not read yet".to_string());
    for _ in 0..20 {
        let duck_sink = spawn_sink(duck_config.clone(), &registry_url);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_sink(duck_sink).await;
        let actual =
            duck_rows(&duck_path, &duck_select).unwrap_or_else(|e| panic!("{duck_select}: {e}"));
        last = difference(&columns, &literals, &expected, &actual);
        if last.is_none() {
            break;
        }
    }
    assert_eq!(last, None, "the DuckDB warehouse equals the source");

    stop_sink(pg_sink).await;
    let _ = stop_source.send(true);
    let _ = source.await;
}
