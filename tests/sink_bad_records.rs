//! Corrupt bytes on a change topic: the sink stops at the record, naming its topic,
//! partition and offset and how to move past it, and applies nothing after it (it never
//! skips data by itself). On Apache Kafka, with a PostgreSQL warehouse.

use crate::common;

use std::time::Duration;

use common::database;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tidemark::config::Config;
use tidemark::sink::SinkError;
use tidemark::sink::runner::{SinkOptions, run_sink};
use tidemark::testing::KafkaBroker;

const TOPIC: &str = "kcorrupt.public.t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_on_a_topic_stop_the_sink_at_their_offset_with_the_remedy() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let (warehouse, client) = database("sink_corrupt_wh").await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    admin
        .create_topics(
            [&NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    producer
        .send(
            BaseRecord::to(TOPIC)
                .key(&b"{\"id\":1}"[..])
                .payload(&b"\x00\xff not a change event"[..]),
        )
        .unwrap_or_else(|(e, _)| panic!("{e}"));
    producer
        .flush(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    let config = Config::from_toml_with_env(
        &format!(
            "name = \"kcorrupt\"\n[source]\nurl = \"{url}\"\n[kafka]\nbrokers = \"{}\"\nformat = \"json\"\n\
             [sink]\nkind = \"postgres\"\nurl = \"{url}\"\nbatch_ms = 200\n",
            broker.bootstrap,
            url = warehouse.url()
        ),
        "test",
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        run_sink(&config, SinkOptions::default(), stopped),
    )
    .await
    .unwrap_or_else(|_| panic!("the sink neither stopped nor applied within 90 s"));
    let error = match outcome {
        Err(error @ SinkError::Decode { .. }) => error.to_string(),
        other => panic!("expected the sink to stop at the corrupt record, got {other:?}"),
    };
    for part in [
        "kcorrupt.public.t/0@0",
        "Nothing after it was applied",
        "--to-offset 1",
        "__tidemark_offsets",
    ] {
        assert!(error.contains(part), "{part} not in: {error}");
    }
    // Nothing applied: no stored offset for the topic.
    let stored = common::text_rows(
        &client,
        "SELECT count(*)::text FROM public.__tidemark_offsets WHERE topic = 'kcorrupt.public.t'",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, vec![vec![Some("0".to_string())]]);
}
