//! Snowflake as the warehouse, against a real Snowflake account. It runs only where tidemark
//! is built with `--features snowflake` and these variables are set, and says so loudly on
//! stderr when it is skipped:
//!
//! - `SNOWFLAKE_URL`: `snowflake://user@account/database/schema?warehouse=W&role=R`
//!   (the schema should be a scratch one: the test creates and drops a table in it);
//! - `SNOWFLAKE_PASSWORD`, or `SNOWFLAKE_PRIVATE_KEY_FILE` (a PKCS#8 PEM key).
//!
//! It applies flushes of inserts, an older redelivery, an update with an unchanged TOAST
//! column, a delete, a schema change and a truncate, and reads the table back.

#[cfg(feature = "snowflake")]
mod snowflake {
    use std::sync::Arc;

    use tidemark::config::Config;
    use tidemark::domain::value::Value;
    use tidemark::sink::batch::PendingRow;
    use tidemark::sink::dialect::Target;
    use tidemark::sink::evolve::Step;
    use tidemark::sink::record::{OffsetClaim, Position, SinkOp, TopicPartition};
    use tidemark::sink::shape::{ColumnKind, SinkColumn, TableShape};
    use tidemark::sink::warehouse::{Flush, TableFlush, Warehouse, WarehouseError};

    fn shape(extra: bool) -> TableShape {
        let mut columns = vec![
            SinkColumn {
                name: "id".into(),
                kind: ColumnKind::Int64,
            },
            SinkColumn {
                name: "doc".into(),
                kind: ColumnKind::Text,
            },
            SinkColumn {
                name: "amount".into(),
                kind: ColumnKind::Decimal {
                    precision: 12,
                    scale: 2,
                },
            },
        ];
        if extra {
            columns.push(SinkColumn {
                name: "at".into(),
                kind: ColumnKind::TimestampTz,
            });
        }
        TableShape {
            columns,
            key: vec!["id".into()],
            renamed: Vec::new(),
        }
    }

    fn row(op: SinkOp, lsn: u64, values: Vec<Value>, unchanged: &[&str]) -> PendingRow {
        PendingRow {
            op,
            position: Position {
                commit_lsn: lsn,
                seq: 0,
            },
            values,
            unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
            partition: Arc::new(TopicPartition {
                topic: "sf.public.t".into(),
                partition: 0,
            }),
        }
    }

    /// A flush moving the offset of the table's own partition (the table's name: every run
    /// has its own) from `expected` to `next`.
    fn flush(
        target: &Target,
        shape: TableShape,
        steps: Vec<Step>,
        rows: Vec<PendingRow>,
        (expected, next): (Option<i64>, i64),
    ) -> Arc<Flush> {
        Arc::new(Flush {
            tables: vec![TableFlush {
                target: target.clone(),
                shape: Arc::new(shape.clone()),
                record_shape: !steps.is_empty(),
                steps,
                stored: shape,
                soft_delete: false,
                truncate: None,
                rows,
            }],
            offsets: vec![OffsetClaim {
                topic: target.name.clone(),
                partition: 0,
                expected,
                next,
            }],
        })
    }

    #[tokio::test]
    async fn flushes_apply_exactly_to_a_real_snowflake_table() {
        let Ok(url) = std::env::var("SNOWFLAKE_URL") else {
            eprintln!(
                "\n*** SKIPPED: the Snowflake integration test needs SNOWFLAKE_URL and SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY_FILE (see tests/sink_snowflake.rs) ***\n"
            );
            return;
        };
        let mut text = format!(
            "name = \"sf\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[sink]\nkind = \"snowflake\"\nurl = \"{url}\"\n"
        );
        if let Ok(key) = std::env::var("SNOWFLAKE_PRIVATE_KEY_FILE") {
            text.push_str(&format!("private_key_file = \"{key}\"\n"));
        }
        let env = std::env::var("SNOWFLAKE_PASSWORD")
            .map(|p| ("TIDEMARK_SINK_PASSWORD".to_string(), p))
            .into_iter();
        let config = Config::from_toml_with_env(&text, "snowflake test", env)
            .unwrap_or_else(|e| panic!("{e}"));
        let sink = config.sink.unwrap_or_else(|| panic!("[sink]"));
        let mut warehouse = Warehouse::open(&sink)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let target = Target {
            schema: warehouse.bookkeeping_schema().to_owned(),
            name: format!("tidemark_test_{}", std::process::id()),
        };
        let first_rows = || {
            vec![
                row(
                    SinkOp::Upsert,
                    10,
                    vec![
                        Value::Int64(1),
                        Value::Text("big ' \\ doc".into()),
                        Value::Numeric("12.50".into()),
                    ],
                    &[],
                ),
                row(
                    SinkOp::Upsert,
                    10,
                    vec![Value::Int64(2), Value::Text("two".into()), Value::Null],
                    &[],
                ),
            ]
        };
        let first = flush(
            &target,
            shape(false),
            vec![Step::Create(shape(false))],
            first_rows(),
            (None, 10),
        );
        warehouse
            .apply(first.clone(), "sf-test")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The same offsets claimed again (an instance that lost the partition): refused.
        match warehouse.apply(first, "sf-test").await {
            Err(WarehouseError::Fenced { .. }) => {}
            other => panic!("a stale claim is refused, got {other:?}"),
        }
        // The same rows redelivered under the next offsets: change nothing.
        warehouse
            .apply(
                flush(
                    &target,
                    shape(false),
                    Vec::new(),
                    first_rows(),
                    (Some(10), 11),
                ),
                "sf-test",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let second = flush(
            &target,
            shape(true),
            vec![Step::Add(SinkColumn {
                name: "at".into(),
                kind: ColumnKind::TimestampTz,
            })],
            vec![
                row(
                    SinkOp::Upsert,
                    20,
                    vec![
                        Value::Int64(1),
                        Value::Null,
                        Value::Numeric("13.00".into()),
                        Value::TimestampTz(1_704_067_200_000_001),
                    ],
                    &["doc"],
                ),
                row(SinkOp::Delete, 20, vec![Value::Int64(2)], &[]),
            ],
            (Some(11), 20),
        );
        warehouse
            .apply(second, "sf-test")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let table = format!("\"{}\".\"{}\"", target.schema, target.name);
        let Warehouse::Snowflake(snowflake) = &warehouse else {
            panic!("kind = snowflake opened another warehouse");
        };
        let rows = snowflake
            .query_text(&format!(
                "SELECT \"id\", \"doc\", \"amount\"::VARCHAR, TO_VARCHAR(\"at\", 'YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM') FROM {table} ORDER BY \"id\""
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dropped = warehouse
            .execute(vec![format!("DROP TABLE IF EXISTS {table}")])
            .await;
        assert_eq!(
            rows,
            vec![vec![
                Some("1".to_string()),
                Some("big ' \\ doc".to_string()),
                Some("13.00".to_string()),
                Some("2024-01-01 00:00:00.000001 +00:00".to_string()),
            ]],
            "one row: the update kept the unchanged doc, the delete and the redelivery applied once"
        );
        dropped.unwrap_or_else(|e| panic!("{e}"));
    }
}

#[cfg(not(feature = "snowflake"))]
#[test]
fn snowflake_integration_needs_the_feature() {
    eprintln!(
        "\n*** SKIPPED: the Snowflake integration test runs only with `--features snowflake` and SNOWFLAKE_URL set (see tests/sink_snowflake.rs) ***\n"
    );
}
