//! Kafka helpers for the integration tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message};

static NEXT_GROUP: AtomicU32 = AtomicU32::new(0);

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<serde_json::Value>,
    /// The value's bytes (Avro records are not JSON: `value` is none for them).
    pub raw: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    pub fn key_json(&self) -> serde_json::Value {
        self.key
            .as_ref()
            .and_then(|k| serde_json::from_slice(k).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `topic` from the beginning until `count` records arrived (or panics after 60 s).
/// The consumer blocks, so it runs on the blocking pool and the connector keeps running.
pub async fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    consume_until_isolated(
        bootstrap,
        topic,
        Duration::from_secs(60),
        false,
        move |records| records.len() >= count,
    )
    .await
}

/// Reads `topic` from the beginning until `done` holds for everything read so far (or
/// panics after `limit`).
pub async fn consume_until(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    consume_until_isolated(bootstrap, topic, limit, false, done).await
}

/// [`consume_until`], optionally with `isolation.level=read_committed`.
pub async fn consume_until_isolated(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    read_committed: bool,
    done: impl Fn(&[Record]) -> bool + Send + 'static,
) -> Vec<Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic, limit, read_committed, done))
        .await
        .unwrap_or_else(|e| panic!("consumer thread: {e}"))
}

fn read_topic(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    read_committed: bool,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // A fresh group per read: reusing one would wait out the last member's session.
        .set(
            "group.id",
            format!(
                "test-{topic}-{}-{}",
                std::process::id(),
                NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
            ),
        )
        .set("auto.offset.reset", "earliest")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("enable.auto.commit", "false")
        // The topic may be created after subscribing: look for it often.
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let started = Instant::now();
    let mut records = Vec::new();
    // `done` runs when the topic is idle and at most every 100 ms while records stream in:
    // it may look at every record, and running it per record is quadratic.
    let mut checked: Option<Instant> = None;
    loop {
        if checked.is_none_or(|at| at.elapsed() >= Duration::from_millis(100)) {
            if done(&records) {
                break;
            }
            checked = Some(Instant::now());
        }
        assert!(
            started.elapsed() < limit,
            "{} records on {topic} after {limit:?}, not yet all expected",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            checked = None;
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // Subscribed before the connector created the topic: keep polling.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                continue;
            }
            // A broker just resumed or restarted: librdkafka reconnects by itself and reports
            // the outage meanwhile; the time limit still bounds the wait.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure
                    )
                ) =>
            {
                eprintln!("consuming {topic}: {e} (reconnecting)");
                continue;
            }
            Err(e) => panic!("consuming {topic}: {e}"),
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        (header.key.to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message
                .payload()
                .filter(|p| p.first() != Some(&0))
                .map(|p| {
                    serde_json::from_slice(p).unwrap_or_else(|e| panic!("value is not JSON: {e}"))
                }),
            raw: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    records
}

/// Reads `topic` from the beginning until no new record arrives for `quiet` (at most 60 s).
pub async fn drain(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    quiet: Duration,
) -> Vec<Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let last_change = std::cell::Cell::new((Instant::now(), 0usize));
        read_topic(
            &bootstrap,
            &topic,
            Duration::from_secs(60),
            read_committed,
            |records| {
                let (at, seen) = last_change.get();
                if records.is_empty() {
                    // Quiet only counts once the consumer has started receiving.
                    false
                } else if records.len() != seen {
                    last_change.set((Instant::now(), records.len()));
                    false
                } else {
                    at.elapsed() >= quiet
                }
            },
        )
    })
    .await
    .unwrap_or_else(|e| panic!("consumer thread: {e}"))
}

/// The end offset (high watermark) of each of `partitions` partitions of `topic`.
pub async fn partition_ends(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i32, i64)> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap_or_else(|e| panic!("consumer: {e}"));
        (0..partitions)
            .map(|partition| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {topic}[{partition}]: {e}"));
                (partition, high)
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| panic!("consumer thread: {e}"))
}

/// Deletes `topic` with Kafka's admin API (as an operator would under a running connector).
pub async fn delete_topic(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let results = admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("deleting {topic}: {e}"));
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("deleting {name}: {code:?}"));
    }
}

/// Creates `topic` (one partition) and writes `records` (key, value) to it, as another
/// program (or an older tidemark) would have.
pub async fn produce(bootstrap: &str, topic: &str, records: &[(&[u8], &[u8])]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("admin client: {e}"));
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
    for result in created {
        match result {
            // Left by an earlier run against the same broker: written to again.
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("creating {name}: {code:?}"),
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(topic).key(*key).payload(*value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("writing to {topic}: {e}"));
    }
}
