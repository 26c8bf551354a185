use super::*;
use crate::sink::record::OffsetClaim;

fn shape() -> TableShape {
    TableShape {
        columns: vec![
            SinkColumn {
                name: "id".into(),
                kind: ColumnKind::Uuid,
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
        ],
        key: vec!["id".into()],
        renamed: Vec::new(),
    }
}

fn target() -> Target {
    Target {
        schema: "public".into(),
        name: "orders".into(),
    }
}

#[test]
fn types_follow_each_warehouse() {
    let decimal = ColumnKind::Decimal {
        precision: 12,
        scale: 2,
    };
    assert_eq!(Dialect::DuckDb.type_of(&decimal), "DECIMAL(12,2)");
    assert_eq!(Dialect::Postgres.type_of(&decimal), "NUMERIC(12,2)");
    assert_eq!(Dialect::Snowflake.type_of(&decimal), "NUMBER(12,2)");
    let huge = ColumnKind::Decimal {
        precision: 60,
        scale: 2,
    };
    assert_eq!(
        Dialect::DuckDb.type_of(&huge),
        "VARCHAR",
        "no silent rounding"
    );
    let tags = ColumnKind::Array(Box::new(ColumnKind::Int32));
    assert_eq!(Dialect::DuckDb.type_of(&tags), "INTEGER[]");
    assert_eq!(Dialect::Snowflake.type_of(&tags), "ARRAY");
    assert_eq!(
        Dialect::Postgres.type_of(&ColumnKind::Other("interval".into())),
        "interval"
    );
    assert_eq!(Dialect::DuckDb.stage_type_of(&ColumnKind::Uuid), "VARCHAR");
}

#[test]
fn merge_applies_only_newer_positions_and_keeps_unchanged_toast() {
    let unchanged: BTreeSet<String> = ["doc".to_string()].into();
    let shape = shape();
    let target = target();
    let spec = MergeSpec {
        target: &target,
        stage: "stage_0",
        shape: &shape,
        soft_delete: false,
        unchanged: &unchanged,
    };
    let duck = Dialect::DuckDb.merge(&spec);
    assert!(duck.starts_with("MERGE INTO \"public\".\"orders\" AS t USING stage_0 AS s"));
    assert!(
        duck.contains("ON t.\"id\" = CAST(s.\"id\" AS UUID)"),
        "{duck}"
    );
    assert!(duck.contains("WHEN MATCHED AND s.__op = 'd' AND (t.\"__tidemark_lsn\" IS NULL OR s.__lsn > t.\"__tidemark_lsn\" OR (s.__lsn = t.\"__tidemark_lsn\" AND s.__seq > t.\"__tidemark_seq\")) THEN DELETE"), "{duck}");
    assert!(duck.contains("\"doc\" = CASE WHEN s.__unchanged IS NOT NULL AND POSITION(',doc,' IN s.__unchanged) > 0 THEN t.\"doc\" ELSE s.\"doc\" END"), "{duck}");
    assert!(duck.contains("\"amount\" = s.\"amount\""), "{duck}");
    assert!(
        duck.contains("WHEN NOT MATCHED AND s.__op = 'u' THEN INSERT"),
        "{duck}"
    );
    let pg = Dialect::Postgres.merge(&spec);
    assert!(pg.contains("ON t.\"id\" = s.\"id\""), "{pg}");
    let soft = Dialect::Snowflake.merge(&MergeSpec {
        soft_delete: true,
        ..spec.clone()
    });
    assert!(
        soft.contains("THEN UPDATE SET \"__deleted\" = TRUE"),
        "{soft}"
    );
    assert!(soft.contains("WHEN NOT MATCHED AND s.__op = 'd' THEN INSERT (\"id\", \"__tidemark_lsn\", \"__tidemark_seq\", \"__deleted\", \"__deleted_at\")"), "{soft}");
    assert!(!soft.contains("THEN DELETE"), "{soft}");
}

#[test]
fn literals_and_evolution_statements() {
    assert_eq!(Dialect::Postgres.literal("it's a\\b"), "'it''s a\\b'");
    assert_eq!(Dialect::Snowflake.literal("it's a\\b"), "'it''s a\\\\b'");
    let target = target();
    let create = Dialect::Postgres.step(&target, &Step::Create(shape()), true);
    assert_eq!(create[0], "CREATE SCHEMA IF NOT EXISTS \"public\"");
    assert!(create[1].contains("\"__deleted\" BOOLEAN"), "{create:?}");
    assert!(
        create[2].starts_with("CREATE INDEX IF NOT EXISTS"),
        "{create:?}"
    );
    let widen = Step::Widen(SinkColumn {
        name: "n".into(),
        kind: ColumnKind::Int64,
    });
    assert_eq!(
        Dialect::Postgres.step(&target, &widen, false),
        vec![
            "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"n\" TYPE BIGINT USING \"n\"::BIGINT"
        ]
    );
    assert_eq!(
        Dialect::Snowflake.step(&target, &widen, false),
        vec!["ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"n\" SET DATA TYPE NUMBER(19,0)"]
    );
    let truncate = Dialect::DuckDb.truncate(
        &target,
        Position {
            commit_lsn: 100,
            seq: 3,
        },
        false,
    );
    assert_eq!(
        truncate,
        "DELETE FROM \"public\".\"orders\" WHERE (\"__tidemark_lsn\" IS NULL OR \"__tidemark_lsn\" < 100 OR (\"__tidemark_lsn\" = 100 AND \"__tidemark_seq\" < 3))"
    );
    let claims = [
        OffsetClaim {
            topic: "t".into(),
            partition: 0,
            expected: Some(40),
            next: 42,
        },
        OffsetClaim {
            topic: "t".into(),
            partition: 1,
            expected: None,
            next: 7,
        },
    ];
    let offsets = Dialect::Snowflake
        .store_offsets("main", "g", &claims)
        .join(";\n");
    assert!(
        offsets.contains(
            "FROM VALUES ('g', 't', 0, CAST(40 AS BIGINT), CAST(42 AS BIGINT)), ('g', 't', 1, CAST(NULL AS BIGINT), CAST(7 AS BIGINT)) AS v"
        ),
        "{offsets}"
    );
    assert!(
        offsets.contains("WHEN MATCHED AND o.next_offset = s.expected_offset THEN UPDATE"),
        "{offsets}"
    );
    assert!(
        offsets.contains("WHEN NOT MATCHED AND s.expected_offset IS NULL THEN INSERT"),
        "{offsets}"
    );
    let offsets = Dialect::Postgres.store_offsets("main", "g", &claims);
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    assert!(
        offsets[0].starts_with(
            "UPDATE \"main\".\"__tidemark_offsets\" AS o SET next_offset = s.next_offset"
        ) && offsets[0]
            .contains("(VALUES ('g', 't', 0, CAST(40 AS BIGINT), CAST(42 AS BIGINT))) AS s(")
            && offsets[0].ends_with("AND o.next_offset = s.expected_offset"),
        "{offsets:?}"
    );
    assert!(
        offsets[1].contains("VALUES ('g', 't', 1, 7, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING"),
        "{offsets:?}"
    );
}

#[test]
fn keyless_removals_take_one_equal_row_each_where_the_warehouse_has_row_ids() {
    let mut keyless = shape();
    keyless.key.clear();
    keyless.columns.push(SinkColumn {
        name: "at".into(),
        kind: ColumnKind::Other("point".into()),
    });
    let pg = Dialect::Postgres.remove_equal(&target(), "s0", &keyless, false);
    assert!(
        pg.starts_with("DELETE FROM \"public\".\"orders\" WHERE ctid IN ("),
        "{pg}"
    );
    assert!(
        pg.contains("m.__rn <= m.__n"),
        "one row per equal staged row: {pg}"
    );
    assert!(pg.contains("IS NOT DISTINCT FROM"), "NULLs are equal: {pg}");
    assert!(
        pg.contains("CAST(t.\"at\" AS TEXT)"),
        "a type without equality compares as text: {pg}"
    );
    let duck = Dialect::DuckDb.remove_equal(&target(), "s0", &keyless, true);
    assert!(
        duck.starts_with("UPDATE \"public\".\"orders\" SET \"__deleted\" = TRUE"),
        "{duck}"
    );
    assert!(duck.contains("rowid IN ("), "{duck}");
    let snowflake = Dialect::Snowflake.remove_equal(&target(), "s0", &keyless, false);
    assert!(snowflake.contains("USING (SELECT"), "{snowflake}");
    assert!(
        snowflake.contains("EQUAL_NULL(t.\"doc\", r.__c1)"),
        "{snowflake}"
    );
    let append = Dialect::Postgres.append(&target(), "s0", &keyless);
    assert!(
        append.ends_with("WHERE s.__op = 'u'"),
        "removals are not appended: {append}"
    );
}
