//! End-to-end drain: the same backlog of row changes in identical slots, drained by
//! tidemark (decoded, assembled, serialized to JSON, discarded) and by `pg_recvlogical`
//! (pgoutput with the same options, raw bytes to /dev/null), alternating, in one run.
//! Reports rows/s of each and the ratio. `pg_recvlogical` is the walsender's own ceiling: the
//! server decodes WAL single-threaded, and that is the rate no client can beat.
//!
//! `cargo bench --bench drain`; `DRAIN_ROWS` (default 500000) and `DRAIN_ROUNDS` (default 3)
//! change the size. Rows are ~100 bytes, 100 per transaction.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use tidemark::config::Config;
use tidemark::event::{ChangeEvent, EnvelopeContext};
use tidemark::kafka::KafkaOutput;
use tidemark::lsn::Lsn;
use tidemark::output::{EventOutput, JsonLinesOutput, OutputError};
use tidemark::source::reader::run_reader;
use tidemark::testing::{KafkaBroker, PgCluster};

mod common;
use common::{bare_producer, create_topic, env_number, median, record_size};

/// Any output, stopping the reader once `target` events were sent and committed.
struct CountingOutput<O> {
    inner: O,
    target: u64,
    seen: u64,
    done: watch::Sender<bool>,
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
    fn resume_position(&self) -> Lsn {
        self.inner.resume_position()
    }
    async fn shutdown(&mut self) -> Result<(), OutputError> {
        self.inner.shutdown().await
    }
}

/// Runs the reader into `inner` until `rows` events were committed; returns how many it saw.
async fn drain_into<O: EventOutput>(config: &Config, inner: O, rows: u64) -> anyhow::Result<u64> {
    let (done, stop) = watch::channel(false);
    let mut output = CountingOutput {
        inner,
        target: rows,
        seen: 0,
        done,
    };
    run_reader(config, &mut output, stop).await?;
    Ok(output.seen)
}

/// Where tidemark's events go in a drain.
enum Sink<'a> {
    Null,
    Kafka {
        brokers: &'a str,
        exactly_once: bool,
    },
}

async fn drain_with_tidemark(
    cluster: &PgCluster,
    db: &str,
    slot: &str,
    rows: u64,
    sink: Sink<'_>,
) -> anyhow::Result<Duration> {
    let kafka = match &sink {
        Sink::Null => String::new(),
        Sink::Kafka {
            brokers,
            exactly_once,
        } => format!(
            "[kafka]\nbrokers = \"{brokers}\"\nformat = \"json\"\ntopic_prefix = \"{slot}\"\ndelivery = \"{}\"\n",
            if *exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            }
        ),
    };
    let text = format!(
        "name = \"{slot}\"\n[source]\nurl = \"{}\"\nslot = \"{slot}\"\npublication = \"bench\"\nsnapshot = \"never\"\n{kafka}",
        cluster.url("postgres", db)
    );
    let config = Config::from_toml_with_env(&text, "bench", std::iter::empty())?;
    let context = EnvelopeContext {
        prefix: slot.into(),
        connector_name: slot.into(),
        database: db.into(),
    };
    let start = Instant::now();
    let seen = match sink {
        Sink::Null => {
            let inner = JsonLinesOutput::new(tokio::io::sink(), "null", context);
            drain_into(&config, inner, rows).await?
        }
        Sink::Kafka { .. } => {
            let kafka = config
                .kafka
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no [kafka]"))?;
            let inner = KafkaOutput::connect(&kafka, context).await?;
            drain_into(&config, inner, rows).await?
        }
    };
    let elapsed = start.elapsed();
    anyhow::ensure!(seen >= rows, "tidemark saw {seen} of {rows} rows");
    Ok(elapsed)
}

fn drain_with_pg_recvlogical(
    cluster: &PgCluster,
    db: &str,
    slot: &str,
    end: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new(cluster.binary("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args([
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
            "--endpos",
            end,
        ])
        .args([
            "-o",
            "proto_version=2",
            "-o",
            "publication_names=bench",
            "-o",
            "messages=true",
            "-o",
            "streaming=on",
        ])
        .output()?;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "pg_recvlogical failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rows = env_number("DRAIN_ROWS", 500_000);
    let rounds = env_number("DRAIN_ROUNDS", 3);
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("drain").await?;
    let client = db.connect().await?;
    client
        .batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), at timestamptz); CREATE PUBLICATION bench FOR TABLE orders;")
        .await?;
    let slot_names = |i: u64| ["tm_null", "tm_kafka", "tm_eos", "recv"].map(|k| format!("{k}_{i}"));
    for i in 0..rounds {
        for slot in slot_names(i) {
            client
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot],
                )
                .await?;
        }
    }
    let transactions = rows / 100;
    let load_start = Instant::now();
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP \
               INSERT INTO orders SELECT g, 'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now() \
               FROM generate_series(i * 100, i * 100 + 99) g; COMMIT; END LOOP; END $$;",
            transactions - 1
        ))
        .await?;
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    eprintln!(
        "backlog: {rows} rows in {transactions} transactions, written in {:.1?}",
        load_start.elapsed()
    );

    // Kafka: tansu for at-least-once, librdkafka's mock cluster for exactly-once.
    let with_kafka = std::env::var("DRAIN_KAFKA").map_or(true, |v| v != "0");
    let tansu = if with_kafka {
        Some(KafkaBroker::shared()?.bootstrap.clone())
    } else {
        None
    };
    let mock = if with_kafka {
        Some(rdkafka::mocking::MockCluster::new(1)?)
    } else {
        None
    };
    // The bare producer sends records of the sizes tidemark produced (measured below).
    let mut sizes: Option<(usize, usize)> = None;

    let mut rates: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    for i in 0..rounds {
        let [null_slot, kafka_slot, eos_slot, recv_slot] = slot_names(i);
        let recv = drain_with_pg_recvlogical(cluster, &db.name, &recv_slot, &end)?;
        rates.entry("pg_recvlogical").or_default().push(rate(recv));
        let null = drain_with_tidemark(cluster, &db.name, &null_slot, rows, Sink::Null).await?;
        rates.entry("tidemark_null").or_default().push(rate(null));
        let mut line = format!(
            "round {i}: pg_recvlogical {:.0}/s, tidemark→null {:.0}/s",
            rate(recv),
            rate(null)
        );
        if let (Some(brokers), Some(mock)) = (&tansu, &mock) {
            let kafka = drain_with_tidemark(
                cluster,
                &db.name,
                &kafka_slot,
                rows,
                Sink::Kafka {
                    brokers,
                    exactly_once: false,
                },
            )
            .await?;
            rates.entry("tidemark_kafka").or_default().push(rate(kafka));
            let (key_bytes, value_bytes) = match sizes {
                Some(sizes) => sizes,
                None => {
                    let measured = tokio::task::block_in_place(|| {
                        record_size(brokers, &format!("{kafka_slot}.public.orders"))
                    })?;
                    sizes = Some(measured);
                    measured
                }
            };
            create_topic(brokers, &format!("bare_{i}")).await?;
            let bare = tokio::task::block_in_place(|| {
                bare_producer(brokers, &format!("bare_{i}"), rows, key_bytes, value_bytes)
            })?;
            rates.entry("bare_tansu").or_default().push(rate(bare));
            let mock_brokers = mock.bootstrap_servers();
            mock.create_topic(&format!("{eos_slot}.public.orders"), 1, 1)?;
            mock.create_topic(&format!("{eos_slot}.offsets"), 1, 1)?;
            mock.create_topic(&format!("bare_mock_{i}"), 1, 1)?;
            let bare_mock = tokio::task::block_in_place(|| {
                bare_producer(
                    &mock_brokers,
                    &format!("bare_mock_{i}"),
                    rows,
                    key_bytes,
                    value_bytes,
                )
            })?;
            rates.entry("bare_mock").or_default().push(rate(bare_mock));
            let eos = drain_with_tidemark(
                cluster,
                &db.name,
                &eos_slot,
                rows,
                Sink::Kafka {
                    brokers: &mock_brokers,
                    exactly_once: true,
                },
            )
            .await?;
            rates.entry("tidemark_eos").or_default().push(rate(eos));
            line.push_str(&format!(
                ", bare→tansu {:.0}/s, tidemark→tansu {:.0}/s, bare→mock {:.0}/s, tidemark exactly-once→mock {:.0}/s",
                rate(bare), rate(kafka), rate(bare_mock), rate(eos)
            ));
        }
        eprintln!("{line}");
    }
    let m = |k: &str| rates.get(k).cloned().map(median).unwrap_or(f64::NAN);
    let (key_bytes, value_bytes) = sizes.unwrap_or_default();
    println!(
        "drain bench: {rows} rows of ~100 B, 100 rows per transaction, {rounds} rounds (median rows/s); \
         Kafka records: {key_bytes} B keys, {value_bytes} B JSON values"
    );
    println!(
        "  pg_recvlogical (walsender ceiling)          {:>10.0}",
        m("pg_recvlogical")
    );
    println!(
        "  tidemark, JSON to null                      {:>10.0}  ratio to pg_recvlogical {:.2}",
        m("tidemark_null"),
        m("tidemark_null") / m("pg_recvlogical")
    );
    if tansu.is_some() {
        let ceiling = m("pg_recvlogical").min(m("bare_tansu"));
        println!(
            "  bare producer → tansu (broker ceiling)      {:>10.0}",
            m("bare_tansu")
        );
        println!(
            "  tidemark → tansu, at-least-once             {:>10.0}  ratio to the lower ceiling {:.2}",
            m("tidemark_kafka"),
            m("tidemark_kafka") / ceiling
        );
        let mock_ceiling = m("pg_recvlogical").min(m("bare_mock"));
        println!(
            "  bare producer → mock cluster                {:>10.0}",
            m("bare_mock")
        );
        println!(
            "  tidemark → mock cluster, exactly-once       {:>10.0}  ratio to the lower ceiling {:.2}",
            m("tidemark_eos"),
            m("tidemark_eos") / mock_ceiling
        );
    }
    Ok(())
}
