//! The connector killed (SIGKILL) again and again while writes go on, then restarted: every
//! source change is found in Kafka (at-least-once: duplicates allowed, gaps not).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::kafka::consume_until;
use common::*;
use tidemark::testing::KafkaBroker;

const TRANSACTIONS: i64 = 150;
const ROWS: i64 = 20;

fn start(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn kill(child: &mut Child, signal: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let _ = child.wait();
}

#[tokio::test]
async fn sigkill_mid_stream_and_restart_loses_nothing() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("kafka_kill").await;
    exec(
        &client,
        "CREATE TABLE w (txn int, i int, PRIMARY KEY (txn, i))",
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"kkill\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 100\n[kafka]\nbrokers = \"{}\"\nformat = \"json\"\npartitions = 2\n",
            db.url(),
            broker.bootstrap
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let setup = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["setup", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    let writer_client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let writer = tokio::spawn(async move {
        for txn in 1..=TRANSACTIONS {
            writer_client
                .batch_execute(&format!(
                    "INSERT INTO w SELECT {txn}, g FROM generate_series(1, {ROWS}) g"
                ))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    for round in 0..4u64 {
        let mut child = start(&config, &dir.path().join(format!("run{round}.log")));
        tokio::time::sleep(Duration::from_millis(400 + 150 * round)).await;
        kill(&mut child, libc::SIGKILL);
    }
    writer.await.unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("final.log");
    let mut child = start(&config, &log);

    let records = consume_until(
        &broker.bootstrap,
        "kkill.public.w",
        Duration::from_secs(90),
        |records| {
            let seen: BTreeSet<(i64, i64)> = records
                .iter()
                .filter_map(|r| r.value.as_ref())
                .map(|v| {
                    (
                        v["after"]["txn"].as_i64().unwrap_or(-1),
                        v["after"]["i"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            seen.len() as i64 == TRANSACTIONS * ROWS
        },
    )
    .await;
    kill(&mut child, libc::SIGTERM);

    let mut per_txn: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for value in records.iter().filter_map(|r| r.value.as_ref()) {
        per_txn
            .entry(value["after"]["txn"].as_i64().unwrap_or(-1))
            .or_default()
            .insert(value["after"]["i"].as_i64().unwrap_or(-1));
    }
    assert_eq!(per_txn.len() as i64, TRANSACTIONS);
    assert!(per_txn.values().all(|rows| rows.len() as i64 == ROWS));
    let duplicates = records.len() as i64 - TRANSACTIONS * ROWS;
    eprintln!(
        "{} records for {} changes ({duplicates} redelivered after kills)",
        records.len(),
        TRANSACTIONS * ROWS
    );
}
