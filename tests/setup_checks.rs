//! `tidemark setup` on servers and databases that are not ready: each failure names the
//! cause and the remedy.

use crate::common;

use common::*;
use tidemark::config::Config;
use tidemark::pg::ReplicationConnection;
use tidemark::source::setup::{self, SetupError};
use tidemark::testing::PgCluster;

fn config_for(url: &str, extra: &str) -> Config {
    let text = format!("name = \"chk\"\n[source]\nurl = \"{url}\"\n{extra}\n");
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

async fn setup_problems(config: &Config) -> String {
    match setup::setup(config).await {
        Ok(report) => panic!("setup succeeded: {report}"),
        Err(SetupError::ChecksFailed(problems)) => problems.join("\n"),
        Err(other) => other.to_string(),
    }
}

#[tokio::test]
async fn setup_creates_publication_and_slot_once() {
    let (db, client) = database("setup_ok").await;
    exec(
        &client,
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);",
    )
    .await;
    // With the default snapshot mode the slot is left to the first run (exported snapshot).
    let initial = config_for(&db.url(), "tables = [\"public.a\"]");
    let report = setup::setup(&initial)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.publication_created && !report.slot_created);
    let config = config_for(&db.url(), "tables = [\"public.a\"]\nsnapshot = \"never\"");
    let first = setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.publication_created && first.slot_created);
    assert_eq!(first.tables, vec!["public.a"]);
    let second = setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !second.publication_created && !second.slot_created,
        "setup must be idempotent"
    );
    let dropped = setup::teardown(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidemark_chk'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(slots, 0);
}

#[tokio::test]
async fn table_problems_are_named_with_their_remedy() {
    let (db, client) = database("setup_tables").await;
    exec(&client, "CREATE TABLE keyless (v text); CREATE TABLE nothing (id int PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;").await;
    let config = config_for(
        &db.url(),
        "tables = [\"public.keyless\", \"public.nothing\", \"public.missing\"]",
    );
    let problems = setup_problems(&config).await;
    assert!(
        problems.contains("table public.missing listed in source.tables does not exist"),
        "{problems}"
    );
    assert!(
        problems.contains("ALTER TABLE public.keyless REPLICA IDENTITY FULL"),
        "{problems}"
    );
    assert!(
        problems.contains("ALTER TABLE public.nothing REPLICA IDENTITY FULL"),
        "{problems}"
    );
    // Nothing was created when checks fail.
    let publications: i64 = client
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(publications, 0);
}

#[tokio::test]
async fn missing_replication_privilege_and_superuser_publication() {
    let (db, client) = database("setup_priv").await;
    exec(
        &client,
        "CREATE ROLE plain LOGIN; CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO plain;",
    )
    .await;
    let config = config_for(&db.url_as("plain"), "tables = [\"public.*\"]");
    let problems = setup_problems(&config).await;
    assert!(
        problems
            .contains("lacks the REPLICATION privilege; run ALTER ROLE \"plain\" WITH REPLICATION"),
        "{problems}"
    );
    assert!(problems.contains("needs a superuser"), "{problems}");
    let _ = client
        .batch_execute("DROP OWNED BY plain; DROP ROLE plain")
        .await;
}

#[tokio::test]
async fn wal_level_not_logical() {
    let cluster =
        PgCluster::start_with(&[("wal_level", "replica")]).unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("walrep")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let problems = setup_problems(&config_for(&db.url(), "")).await;
    assert!(
        problems.contains(
            "wal_level is replica; run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"
        ),
        "{problems}"
    );
}

#[tokio::test]
async fn no_free_slot_and_no_free_wal_sender() {
    let cluster =
        PgCluster::start_with(&[("max_replication_slots", "1"), ("max_wal_senders", "1")])
            .unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("full")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(
        &client,
        "SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')",
    )
    .await;
    let settings =
        tidemark::pg::ConnectionSettings::from_url(&db.url()).unwrap_or_else(|e| panic!("{e}"));
    let mut busy = ReplicationConnection::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    busy.identify_system()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let problems = setup_problems(&config_for(&db.url(), "")).await;
    assert!(
        problems.contains("all 1 replication slots are in use"),
        "{problems}"
    );
    assert!(
        problems.contains("all 1 WAL senders are busy; raise max_wal_senders"),
        "{problems}"
    );
}

#[tokio::test]
async fn teardown_refuses_an_active_slot() {
    let (db, client) = database("teardown_active").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let config = config(&db, "teardown_active", "");
    let reader = Running::start(config.clone(), &client).await;
    let error = setup::teardown(&config)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("is in use by process"), "{error}");
    assert!(error.contains("stop the connector"), "{error}");
    reader.stop().await;
    setup::teardown(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `source.failover`: refused before PostgreSQL 17; on 17 and later `setup` names what the
/// primary lacks for slot synchronization (a physical slot for the standby,
/// `synchronized_standby_slots`), then creates the slot with `FAILOVER`, and
/// `setup --print-sql` says so.
#[tokio::test]
async fn failover_slots_and_what_a_failover_needs_on_the_primary() {
    let (db, client) = database("setup_failover").await;
    exec(&client, "CREATE TABLE f (id int PRIMARY KEY)").await;
    let version = server_version(&client).await;
    let config = config_for(
        &db.url(),
        "tables = [\"public.f\"]\nsnapshot = \"never\"\nfailover = true",
    );
    let sql = setup::print_sql(&config);
    assert!(
        sql.contains(
            "pg_create_logical_replication_slot('tidemark_chk', 'pgoutput', false, false, true)"
        ) && sql.contains("sync_replication_slots = on"),
        "{sql}"
    );
    if version < 170000 {
        let problems = setup_problems(&config).await;
        assert!(problems.contains("needs PostgreSQL 17"), "{problems}");
        return;
    }
    let problems = setup_problems(&config).await;
    assert!(
        problems.contains("no physical replication slot"),
        "{problems}"
    );
    exec(
        &client,
        "SELECT pg_create_physical_replication_slot('standby_f')",
    )
    .await;
    let problems = setup_problems(&config).await;
    assert!(
        problems.contains("synchronized_standby_slots is empty") && problems.contains("standby_f"),
        "{problems}"
    );
    // This test's cluster is its own (one per test process): the setting touches no other.
    exec(
        &client,
        "ALTER SYSTEM SET synchronized_standby_slots = 'standby_f'",
    )
    .await;
    exec(&client, "SELECT pg_reload_conf()").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let report = setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.slot_created, "{report}");
    let failover: bool = client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'tidemark_chk'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert!(failover, "the slot is a failover slot");
    // A slot created without FAILOVER is named with the way to change it.
    exec(&client, "SELECT pg_drop_replication_slot('tidemark_chk')").await;
    exec(
        &client,
        "SELECT pg_create_logical_replication_slot('tidemark_chk', 'pgoutput')",
    )
    .await;
    let problems = setup_problems(&config).await;
    assert!(
        problems.contains("exists without FAILOVER") && problems.contains("ALTER_REPLICATION_SLOT"),
        "{problems}"
    );
    exec(&client, "ALTER SYSTEM RESET synchronized_standby_slots").await;
    exec(&client, "SELECT pg_reload_conf()").await;
}
