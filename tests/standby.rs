//! Reading from a standby (PostgreSQL 16 and later): the slot and the snapshot on a streaming
//! standby, tidemark's writes (the publication, heartbeats) on the primary
//! (`source.primary_url`), and the recovery conflict that invalidates a standby's slot when
//! `hot_standby_feedback` is off, reported with its cause by `check`, `status` and the reader.
//! Before 16 `check` refuses a standby, naming the major it needs.

use crate::common;

use std::time::Duration;

use common::*;
use tidemark::capture::reader::ReaderError;
use tidemark::testing::PgCluster;

/// Connects to `url`, retrying while the standby starts or has not replayed the database.
async fn connect_when_ready(url: &str) -> tokio_postgres::Client {
    let started = std::time::Instant::now();
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                panic!("the standby did not accept {url} within 60 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// How many logical slots named `slot` the server of `client` has.
async fn logical_slots(client: &tokio_postgres::Client, slot: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0)
}

/// A primary with a table `acct` of `rows` rows, a streaming standby of it, and a
/// configuration reading from the standby (`source.primary_url` the primary; heartbeats
/// every 300 ms; an initial snapshot).
struct Pair {
    primary_db: tidemark::testing::TestDatabase,
    primary: tokio_postgres::Client,
    standby: &'static PgCluster,
    standby_db: tokio_postgres::Client,
    config: tidemark::config::Config,
    version: i32,
}

async fn pair(label: &str, rows: i64) -> Pair {
    let cluster = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    let primary_db = cluster
        .create_database(label)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let primary = primary_db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let version = server_version(&primary).await;
    exec(
        &primary,
        &format!(
            "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO acct SELECT g, g FROM generate_series(1, {rows}) g"
        ),
    )
    .await;
    let standby = cluster
        .start_standby(&format!("{label}_phys"), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let standby_db = connect_when_ready(&standby.url("postgres", &primary_db.name)).await;
    let mut config = config(&primary_db, label, "heartbeat_interval_ms = 300");
    config.source.snapshot = tidemark::config::SnapshotMode::Initial;
    config.source.url = standby.url("postgres", &primary_db.name);
    config.source.primary_url = Some(primary_db.url());
    Pair {
        primary_db,
        primary,
        standby,
        standby_db,
        config,
        version,
    }
}

/// Whether the connector `name`'s connection to the server of `client` last wrote a
/// heartbeat (its last statement, in `pg_stat_activity`).
async fn heartbeat_written(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND query LIKE '%pg_logical_emit_message%'",
            &[&format!("tidemark-{name}")],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_snapshots_and_streams_and_its_recovery_conflict_is_named() {
    let log = LogBuffer::install(tracing::Level::WARN);
    let Pair {
        primary_db: _db,
        primary: client,
        standby,
        standby_db,
        config,
        version,
    } = pair("standby", 500).await;
    let major = version / 10000;
    let in_recovery: bool = standby_db
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert!(in_recovery, "the source is a standby");
    let standby_admin = standby.admin().await.unwrap_or_else(|e| panic!("{e}"));

    if version < 160000 {
        let report = tidemark::ops::check::check(&config).await;
        let rendered = report.render();
        assert!(
            !report.passed() && rendered.contains("needs PostgreSQL 16"),
            "{rendered}"
        );
        println!("PostgreSQL {major}: check refuses a standby: {rendered}");
        return;
    }

    // Without source.primary_url, the publication cannot be made on a standby: check says
    // where to make it.
    let mut no_primary = config.clone();
    no_primary.source.primary_url = None;
    let rendered = tidemark::ops::check::check(&no_primary).await.render();
    assert!(rendered.contains("set source.primary_url"), "{rendered}");

    // The snapshot is read on the standby, with the slot created there (the primary is
    // nudged for the record of running transactions the creation waits for).
    let reader = Running::spawn(config.clone());
    reader.wait_for_last_snapshot_row().await;
    let report = tidemark::ops::check::check(&config).await;
    assert!(report.passed(), "{}", report.render());
    let slot = config.source.slot.as_str();
    assert_eq!(
        logical_slots(&standby_admin, slot).await,
        1,
        "the slot is the standby's"
    );
    assert_eq!(
        logical_slots(&client, slot).await,
        0,
        "no slot on the primary"
    );

    // Changes written on the primary stream from the standby.
    exec(
        &client,
        "INSERT INTO acct SELECT g, g FROM generate_series(501, 600) g;
         UPDATE acct SET v = v + 1000 WHERE id <= 50;
         DELETE FROM acct WHERE id > 590",
    )
    .await;
    let expected = acct_table(&client).await;
    wait_until(
        "the events equal the primary's table",
        Duration::from_secs(60),
        || async { acct_replay(&reader.events.snapshot()) == expected },
    )
    .await;
    reader.check_alive();

    // A snapshot signal is a write too: it goes to the primary and the standby's slot
    // delivers it, so the table is read again (590 rows over the first 500).
    let how = tidemark::snapshot::signal::request_snapshot(&config, &["public.acct".into()], None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(how, "a logical message");
    wait_until(
        "the table read again on the signal",
        Duration::from_secs(60),
        || async {
            reader
                .events
                .lock()
                .iter()
                .filter(|e| e.op == tidemark::domain::event::Op::Read)
                .count()
                >= 500 + 590
        },
    )
    .await;

    // Heartbeats are written on the primary (its connection's last statement is one), and
    // idle, the slot moves to the primary's position.
    wait_until(
        "a heartbeat written on the primary",
        Duration::from_secs(30),
        || heartbeat_written(&client, "standby"),
    )
    .await;
    let target = current_wal(&client).await;
    wait_until(
        "the standby's slot confirmed the primary's position",
        Duration::from_secs(30),
        || async { confirmed(&standby_admin, &config.source.slot).await >= target },
    )
    .await;
    let status = tidemark::ops::status::status(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = status.slot.as_ref().expect("the slot's status");
    assert!(slot.lag_bytes.is_some_and(|lag| lag >= 0), "{status:?}");
    let stats = reader.stop().await;
    println!(
        "PostgreSQL {major} standby: 500 rows snapshotted and 160 changes streamed from the standby, the table read again on a signal, the slot idle at the primary's position ({stats:?})"
    );

    // Without source.primary_url a reader on the standby streams, and says its heartbeats
    // are off.
    let mut without = no_primary.clone();
    without.source.snapshot = tidemark::config::SnapshotMode::Never;
    let reader = Running::start(without, &standby_admin).await;
    wait_until(
        "the warning that heartbeats are off",
        Duration::from_secs(10),
        || async {
            log.text()
                .lines()
                .any(|l| l.contains("WARN") && l.contains("heartbeats are off"))
        },
    )
    .await;
    reader.stop().await;

    // The conflict: without hot_standby_feedback the primary's VACUUM removes catalog rows
    // the standby's slot still needs, and the standby invalidates the slot on replay.
    exec(
        &standby_admin,
        "ALTER SYSTEM SET hot_standby_feedback = off",
    )
    .await;
    exec(&standby_admin, "SELECT pg_reload_conf()").await;
    wait_until(
        "the standby's physical slot no longer holds the primary's xmin",
        Duration::from_secs(30),
        || {
            slot_holds(
                &client,
                "standby_phys",
                "xmin IS NULL AND catalog_xmin IS NULL",
            )
        },
    )
    .await;
    let rendered = tidemark::ops::check::check(&config).await.render();
    assert!(
        rendered.contains("hot_standby_feedback = off"),
        "{rendered}"
    );
    wait_until(
        "the standby's slot invalidated by a recovery conflict",
        Duration::from_secs(60),
        || async {
            exec(&client, "CREATE TABLE churn (x int)").await;
            exec(&client, "DROP TABLE churn").await;
            exec(&client, "VACUUM pg_class, pg_attribute, pg_type").await;
            slot_holds(&standby_admin, &config.source.slot, "conflicting").await
        },
    )
    .await;
    let status = tidemark::ops::status::status(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let warning = status
        .slot
        .as_ref()
        .and_then(|s| s.warning.clone())
        .unwrap_or_default();
    assert!(
        warning.contains("recovery conflict") && warning.contains("hot_standby_feedback"),
        "{status:?}"
    );
    let health = &status.slot.as_ref().expect("the slot's status").health;
    assert_eq!(health.conflicting, Some(true), "{status:?}");
    if version >= 170000 {
        assert_eq!(
            health.invalidation_reason.as_deref(),
            Some("rows_removed"),
            "{status:?}"
        );
    }
    let rendered = tidemark::ops::check::check(&config).await.render();
    assert!(rendered.contains("recovery conflict"), "{rendered}");

    // The reader stops with a definite error naming the cause.
    let mut again = config.clone();
    again.source.snapshot = tidemark::config::SnapshotMode::Never;
    let error = Running::spawn(again)
        .finished()
        .await
        .expect_err("the slot is invalidated");
    let text = error.to_string();
    assert!(
        matches!(&error, ReaderError::SlotInvalidated { detail, .. }
            if detail.contains("conflicting with recovery") || detail.contains("rows_removed")),
        "{text}"
    );
    assert!(text.contains("hot_standby_feedback"), "{text}");
    println!("PostgreSQL {major}: the invalidated standby slot stops the reader: {text}");
}

/// A standby promoted while tidemark reads from it keeps its slot; tidemark notices at its
/// next heartbeat, starts a new session, and from then on writes its heartbeats to the
/// promoted server, whose changes stream on. Before 16 `check` refuses a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promoted_under_tidemark_takes_its_writes() {
    let Pair {
        primary_db: _db,
        primary: client,
        standby: _standby,
        standby_db,
        config,
        version,
    } = pair("promoted", 10).await;
    if version < 160000 {
        let report = tidemark::ops::check::check(&config).await;
        assert!(!report.passed(), "{}", report.render());
        return;
    }
    let reader = Running::spawn(config.clone());
    reader.wait_for_last_snapshot_row().await;
    exec(&client, "UPDATE acct SET v = v + 100 WHERE id <= 3").await;
    let before = acct_table(&client).await;
    wait_until(
        "the update from the standby",
        Duration::from_secs(60),
        || async { acct_replay(&reader.events.snapshot()) == before },
    )
    .await;

    standby_db
        .execute("SELECT pg_promote()", &[])
        .await
        .unwrap_or_else(|e| panic!("promote: {e}"));
    // Writes on the promoted server stream on from the same slot.
    wait_until(
        "the promoted server accepts writes",
        Duration::from_secs(30),
        || async {
            standby_db
                .execute("UPDATE acct SET v = v + 1000 WHERE id = 5", &[])
                .await
                .is_ok()
        },
    )
    .await;
    exec(
        &standby_db,
        "INSERT INTO acct VALUES (11, 11); DELETE FROM acct WHERE id = 1",
    )
    .await;
    let after = acct_table(&standby_db).await;
    wait_until(
        "the promoted server's changes",
        Duration::from_secs(60),
        || async { acct_replay(&reader.events.snapshot()) == after },
    )
    .await;
    // Heartbeats now go to the promoted server, not to the old primary.
    wait_until(
        "a heartbeat on the promoted server",
        Duration::from_secs(30),
        || heartbeat_written(&standby_db, "promoted"),
    )
    .await;
    let stats = reader.stop().await;
    assert!(
        stats.sessions >= 2,
        "a new session after the promotion: {stats:?}"
    );
    println!(
        "PostgreSQL {}: the standby promoted under tidemark; {} sessions, the promoted server's changes streamed and its heartbeats written there",
        version / 10000,
        stats.sessions
    );
}
