//! Helpers shared by the benches: the broker's own ingest ceiling (a bare producer) and
//! small utilities.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::sync::watch;

use tidemark::config::Config;
use tidemark::domain::event::ChangeEvent;
use tidemark::domain::lsn::Lsn;
use tidemark::output::{EventOutput, OffsetStore, OutputError};

/// Any output, stopping the reader once `target` events were sent and committed.
pub struct CountingOutput<O> {
    inner: O,
    target: u64,
    /// Events sent so far.
    pub seen: u64,
    done: watch::Sender<bool>,
}

impl<O> CountingOutput<O> {
    /// `inner`, counting to `target`; the receiver is the reader's shutdown signal.
    pub fn new(inner: O, target: u64) -> (CountingOutput<O>, watch::Receiver<bool>) {
        let (done, stop) = watch::channel(false);
        let output = CountingOutput {
            inner,
            target,
            seen: 0,
            done,
        };
        (output, stop)
    }
}

impl<O: EventOutput> OffsetStore for CountingOutput<O> {
    fn resume_position(&self) -> Lsn {
        self.inner.resume_position()
    }
}

impl<O: EventOutput> EventOutput for CountingOutput<O> {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        self.seen += 1;
        self.inner.send(event).await
    }
    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.inner.commit(end_lsn).await?;
        if self.seen >= self.target {
            self.inner.flush().await?;
            let _ = self.done.send(true);
        }
        Ok(())
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
    fn acknowledged(&self) -> Lsn {
        self.inner.acknowledged()
    }
    async fn flush(&mut self) -> Result<(), OutputError> {
        self.inner.flush().await
    }
    async fn shutdown(&mut self) -> Result<(), OutputError> {
        self.inner.shutdown().await
    }
}

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

/// The benches' broker (one Apache Kafka node with the full JIT, started once per process),
/// warmed up before anything is measured: a fresh JVM runs interpreted until its JIT has
/// compiled the produce path, so whatever ran first against it measured the warm-up (the
/// first round into Kafka ran at about 0.6× the later ones). One million 500-byte records
/// from a bare producer, untimed, to a topic of their own.
pub async fn warm_broker() -> anyhow::Result<String> {
    let brokers = tidemark::testing::KafkaBroker::shared_for_benches()?
        .bootstrap
        .clone();
    create_topic(&brokers, "bench_warm_up").await?;
    let started = Instant::now();
    tokio::task::block_in_place(|| bare_producer(&brokers, "bench_warm_up", 1_000_000, 8, 500))?;
    eprintln!(
        "broker warmed up with 1,000,000 records in {:.1?}",
        started.elapsed()
    );
    Ok(brokers)
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
/// key and value sizes, with tidemark's three position headers: the broker's own ingest
/// ceiling for the same records.
pub fn bare_producer(
    brokers: &str,
    topic: &str,
    rows: u64,
    key_bytes: usize,
    value_bytes: usize,
) -> anyhow::Result<Duration> {
    use rdkafka::message::{Header, OwnedHeaders};
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
    let producer: BaseProducer = tidemark::kafka::producer::client_config(&kafka).create()?;
    let value = vec![b'x'; value_bytes];
    let start = Instant::now();
    for i in 0..rows {
        let mut key = format!("{{\"id\":{i}}}").into_bytes();
        key.resize(key_bytes.max(key.len()), b' ');
        // The three position headers tidemark puts on every record, with values of the
        // same sizes: the same records on the wire.
        let (mut seq, mut position) = (itoa::Buffer::new(), itoa::Buffer::new());
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "tidemark.commit_lsn",
                value: Some(position.format(24_000_000u64 + i).as_bytes()),
            })
            .insert(Header {
                key: "tidemark.seq",
                value: Some(seq.format(i).as_bytes()),
            })
            .insert(Header {
                key: "tidemark.xid",
                value: Some(b"0"),
            });
        let mut record = BaseRecord::to(topic)
            .key(&key[..])
            .payload(&value[..])
            .headers(headers);
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

/// CPU seconds (user + system) used so far by this process (`getrusage(RUSAGE_SELF)`:
/// every thread, librdkafka's included) or by its waited-for children
/// (`RUSAGE_CHILDREN`).
pub fn cpu_seconds(children: bool) -> f64 {
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: getrusage only writes the struct it is given, which is a plain C struct that
    // all-zero bytes initialise validly.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A `/proc/<pid>/status` field in kB (`VmHWM` is the peak resident set, `VmRSS` the
/// current one), as MiB.
pub fn status_mib(pid: &str, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// Resets this process's peak resident set (`VmHWM`) to its current size, so a later
/// reading covers only what ran after.
pub fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(())
}

/// `program` from the cluster's binaries (`pgbench`, `pg_recvlogical`, …) with the
/// connection arguments for the cluster's superuser.
pub fn client_command(
    cluster: &tidemark::testing::PgCluster,
    program: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(cluster.binary(program));
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port.to_string(),
        "-U",
        "postgres",
    ]);
    command
}

/// CPU seconds used so far by every process named `comm` (`postgres`, `java`) and by the
/// children they reaped: for each such process whose parent has another name (the
/// postmaster, the broker), its own time and its reaped children's (`cutime`, `cstime`),
/// plus the own time of its children still running. Backends that exited between two
/// readings are counted through their postmaster, so the difference of two readings is
/// what the server used in between.
pub fn process_cpu_seconds(comm: &str) -> f64 {
    struct Stat {
        comm: String,
        ppid: u32,
        own: u64,
        reaped: u64,
    }
    let read = |pid: u32| -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            comm: text.get(open + 1..close)?.to_owned(),
            ppid: number(1)? as u32,
            own: number(11)? + number(12)?,
            reaped: number(13)? + number(14)?,
        })
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let stats: std::collections::HashMap<u32, Stat> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read(pid)?)))
        .filter(|(_, stat)| stat.comm == comm)
        .collect();
    let ticks: u64 = stats
        .values()
        .map(|stat| match stats.contains_key(&stat.ppid) {
            true => stat.own,
            false => stat.own + stat.reaped,
        })
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}
