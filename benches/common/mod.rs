//! Helpers shared by the benches: the broker's own ingest ceiling (a bare producer) and
//! small utilities.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tidemark::config::Config;

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `topic` (1 partition) through the admin API, as tidemark creates its topics, so
/// the bare producer does not wait for auto-creation.
pub async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    admin.create_topics([&topic], &AdminOptions::new()).await?;
    Ok(())
}

/// Key and value sizes of the first record on `topic`.
pub fn record_size(brokers: &str, topic: &str) -> anyhow::Result<(usize, usize)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("size-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            return Ok((message.key_len(), message.payload_len()));
        }
    }
    anyhow::bail!("no record on {topic} to measure")
}

/// A bare rdkafka producer with tidemark's settings sending `rows` records of the given
/// key and value sizes: the broker's own ingest ceiling.
pub fn bare_producer(
    brokers: &str,
    topic: &str,
    rows: u64,
    key_bytes: usize,
    value_bytes: usize,
) -> anyhow::Result<Duration> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let settings = Config::from_toml_with_env(
        &format!(
            "name = \"bare\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"{brokers}\"\n"
        ),
        "bench",
        std::iter::empty(),
    )?;
    let kafka = settings
        .kafka
        .ok_or_else(|| anyhow::anyhow!("no [kafka]"))?;
    let producer: BaseProducer = tidemark::kafka::output::client_config(&kafka).create()?;
    let value = vec![b'x'; value_bytes];
    let start = Instant::now();
    for i in 0..rows {
        let mut key = format!("{{\"id\":{i}}}").into_bytes();
        key.resize(key_bytes.max(key.len()), b' ');
        let mut record = BaseRecord::to(topic).key(&key[..]).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(start.elapsed())
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
