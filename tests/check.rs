//! `tidemark check` against real parts: a private PostgreSQL (source and warehouse), Apache Kafka,
//! and unreachable addresses. A ready config passes on every part; each misconfiguration
//! is reported on its part with the fix, and nothing else is reported.

use crate::common;

use common::database;
use tidemark::config::Config;
use tidemark::ops::check::{CheckReport, check};
use tidemark::testing::{KafkaBroker, TestDatabase};

/// A config with `[source]` for `source_url`, Kafka at `brokers`, `registry` lines and a
/// PostgreSQL warehouse at `warehouse_url`.
fn config(source_url: &str, brokers: &str, registry: &str, warehouse_url: &str) -> Config {
    let text = format!(
        "name = \"checked\"\n[source]\nurl = \"{source_url}\"\ntables = [\"public.*\"]\n\
         [kafka]\nbrokers = \"{brokers}\"\n[registry]\n{registry}\n\
         [sink]\nkind = \"postgres\"\nurl = \"{warehouse_url}\"\n"
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

fn broker() -> String {
    KafkaBroker::shared()
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clone()
}

/// The problems of `part`, as text.
fn problems(report: &CheckReport, part: &str) -> Vec<String> {
    report
        .problems()
        .filter(|f| f.part == part)
        .map(|f| f.detail.clone())
        .collect()
}

async fn ready_database(label: &str) -> (TestDatabase, tokio_postgres::Client) {
    let (db, client) = database(label).await;
    common::exec(
        &client,
        "CREATE TABLE accounts (id int PRIMARY KEY, v text);",
    )
    .await;
    (db, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_config_passes_on_every_part() {
    let (db, _client) = ready_database("check_ready").await;
    let (warehouse, _w) = database("check_ready_wh").await;
    let report = check(&config(&db.url(), &broker(), "", &warehouse.url())).await;
    assert!(report.passed(), "{}", report.render());
    let parts: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| !f.warning)
        .map(|f| f.part)
        .collect();
    assert_eq!(parts, vec!["source", "kafka", "registry", "sink"]);
    // The test server keeps WAL for slots without bound (max_slot_wal_keep_size = -1, the
    // default): the slot guardian's warning, which is not a failure.
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.warning && f.detail.contains("max_slot_wal_keep_size = -1")),
        "{}",
        report.render()
    );
    assert!(report.render().contains("ready"), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_parts_are_named_with_the_fix() {
    let (db, _client) = ready_database("check_unreachable").await;
    let report = check(&config(
        &db.url(),
        "127.0.0.1:1",
        "url = \"http://127.0.0.1:1\"",
        "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable",
    ))
    .await;
    assert!(!report.passed());
    assert!(
        problems(&report, "source").is_empty(),
        "{}",
        report.render()
    );
    let kafka = problems(&report, "kafka");
    assert!(
        kafka.len() == 1
            && kafka[0].contains("no answer from 127.0.0.1:1")
            && kafka[0].contains("check [kafka] brokers"),
        "{kafka:?}"
    );
    let registry = problems(&report, "registry");
    assert!(
        registry.len() == 1 && registry[0].contains("check [registry] url"),
        "{registry:?}"
    );
    let sink = problems(&report, "sink");
    assert!(
        sink.len() == 1 && sink[0].contains("check [sink] url and credentials"),
        "{sink:?}"
    );

    let nowhere = check(&config(
        "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable",
        &broker(),
        "",
        &db.url(),
    ))
    .await;
    let source = problems(&nowhere, "source");
    assert!(
        source.len() == 1
            && source[0].contains("cannot connect to")
            && source[0].contains("check source.url"),
        "{source:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_privileges_and_replica_identity_are_reported_with_the_sql_that_fixes_them() {
    let (db, client) = ready_database("check_privileges").await;
    let (warehouse, _w) = database("check_privileges_wh").await;
    common::exec(
        &client,
        "CREATE ROLE check_plain LOGIN;
         CREATE TABLE secret (id int PRIMARY KEY);
         CREATE TABLE keyless (n int);
         GRANT SELECT ON accounts, keyless TO check_plain;",
    )
    .await;
    let report = check(&config(
        &db.url_as("check_plain"),
        &broker(),
        "",
        &warehouse.url(),
    ))
    .await;
    let source = problems(&report, "source");
    let has = |needle: &str| source.iter().any(|p| p.contains(needle));
    assert!(
        has("lacks the REPLICATION privilege; run ALTER ROLE \"check_plain\" WITH REPLICATION"),
        "{source:?}"
    );
    assert!(
        has(
            "role check_plain cannot SELECT from public.secret (the snapshot reads it); run GRANT SELECT ON public.secret TO check_plain;"
        ),
        "{source:?}"
    );
    assert!(
        has("public.keyless has no primary key and REPLICA IDENTITY is not FULL"),
        "{source:?}"
    );
    assert!(
        !has("public.accounts"),
        "a readable table with a key is fine: {source:?}"
    );
    // The other parts are unaffected.
    for part in ["kafka", "registry", "sink"] {
        assert!(problems(&report, part).is_empty(), "{}", report.render());
    }
    common::exec(&client, "DROP OWNED BY check_plain; DROP ROLE check_plain").await;
}
