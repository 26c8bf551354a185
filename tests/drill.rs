//! `tidemark drill schema-change` on the local stack (a private PostgreSQL, Apache Kafka, the
//! embedded registry): through the binary into a DuckDB file with captured DDL and
//! `on_incompatible = "relax"` (every step passes, the pipeline restarting between steps),
//! and through the library into a PostgreSQL warehouse with the defaults (the rename is
//! skipped for want of captured DDL, and the new primary key fails: the registry refuses
//! the new key schema under the default `fail` policy, and the step says so and how to
//! fix it). Both leave no scratch table, slot or publication behind.

use crate::common;

use std::process::Command;

use common::*;
use tidemark::config::Config;
use tidemark::testing::{KafkaBroker, TestDatabase};

fn config_text(
    db: &TestDatabase,
    name: &str,
    source_extra: &str,
    registry_extra: &str,
    sink: &str,
) -> String {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\ntables = [\"public.*\"]\n{source_extra}\n\
         [kafka]\nbrokers = \"{}\"\n[registry]\nlisten = \"127.0.0.1:0\"\n{registry_extra}\n[sink]\n{sink}\n",
        db.url(),
        broker.bootstrap
    )
}

/// Nothing of the drill is left in the source.
async fn assert_clean(client: &tokio_postgres::Client, slot: &str) {
    let left = text_rows(
        client,
        &format!(
            "SELECT (SELECT count(*) FROM pg_tables WHERE tablename LIKE 'tidemark_drill_%')::text,
                    (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}_drill')::text,
                    (SELECT count(*) FROM pg_publication WHERE pubname = '{slot}_drill')::text"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        left,
        vec![vec![Some("0".into()), Some("0".into()), Some("0".into())]],
        "scratch tables, drill slots, drill publications left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_passes_every_step_into_duckdb_with_captured_ddl() {
    let (db, client) = database("drill_duck").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let warehouse = dir.path().join("drill.duckdb");
    let config = dir.path().join("drill.toml");
    std::fs::write(
        &config,
        config_text(
            &db,
            "drillduck",
            "ddl_capture = true",
            "on_incompatible = \"relax\"",
            &format!("kind = \"duckdb\"\nurl = \"{}\"", warehouse.display()),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tidemark = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // `setup` installs the DDL capture the rename step needs.
    let setup = tidemark(&["setup"]);
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let drill = tidemark(&["drill", "schema-change"]);
    let printed = String::from_utf8_lossy(&drill.stdout).into_owned();
    assert!(
        drill.status.success(),
        "the drill failed:\n{printed}\n{}",
        String::from_utf8_lossy(&drill.stderr)
    );
    for step in [
        "create table, rows",
        "ADD COLUMN note text",
        "RENAME COLUMN label TO title",
        "ALTER COLUMN qty TYPE bigint",
        "ALTER COLUMN note SET NOT NULL",
        "DROP COLUMN qty",
        "new PRIMARY KEY (code)",
    ] {
        let line = printed
            .lines()
            .find(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no line for {step}:\n{printed}"));
        assert!(line.contains(" pass "), "{line}");
    }
    assert!(printed.contains("PASSED"), "{printed}");
    assert_clean(&client, "tidemark_drillduck").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_defaults_the_rename_is_skipped_and_the_new_key_fails_with_the_remedy() {
    let (db, client) = database("drill_pg").await;
    let (warehouse, warehouse_client) = database("drill_pg_wh").await;
    let config = Config::from_toml_with_env(
        &config_text(
            &db,
            "drillpg",
            "",
            "",
            &format!("kind = \"postgres\"\nurl = \"{}\"", warehouse.url()),
        ),
        "test",
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = tidemark::ops::drill::schema_change(&config, "public", false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.passed(), "{report}");
    let outcomes: Vec<(&str, &str)> = report
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("create table, rows", "pass"),
            ("ADD COLUMN note text", "pass"),
            ("RENAME COLUMN label TO title", "skipped"),
            ("ALTER COLUMN qty TYPE bigint", "pass"),
            ("ALTER COLUMN note SET NOT NULL", "pass"),
            ("DROP COLUMN qty", "pass"),
            ("new PRIMARY KEY (code)", "FAIL"),
        ],
        "{report}"
    );
    assert!(report.steps[2].detail.contains("ddl_capture"), "{report}");
    let key_step = &report.steps[6].detail;
    assert!(
        key_step.contains("incompatible") && key_step.contains("on_incompatible"),
        "the failed step names the cause and the remedy: {key_step}"
    );
    assert!(report.to_string().contains("FAILED"), "{report}");
    assert_clean(&client, "tidemark_drillpg").await;
    let tables = text_rows(
        &warehouse_client,
        "SELECT count(*)::text FROM pg_tables WHERE tablename LIKE 'tidemark_drill_%'",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tables,
        vec![vec![Some("0".into())]],
        "the warehouse copy is dropped"
    );
}
