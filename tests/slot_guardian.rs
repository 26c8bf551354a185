//! The slot guardian: a slot held back under a pgbench load on a server with
//! `max_slot_wal_keep_size` set is warned about before it is lost, in the log, in the
//! `tidemark_slot_safe_wal_bytes` gauge, by `check` and by `status`.
//!
//! The slot is held back the way it is in production: tidemark runs and reads, but its
//! output never acknowledges (a downstream that is stuck), so the confirmed position and the
//! slot's `restart_lsn` stay while pgbench writes WAL.
//!
//! On PostgreSQL 18 a stopped connector's slot idles past `idle_replication_slot_timeout`
//! until a checkpoint invalidates it: the cause is named everywhere, and `when_needed`
//! starts again.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tidemark::domain::event::ChangeEvent;
use tidemark::domain::lsn::Lsn;
use tidemark::output::{EventOutput, OffsetStore, OutputError};
use tidemark::testing::PgCluster;

/// An output that takes every event and acknowledges none: a stuck downstream.
struct Stuck;

impl OffsetStore for Stuck {}

impl EventOutput for Stuck {
    async fn send(&mut self, _event: &ChangeEvent) -> Result<(), OutputError> {
        Ok(())
    }
    async fn commit(&mut self, _end_lsn: Lsn) -> Result<(), OutputError> {
        Ok(())
    }
    fn abort(&mut self) {}
    fn acknowledged(&self) -> Lsn {
        Lsn::ZERO
    }
    async fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_back_under_load_is_warned_about_before_it_is_lost() {
    let log = LogBuffer::install(tracing::Level::WARN);
    // 256 MB kept at most; the guardian warns from 224 MB of safe WAL down, that is once
    // the slot keeps about 32 MB.
    let cluster = PgCluster::start_with(&[("max_slot_wal_keep_size", "256MB")])
        .unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("guardian")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let config = config(&db, "guardian", "slot_safe_wal_margin_mb = 224");
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = tidemark::ops::check::check(&config).await;
    assert!(
        !report.render().contains("from invalidation"),
        "a fresh slot is safe:\n{}",
        report.render()
    );

    let metrics =
        tidemark::observe::server::serve("127.0.0.1:0", tidemark::observe::health::Health::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let metrics_url = format!("http://{}/metrics", metrics.address());
    let (shutdown, reader) = spawn_reader(config.clone(), Stuck, &client).await;

    // pgbench's tables and load, until the guardian speaks (or the slot would be past its
    // limit: the test fails before that).
    let pgbench = |args: &[&str]| {
        let out = Command::new(cluster.binary("pgbench"))
            .args(args)
            .arg(db.url())
            .output()
            .unwrap_or_else(|e| panic!("pgbench: {e}"));
        assert!(
            out.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbench(&["-i", "-q", "-s", "1"]);
    // As a user would before capturing it: the keyless history table identifies its rows.
    exec(&client, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL").await;
    let started = Instant::now();
    let mut rounds = 0;
    let gauge = loop {
        let body = reqwest::get(&metrics_url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gauge = body
            .lines()
            .find(|l| l.starts_with("tidemark_slot_safe_wal_bytes"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if log.text().contains("from invalidation") {
            break gauge;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no warning after {rounds} pgbench rounds; gauge {gauge:?}; log:\n{}",
            log.text()
        );
        pgbench(&["-n", "-c", "2", "-t", "2000"]);
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let line = log
        .text()
        .lines()
        .find(|l| l.contains("from invalidation"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("raise max_slot_wal_keep_size"), "{line}");
    let safe = gauge.unwrap_or_else(|| panic!("no tidemark_slot_safe_wal_bytes series"));
    assert!(
        safe > 0.0 && safe < 224.0 * 1_048_576.0,
        "the gauge is within the margin: {safe}"
    );

    // `check` warns (the connector is ready, the slot is in danger); `status` says it too.
    let report = tidemark::ops::check::check(&config).await;
    let rendered = report.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("from invalidation")),
        "{rendered}"
    );
    assert!(report.passed(), "a warning is not a failure:\n{rendered}");
    let status = tidemark::ops::status::status(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = status.slot.clone().unwrap_or_else(|| panic!("no slot"));
    assert_eq!(slot.health.wal_status.as_deref(), Some("reserved"));
    assert!(slot.health.safe_wal_size.is_some_and(|s| s < 224 << 20));
    assert!(status.to_string().contains("WARNING"), "{status}");

    // PostgreSQL 18 invalidates slots idle longer than idle_replication_slot_timeout:
    // `check` says so.
    if cluster.major().is_some_and(|m| m >= 18) {
        exec(
            &client,
            "ALTER SYSTEM SET idle_replication_slot_timeout = '30min'",
        )
        .await;
        exec(&client, "SELECT pg_reload_conf()").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rendered = tidemark::ops::check::check(&config).await.render();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with("warn")
                    && l.contains("idle_replication_slot_timeout = 30min")),
            "{rendered}"
        );
    }
    let _ = shutdown.send(true);
    let _ = reader.await;
    // With tidemark stopped, PostgreSQL 17 and later say since when the slot idles.
    let status = tidemark::ops::status::status(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let health = status.slot.map(|s| s.health).unwrap_or_default();
    assert_eq!(
        health.inactive_since.is_some(),
        cluster.major().is_some_and(|m| m >= 17),
        "{health:?}"
    );
    metrics.stop().await;
}

/// PostgreSQL 18 invalidates a slot idle longer than `idle_replication_slot_timeout` (at a
/// checkpoint): `status` and `check` name the cause, a reader on the slot stops with the
/// server's reason, and `when_needed` drops it and snapshots again into a new slot. Before
/// 18 there is no such setting, and `check` says nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_idle_past_the_timeout_is_named_and_when_needed_starts_again() {
    // A cluster of its own: the timeout applies to every slot of the server.
    let cluster = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("idle")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let major = server_version(&client).await / 10000;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let config = config(&db, "idle", "");
    if major < 18 {
        let rendered = tidemark::ops::check::check(&config).await.render();
        assert!(
            !rendered.contains("idle_replication_slot_timeout"),
            "{rendered}"
        );
        println!("PostgreSQL {major}: no idle_replication_slot_timeout, nothing said of it");
        return;
    }
    // The smallest timeout PostgreSQL 18 takes is a minute.
    exec(
        &client,
        "ALTER SYSTEM SET idle_replication_slot_timeout = '1min'",
    )
    .await;
    exec(&client, "SELECT pg_reload_conf()").await;
    // The slot, then idle: tidemark stopped.
    Running::start(config.clone(), &client).await.stop().await;
    exec(&client, "INSERT INTO t VALUES (1)").await;
    let idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(61)).await;
    wait_until(
        "the idle slot invalidated at a checkpoint",
        Duration::from_secs(60),
        || async {
            exec(&client, "CHECKPOINT").await;
            slot_holds(
                &client,
                &config.source.slot,
                "invalidation_reason = 'idle_timeout'",
            )
            .await
        },
    )
    .await;
    let invalidated_after = idle.elapsed();

    let status = tidemark::ops::status::status(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = status.slot.clone().unwrap_or_else(|| panic!("no slot"));
    assert_eq!(
        slot.health.invalidation_reason.as_deref(),
        Some("idle_timeout")
    );
    let warning = slot.warning.unwrap_or_default();
    assert!(
        warning.contains("idle_replication_slot_timeout") && warning.contains("when_needed"),
        "{warning}"
    );
    let report = tidemark::ops::check::check(&config).await;
    let rendered = report.render();
    assert!(
        !report.passed() && rendered.contains("idle_replication_slot_timeout"),
        "{rendered}"
    );

    // A reader on it stops with the server's reason.
    let error = Running::spawn(config.clone())
        .finished()
        .await
        .expect_err("the slot is invalidated");
    let text = error.to_string();
    assert!(
        matches!(&error, tidemark::capture::reader::ReaderError::SlotInvalidated { detail, .. } if detail.contains("idle_timeout")),
        "{text}"
    );

    // `when_needed` drops it and snapshots again: the row written while it idled arrives.
    let mut again = config.clone();
    again.source.snapshot = tidemark::config::SnapshotMode::WhenNeeded;
    let reader = Running::spawn(again);
    reader.wait_for_last_snapshot_row().await;
    let events = reader.stop_and_collect().await;
    assert!(
        events
            .iter()
            .any(|e| e.table.as_ref().is_some_and(|t| t.name == "t")),
        "{events:?}"
    );
    println!(
        "PostgreSQL {major}: the slot idle past idle_replication_slot_timeout = 1min was invalidated {:.0} s after it went idle; named by status, check and the reader; when_needed snapshotted again",
        invalidated_after.as_secs_f64()
    );
}
