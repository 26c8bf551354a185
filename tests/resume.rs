//! Stop at any instant, start again: every transaction arrives whole, at least once, none
//! lost. The real binary is killed with SIGKILL while a write load runs, restarted, and
//! finally stopped with SIGTERM; its output file must then hold every transaction completely,
//! and a restart after the graceful stop must deliver nothing again.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TRANSACTIONS: i32 = 240;

fn rows_in(txn: i32) -> i32 {
    if txn % 60 == 0 { 3000 } else { 25 }
}

fn start_tidemark(
    config: &std::path::Path,
    output: &std::path::Path,
    log: &std::path::Path,
) -> Child {
    let log_file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "--config"])
        .arg(config)
        .arg("--output")
        .arg(format!("file:{}", output.display()))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting tidemark: {e}"))
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn read_rows(output: &std::path::Path) -> (BTreeMap<i32, BTreeSet<i32>>, usize) {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let mut rows: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    let mut lines = 0;
    for line in text.lines() {
        // A SIGKILL can cut the last line of a run short; such a line is not a delivery.
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        lines += 1;
        let after = &record["value"]["after"];
        if let (Some(txn), Some(i)) = (after["txn"].as_i64(), after["i"].as_i64()) {
            rows.entry(txn as i32).or_default().insert(i as i32);
        }
    }
    (rows, lines)
}

fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(150 + nanos % max_ms)
}

#[tokio::test]
async fn killed_and_restarted_loses_nothing_and_delivers_transactions_whole() {
    let (db, client) = database("resume").await;
    exec(
        &client,
        "CREATE TABLE w (txn int, i int, pad text, PRIMARY KEY (txn, i))",
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config_path = dir.path().join("resume.toml");
    let output = dir.path().join("events.jsonl");
    std::fs::write(
        &config_path,
        format!("name = \"resume\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 100\n", db.url()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Create the slot before the load so no change precedes it.
    let setup = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["setup", "--config"])
        .arg(&config_path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        setup.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );

    let writer_db = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let writer = tokio::spawn(async move {
        for txn in 1..=TRANSACTIONS {
            let sql = format!(
                "INSERT INTO w SELECT {txn}, g, repeat('p', 100) FROM generate_series(1, {}) g",
                rows_in(txn)
            );
            writer_db
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    for round in 0..5 {
        let log = dir.path().join(format!("run{round}.log"));
        let mut child = start_tidemark(&config_path, &output, &log);
        tokio::time::sleep(jitter(700)).await;
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }
    writer.await.unwrap_or_else(|e| panic!("{e}"));

    let log = dir.path().join("final.log");
    let mut child = start_tidemark(&config_path, &output, &log);
    let start = Instant::now();
    loop {
        let (rows, _) = read_rows(&output);
        let complete = (1..=TRANSACTIONS)
            .all(|t| rows.get(&t).map(BTreeSet::len) == Some(rows_in(t) as usize));
        if complete {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not caught up after 90 s; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "graceful stop exited with {status}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Every transaction complete (checked above); none with rows that were never written.
    let (rows, lines_before) = read_rows(&output);
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (1..=TRANSACTIONS).collect::<Vec<_>>()
    );

    // After a graceful stop the confirmed position covers everything: a restart redelivers nothing.
    let log = dir.path().join("after.log");
    let mut child = start_tidemark(&config_path, &output, &log);
    wait_until(
        "the restarted connector to stream",
        Duration::from_secs(20),
        || async {
            client
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'tidemark_resume'",
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    signal(&child, libc::SIGTERM);
    let _ = child.wait();
    let (_, lines_after) = read_rows(&output);
    assert_eq!(
        lines_before, lines_after,
        "events were delivered again after a graceful stop"
    );
}
