//! Faults injected with librdkafka's mock cluster (a real broker cannot fail on demand):
//! a broker outage during a write burst loses nothing and confirms nothing undelivered.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::consume;
use common::*;
use rdkafka::mocking::MockCluster;
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;

#[tokio::test]
async fn broker_outage_during_a_write_burst_loses_nothing() {
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("mock cluster: {e}"));
    mock.create_topic("kfault.public.burst", 2, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = mock.bootstrap_servers();
    let (db, client) = database("kafka_outage").await;
    exec(&client, "CREATE TABLE burst (id int PRIMARY KEY, pad text)").await;
    let text = format!(
        "name = \"kfault\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n[kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\npartitions = 2\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no kafka"));
    let context = EnvelopeContext::new("kfault", &db.name);
    let output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, task) = spawn_reader(config, output, &client).await;

    exec(
        &client,
        "INSERT INTO burst SELECT g, 'before' FROM generate_series(1, 100) g",
    )
    .await;
    let before_outage = current_wal(&client).await;
    wait_until(
        "the first rows to be confirmed",
        Duration::from_secs(30),
        || async { confirmed(&client, "tidemark_kfault").await >= before_outage },
    )
    .await;

    mock.broker_down(1).unwrap_or_else(|e| panic!("{e}"));
    for batch in 0..10 {
        exec(
            &client,
            &format!(
                "INSERT INTO burst SELECT g, 'during' FROM generate_series({}, {}) g",
                101 + batch * 50,
                150 + batch * 50
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after_burst = current_wal(&client).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        confirmed(&client, "tidemark_kfault").await < after_burst,
        "the burst was confirmed to PostgreSQL while the broker was down"
    );
    mock.broker_up(1).unwrap_or_else(|e| panic!("{e}"));

    let records = consume(&bootstrap, "kfault.public.burst", 600).await;
    let ids: BTreeSet<i64> = records
        .iter()
        .filter_map(|r| r.value.as_ref().and_then(|v| v["after"]["id"].as_i64()))
        .collect();
    assert_eq!(ids, (1..=600).collect::<BTreeSet<i64>>());
    wait_until(
        "the burst to be confirmed after the broker came back",
        Duration::from_secs(30),
        || async { confirmed(&client, "tidemark_kfault").await >= after_burst },
    )
    .await;
    let _ = stop.send(true);
    let stats = task
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.events, 600);
}

#[tokio::test]
async fn produce_errors_and_a_slow_broker_are_retried_without_loss_or_duplicates() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("mock cluster: {e}"));
    mock.create_topic("kslow.public.r", 2, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = mock.bootstrap_servers();
    let (db, client) = database("kafka_slow").await;
    exec(&client, "CREATE TABLE r (id int PRIMARY KEY)").await;
    let text = format!(
        "name = \"kslow\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n[kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no kafka"));
    let context = EnvelopeContext::new("kslow", &db.name);
    let output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, task) = spawn_reader(config, output, &client).await;
    // The next produce requests fail with retriable errors, and every round trip is slow.
    mock.broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap_or_else(|e| panic!("{e}"));
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    for batch in 0..10 {
        exec(
            &client,
            &format!(
                "INSERT INTO r SELECT g FROM generate_series({}, {}) g",
                batch * 20 + 1,
                batch * 20 + 20
            ),
        )
        .await;
    }
    let written = current_wal(&client).await;
    wait_until(
        "everything to be acknowledged and confirmed",
        Duration::from_secs(60),
        || async { confirmed(&client, "tidemark_kslow").await >= written },
    )
    .await;
    mock.broker_round_trip_time(1, Duration::ZERO)
        .unwrap_or_else(|e| panic!("{e}"));
    let records = consume(&bootstrap, "kslow.public.r", 200).await;
    let ids: BTreeSet<i64> = records
        .iter()
        .filter_map(|r| r.value.as_ref().and_then(|v| v["after"]["id"].as_i64()))
        .collect();
    assert_eq!(ids, (1..=200).collect::<BTreeSet<i64>>());
    let _ = stop.send(true);
    let stats = task
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.events, 200);
    let all =
        common::kafka::drain(&bootstrap, "kslow.public.r", false, Duration::from_secs(1)).await;
    assert_eq!(all.len(), 200, "retries wrote duplicates");
}
