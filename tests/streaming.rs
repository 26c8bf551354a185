//! Transactions larger than `logical_decoding_work_mem` (64 kB in the test cluster) arrive in
//! chunks before they commit (protocol 2 streaming): they must come out whole, in commit
//! order, in bounded memory, without their rolled-back parts.

use crate::common;

use common::*;
use tidemark::domain::event::Op;
use tidemark::domain::value::Value;

fn ids(events: &[tidemark::domain::event::ChangeEvent]) -> Vec<i32> {
    events
        .iter()
        .map(|e| match column(e, "id") {
            Value::Int32(v) => *v,
            other => panic!("id is {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn large_transaction_is_streamed_spilled_and_delivered_whole() {
    let (db, client) = database("bigtxn").await;
    exec(&client, "CREATE TABLE big (id int PRIMARY KEY, pad text)").await;
    // 1 MB in memory at most, so the ~6 MB transaction must spill.
    let mut reader = Running::start(config(&db, "bigtxn", "stream_memory_mb = 1"), &client).await;
    exec(
        &client,
        "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 30000) g",
    )
    .await;
    exec(&client, "INSERT INTO big VALUES (0, 'after')").await;
    let events = reader.wait_for_events(30001).await;
    let stats = reader.stop().await;
    assert_eq!(events.len(), 30001);
    assert_eq!(ids(&events[..30000]), (1..=30000).collect::<Vec<_>>());
    assert_eq!(ids(&events[30000..]), vec![0]);
    let xid = events[0].source.xid;
    assert!(
        events[..30000]
            .iter()
            .all(|e| e.source.xid == xid && e.op == Op::Create)
    );
    assert!(
        events[..30000]
            .windows(2)
            .all(|w| w[1].source.seq == w[0].source.seq + 1)
    );
    // PostgreSQL 13 (protocol 1) does not stream in-progress transactions: the server
    // spills the transaction itself and sends it at its commit, so tidemark holds nothing.
    let version = server_version(&client).await;
    if version < 140000 {
        assert_eq!(stats.spilled_bytes, 0, "{stats:?}");
        return;
    }
    assert!(
        stats.spilled_bytes > 1 << 20,
        "expected a spill, stats: {stats:?}"
    );
    assert!(
        stats.peak_stream_memory <= (1 << 20) + 4096,
        "memory bound exceeded: {stats:?}"
    );
}

#[tokio::test]
async fn rolled_back_subtransaction_inside_a_committed_transaction_is_dropped() {
    let (db, client) = database("subxact").await;
    exec(&client, "CREATE TABLE s (id int PRIMARY KEY, pad text)").await;
    let mut reader = Running::start(config(&db, "subxact", "stream_memory_mb = 1"), &client).await;
    // Large enough to be streamed before the savepoint is rolled back.
    exec(
        &client,
        "BEGIN;
         INSERT INTO s SELECT g, repeat('a', 100) FROM generate_series(1, 5000) g;
         SAVEPOINT sp1;
         INSERT INTO s SELECT g, repeat('b', 100) FROM generate_series(5001, 10000) g;
         SAVEPOINT sp2;
         INSERT INTO s SELECT g, repeat('c', 100) FROM generate_series(10001, 12000) g;
         ROLLBACK TO sp1;
         INSERT INTO s SELECT g, repeat('d', 100) FROM generate_series(20001, 20010) g;
         COMMIT;
         BEGIN; SAVEPOINT small; INSERT INTO s VALUES (30001, 'gone'); ROLLBACK TO small;
         INSERT INTO s VALUES (30002, 'kept'); COMMIT;",
    )
    .await;
    let events = reader.wait_for_events(5011).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let events_after = reader.events.snapshot();
    reader.stop().await;
    assert_eq!(
        events.len(),
        events_after.len(),
        "no events beyond the committed rows"
    );
    let mut expected: Vec<i32> = (1..=5000).collect();
    expected.extend(20001..=20010);
    expected.push(30002);
    assert_eq!(ids(&events_after), expected);
}

#[tokio::test]
async fn aborted_streamed_transaction_emits_nothing() {
    let (db, client) = database("abort").await;
    exec(&client, "CREATE TABLE a (id int PRIMARY KEY, pad text)").await;
    let mut reader = Running::start(config(&db, "abort", ""), &client).await;
    exec(&client, "BEGIN; INSERT INTO a SELECT g, repeat('z', 200) FROM generate_series(1, 20000) g; ROLLBACK;").await;
    exec(&client, "INSERT INTO a VALUES (-1, 'marker')").await;
    let events = reader.wait_for_events(1).await;
    reader.stop().await;
    assert_eq!(ids(&events), vec![-1]);
}
