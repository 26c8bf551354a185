//! The `tidemark` binary as a user meets it: helpful errors, setup, status, teardown.

use crate::common;

use std::process::{Command, Output};

use common::*;

fn tidemark(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("running tidemark: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write_config(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

#[test]
fn bad_configs_fail_with_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(
        dir.path(),
        "name = \"x\"\n[source]\nurl = \"postgres://u:hunter2@h/db?sslmode=sometimes\"\n",
    );
    let out = tidemark(&["run", "--config", &config], &[]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("config field source.url") && message.contains("sslmode=sometimes"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "password printed: {message}");

    let config = write_config(
        dir.path(),
        "name = \"x\"\n[sourse]\nurl = \"postgres://u@h/db\"\n",
    );
    let message = text(&tidemark(&["setup", "--config", &config], &[]));
    assert!(message.contains("unknown field `sourse`"), "{message}");

    let message = text(&tidemark(
        &["status", "--config", "/no/such/file.toml"],
        &[],
    ));
    assert!(
        message.contains("cannot read config file /no/such/file.toml"),
        "{message}"
    );

    let config = write_config(
        dir.path(),
        "name = \"x\"\n[source]\nurl = \"postgres://u@h/db\"\n",
    );
    let message = text(&tidemark(
        &["run", "--config", &config],
        &[("TIDEMARK_SOURCE_STATUS_INTERVAL_MS", "soon")],
    ));
    assert!(
        message.contains(
            "source.status_interval_ms (set by environment variable \
             TIDEMARK_SOURCE_STATUS_INTERVAL_MS): invalid type"
        ),
        "{message}"
    );
}

#[test]
fn print_sql_needs_no_database() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(
        dir.path(),
        "name = \"shop\"\n[source]\nurl = \"postgres://cdc@db.invalid/shop\"\ntables = [\"sales.orders\"]\nsnapshot = \"never\"\n",
    );
    let out = tidemark(&["setup", "--config", &config, "--print-sql"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let sql = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "ALTER ROLE \"cdc\" WITH REPLICATION;",
        "GRANT SELECT ON \"sales\".\"orders\" TO \"cdc\";",
        "CREATE PUBLICATION \"tidemark_shop\" FOR TABLE \"sales\".\"orders\" WITH (publish_via_partition_root = true);",
        "SELECT pg_create_logical_replication_slot('tidemark_shop', 'pgoutput');",
    ] {
        assert!(sql.contains(expected), "{expected} missing from:\n{sql}");
    }
}

#[tokio::test]
async fn setup_status_and_teardown_through_the_binary() {
    let (db, client) = database("cli").await;
    exec(&client, "CREATE TABLE items (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(
        dir.path(),
        &format!(
            "name = \"cli\"\n[source]\nurl = \"{}\"\ntables = [\"public.items\"]\nsnapshot = \"never\"\n",
            db.url()
        ),
    );
    let setup = tidemark(&["setup", "--config", &config], &[]);
    assert!(setup.status.success(), "{}", text(&setup));
    assert!(
        text(&setup).contains("tables:      public.items"),
        "{}",
        text(&setup)
    );
    exec(&client, "INSERT INTO items VALUES (1)").await;
    let status = tidemark(&["status", "--config", &config, "--json"], &[]);
    assert!(status.status.success(), "{}", text(&status));
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    assert_eq!(json["slot"]["name"], "tidemark_cli");
    assert_eq!(json["slot"]["active"], false);
    assert!(
        json["slot"]["lag_bytes"].as_i64().unwrap_or(0) > 0,
        "unconsumed insert shows as lag: {json}"
    );
    assert_eq!(
        json["publication"]["tables"],
        serde_json::json!(["public.items"])
    );
    let human = text(&tidemark(&["status", "--config", &config], &[]));
    assert!(
        human.contains("slot          tidemark_cli inactive"),
        "{human}"
    );
    let teardown = tidemark(&["teardown", "--config", &config], &[]);
    assert!(teardown.status.success(), "{}", text(&teardown));
    let after = text(&tidemark(&["status", "--config", &config], &[]));
    assert!(
        after.contains("slot          missing (`tidemark run` creates it)"),
        "{after}"
    );
}

#[tokio::test]
async fn the_null_outputs_encode_every_snapshot_row_and_throw_it_away() {
    let (db, client) = database("cli_null").await;
    // Several of the snapshot's batches, so the parallel encoding is what runs.
    exec(
        &client,
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz);
         INSERT INTO items SELECT g, 'item ' || g, g * 0.5, now() FROM generate_series(1, 7000) g",
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (output, slot) in [("null:avro", "null_avro"), ("null", "null_json")] {
        let config = write_config(
            dir.path(),
            &format!(
                "name = \"cli_null\"\n[source]\nurl = \"{}\"\ntables = [\"public.items\"]\nslot = \"{slot}\"\npublication = \"{slot}\"\nsnapshot = \"initial_only\"\n",
                db.url()
            ),
        );
        let run = tidemark(&["run", "--config", &config, "--output", output], &[]);
        let log = text(&run);
        assert!(run.status.success(), "{output}: {log}");
        assert!(log.contains("records=7000"), "{output}: {log}");
        let format = if output == "null:avro" {
            "Avro"
        } else {
            "Json"
        };
        assert!(log.contains(&format!("format={format}")), "{output}: {log}");
    }
    let config = dir.path().join("c.toml").display().to_string();
    let bad = tidemark(&["run", "--config", &config, "--output", "nul"], &[]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("null:avro"), "{}", text(&bad));
}
