//! On an idle database the confirmed position still advances, so the slot does not hold
//! back WAL written by other databases of the same server.

use crate::common;

use std::time::Duration;

use common::*;
use tidemark::domain::lsn::Lsn;

#[tokio::test]
async fn confirmed_position_follows_wal_written_by_other_databases() {
    let (db, client) = database("idle").await;
    exec(&client, "CREATE TABLE quiet (id int PRIMARY KEY)").await;
    let reader = Running::start(config(&db, "idle", ""), &client).await;
    let before = confirmed(&client, "tidemark_idle").await;
    let (_other, busy) = database("busy").await;
    exec(&busy, "CREATE TABLE noise (id int, pad text); INSERT INTO noise SELECT g, repeat('n', 100) FROM generate_series(1, 20000) g;").await;
    let target = current_wal(&busy).await;
    assert!(
        target.bytes_since(before) > 1 << 20,
        "the other database should have written WAL"
    );
    wait_until(
        "the idle slot to confirm the other database's WAL",
        Duration::from_secs(30),
        || async { confirmed(&client, "tidemark_idle").await >= target },
    )
    .await;
    assert!(
        reader.events.is_empty(),
        "no events for another database's changes"
    );
    reader.stop().await;
}

#[tokio::test]
async fn heartbeat_moves_the_slot_and_emits_no_event() {
    let (db, client) = database("heartbeat").await;
    exec(&client, "CREATE TABLE quiet (id int PRIMARY KEY)").await;
    let reader = Running::start(
        config(&db, "heartbeat", "heartbeat_interval_ms = 200"),
        &client,
    )
    .await;
    let before = confirmed(&client, "tidemark_heartbeat").await;
    let heartbeat_wal = current_wal(&client).await;
    wait_until(
        "heartbeats to be confirmed",
        Duration::from_secs(20),
        || async { confirmed(&client, "tidemark_heartbeat").await > before.max(heartbeat_wal) },
    )
    .await;
    assert!(reader.events.is_empty(), "heartbeats are not events");
    let stats = reader.stop().await;
    assert_eq!(stats.events, 0);
}

#[tokio::test]
async fn wal_sender_timeout_never_kills_an_idle_healthy_connection() {
    // The server drops clients silent for 2 s; tidemark's own status interval is 60 s, so only
    // its immediate answers to keepalive requests keep the connection alive.
    let cluster = tidemark::testing::PgCluster::start_with(&[("wal_sender_timeout", "2s")])
        .unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("timeout")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let text = format!(
        "name = \"timeout\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 60000\n",
        db.url()
    );
    let config = tidemark::config::Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reader = Running::start(config, &client).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    exec(&client, "INSERT INTO t VALUES (1)").await;
    reader.wait_for_events(1).await;
    let stats = reader.stop().await;
    assert_eq!(
        stats.sessions, 1,
        "the connection was lost and re-opened: {stats:?}"
    );
}

/// Delays every 100th event by 15 ms, so a 20,000-row transaction takes ~3 s to deliver.
struct SlowOutput(tidemark::testing::MemoryOutput, u64);

impl tidemark::output::OffsetStore for SlowOutput {}

impl tidemark::output::EventOutput for SlowOutput {
    async fn send(
        &mut self,
        event: &tidemark::domain::event::ChangeEvent,
    ) -> Result<(), tidemark::output::OutputError> {
        self.1 += 1;
        if self.1 % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        self.0.send(event).await
    }
    async fn commit(&mut self, end: Lsn) -> Result<(), tidemark::output::OutputError> {
        self.0.commit(end).await
    }
    fn abort(&mut self) {
        self.0.abort()
    }
    fn acknowledged(&self) -> Lsn {
        self.0.acknowledged()
    }
    async fn flush(&mut self) -> Result<(), tidemark::output::OutputError> {
        self.0.flush().await
    }
}

#[tokio::test]
async fn a_transaction_slower_to_deliver_than_wal_sender_timeout_keeps_its_connection() {
    let cluster = tidemark::testing::PgCluster::start_with(&[("wal_sender_timeout", "2s")])
        .unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("slow")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let text = format!(
        "name = \"slow\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 500\n",
        db.url()
    );
    let config = tidemark::config::Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    exec(
        &client,
        "INSERT INTO t SELECT g FROM generate_series(1, 20000) g",
    )
    .await;
    let (memory, events) = tidemark::testing::MemoryOutput::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut output = SlowOutput(memory, 0);
        tidemark::capture::reader::run_reader(&config, &mut output, stopped).await
    });
    wait_until("20000 events", Duration::from_secs(60), || {
        let events = events.clone();
        async move { events.len() >= 20000 }
    })
    .await;
    // One more change must travel over the same connection.
    exec(&client, "INSERT INTO t VALUES (0)").await;
    wait_until("the next event", Duration::from_secs(60), || {
        let events = events.clone();
        async move { events.len() > 20000 }
    })
    .await;
    let _ = stop.send(true);
    let stats = task
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.sessions, 1,
        "the server dropped the connection during the transaction: {stats:?}"
    );
    assert_eq!(events.len(), 20001);
}
