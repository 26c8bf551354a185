//! End-to-end drain: the same backlog of row changes in identical slots, drained by
//! tidemark (decoded, assembled, serialized to JSON, discarded; and again serialized to Avro
//! in the default Connect mapping with Confluent's framing, as `--output null:avro` does)
//! and by `pg_recvlogical`
//! (pgoutput with the same options, raw bytes to /dev/null), alternating, in one run.
//! Reports rows/s of each and the ratio. `pg_recvlogical` is the walsender's own ceiling: the
//! server decodes WAL single-threaded, and that is the rate no client can beat.
//!
//! Two row widths, each with its own table, publication, backlog and slots: narrow (~100-byte
//! rows) and wide (~1 KB rows), 100 rows per transaction. Beside the rates, the CPU time
//! each consumer spent per event: tidemark's own (`getrusage` of this process across the
//! drain, librdkafka's threads included) and `pg_recvlogical`'s (the child's). The
//! walsender's own CPU is on the server's side of both and in neither figure.
//!
//! Into Kafka: one Apache Kafka broker (a JVM of its own, full JIT) takes tidemark at least
//! once, tidemark exactly once, and a bare librdkafka producer sending records of the same
//! sizes (the broker's ceiling here). The broker shares the two cores with the drain.
//!
//! Against Debezium: Debezium's own PostgreSQL connector (its embedded engine, default
//! settings, `snapshot.mode=no_data`) drains an identical slot, each record serialised by
//! Kafka Connect's `JsonConverter` without schemas (as tidemark's null output writes JSON)
//! and discarded. Its rate is taken from its first record to its last and its CPU over the
//! same span (the JVM's start-up and the connector's connecting left out, which favours
//! Debezium); tidemark's figures include its start.
//!
//! `cargo bench --bench drain`; `DRAIN_ROWS` (default 500000 narrow rows),
//! `DRAIN_WIDE_ROWS` (default 200000), `DRAIN_ROUNDS` (default 3), `DRAIN_KAFKA=0` (skip
//! the broker) and `DRAIN_DEBEZIUM=0` (skip Debezium) change the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tidemark::capture::reader::run_reader;
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::output::null::{NullFormat, NullOutput};
use tidemark::output::{EventOutput, JsonLinesOutput};
use tidemark::testing::{DEBEZIUM_VERSION, PgCluster, drain_debezium};

mod common;
use common::{
    CountingOutput, bare_producer, client_command, cpu_seconds, create_topic, env_number, median,
    record_size,
};

/// Runs the reader into `inner` until `rows` events were committed; returns how many it saw.
async fn drain_into<O: EventOutput>(config: &Config, inner: O, rows: u64) -> anyhow::Result<u64> {
    let (mut output, stop) = CountingOutput::new(inner, rows);
    run_reader(config, &mut output, stop).await?;
    Ok(output.seen)
}

/// One row width: its table, how many rows its backlog has, and the SQL of one row's
/// columns after the key (`g` is the row number).
struct Width {
    name: &'static str,
    rows: u64,
    columns: &'static str,
    values: &'static str,
}

impl Width {
    fn table(&self) -> String {
        format!("orders_{}", self.name)
    }
    fn publication(&self) -> String {
        format!("bench_{}", self.name)
    }
}

/// Where tidemark's events go in a drain.
enum Sink<'a> {
    /// Debezium's JSON without schemas, discarded.
    Null,
    /// Avro in the default (Connect, Debezium's) mapping, Confluent-framed, discarded.
    NullAvro,
    Kafka {
        brokers: &'a str,
        exactly_once: bool,
    },
}

/// How long a drain took and the CPU seconds the draining side used.
struct Drained {
    elapsed: Duration,
    cpu: f64,
}

async fn drain_with_tidemark(
    cluster: &PgCluster,
    db: &str,
    width: &Width,
    slot: &str,
    sink: Sink<'_>,
) -> anyhow::Result<Drained> {
    let rows = width.rows;
    let kafka = match &sink {
        Sink::Null | Sink::NullAvro => String::new(),
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
        "name = \"{slot}\"\n[source]\nurl = \"{}\"\nslot = \"{slot}\"\npublication = \"{}\"\nsnapshot = \"never\"\n{kafka}",
        cluster.url("postgres", db),
        width.publication()
    );
    let config = Config::from_toml_with_env(&text, "bench", std::iter::empty())?;
    let context = EnvelopeContext::new(slot, db);
    let cpu_before = cpu_seconds(false);
    let start = Instant::now();
    let seen = match sink {
        Sink::Null => {
            let inner = JsonLinesOutput::new(tokio::io::sink(), "null", context);
            drain_into(&config, inner, rows).await?
        }
        Sink::NullAvro => {
            let inner = NullOutput::new(NullFormat::Avro, context);
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
    let cpu = cpu_seconds(false) - cpu_before;
    anyhow::ensure!(seen >= rows, "tidemark saw {seen} of {rows} rows");
    Ok(Drained { elapsed, cpu })
}

fn drain_with_pg_recvlogical(
    cluster: &PgCluster,
    db: &str,
    width: &Width,
    slot: &str,
    end: &str,
) -> anyhow::Result<Drained> {
    let cpu_before = cpu_seconds(true);
    let start = Instant::now();
    let out = client_command(cluster, "pg_recvlogical")
        .args(["-d", db])
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
            &format!("publication_names={}", width.publication()),
            "-o",
            "messages=true",
            "-o",
            "streaming=on",
        ])
        .output()?;
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(true) - cpu_before;
    anyhow::ensure!(
        out.status.success(),
        "pg_recvlogical failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Drained { elapsed, cpu })
}

/// Medians of one width's rounds.
#[derive(Default)]
struct Rounds {
    rates: BTreeMap<&'static str, Vec<f64>>,
    cpu_per_event: BTreeMap<&'static str, Vec<f64>>,
    sizes: Option<(usize, usize)>,
}

impl Rounds {
    fn record(&mut self, what: &'static str, rows: u64, drained: &Drained) -> f64 {
        let rate = rows as f64 / drained.elapsed.as_secs_f64();
        self.rates.entry(what).or_default().push(rate);
        self.cpu_per_event
            .entry(what)
            .or_default()
            .push(drained.cpu * 1e6 / rows as f64);
        rate
    }
    fn rate(&self, what: &str) -> f64 {
        self.rates
            .get(what)
            .cloned()
            .map(median)
            .unwrap_or(f64::NAN)
    }
    fn cpu(&self, what: &str) -> f64 {
        self.cpu_per_event
            .get(what)
            .cloned()
            .map(median)
            .unwrap_or(f64::NAN)
    }
}

async fn run_width(
    cluster: &PgCluster,
    db: &tidemark::testing::TestDatabase,
    width: &Width,
    rounds: u64,
    brokers: Option<&str>,
    with_debezium: bool,
) -> anyhow::Result<Rounds> {
    let client = db.connect().await?;
    let (table, publication) = (width.table(), width.publication());
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, {}); CREATE PUBLICATION {publication} FOR TABLE {table};",
            width.columns
        ))
        .await?;
    let slot_names = |i: u64| {
        ["tm_null", "tm_avro", "tm_kafka", "tm_eos", "recv", "dbz"]
            .map(|k| format!("{k}_{}_{i}", width.name))
    };
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
    let rows = width.rows;
    let transactions = rows / 100;
    let load_start = Instant::now();
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP \
               INSERT INTO {table} SELECT g, {} FROM generate_series(i * 100, i * 100 + 99) g; COMMIT; END LOOP; END $$;",
            transactions - 1,
            width.values
        ))
        .await?;
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    eprintln!(
        "{} backlog: {rows} rows in {transactions} transactions, written in {:.1?}",
        width.name,
        load_start.elapsed()
    );
    let mut measured = Rounds::default();
    for i in 0..rounds {
        let [
            null_slot,
            avro_slot,
            kafka_slot,
            eos_slot,
            recv_slot,
            debezium_slot,
        ] = slot_names(i);
        let recv = drain_with_pg_recvlogical(cluster, &db.name, width, &recv_slot, &end)?;
        let recv_rate = measured.record("pg_recvlogical", rows, &recv);
        let null = drain_with_tidemark(cluster, &db.name, width, &null_slot, Sink::Null).await?;
        let null_rate = measured.record("tidemark_null", rows, &null);
        let avro =
            drain_with_tidemark(cluster, &db.name, width, &avro_slot, Sink::NullAvro).await?;
        let avro_rate = measured.record("tidemark_avro_null", rows, &avro);
        let mut line = format!(
            "{} round {i}: pg_recvlogical {recv_rate:.0}/s, tidemark→null {null_rate:.0}/s, tidemark Avro→null {avro_rate:.0}/s",
            width.name
        );
        if with_debezium {
            let settings = [
                ("topic.prefix", debezium_slot.as_str()),
                ("slot.name", debezium_slot.as_str()),
                ("publication.name", publication.as_str()),
                ("publication.autocreate.mode", "disabled"),
                ("snapshot.mode", "no_data"),
                ("table.include.list", &format!("public.{table}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let drained = drain_debezium(db, &settings, rows, Duration::from_secs(1800)).await?;
            let debezium = Drained {
                elapsed: drained.first_to_last,
                cpu: drained.cpu_first_to_last.as_secs_f64(),
            };
            let debezium_rate = measured.record("debezium", rows, &debezium);
            line.push_str(&format!(", Debezium→discard {debezium_rate:.0}/s"));
        }
        if let Some(kafka_brokers) = brokers {
            let kafka = drain_with_tidemark(
                cluster,
                &db.name,
                width,
                &kafka_slot,
                Sink::Kafka {
                    brokers: kafka_brokers,
                    exactly_once: false,
                },
            )
            .await?;
            let kafka_rate = measured.record("tidemark_kafka", rows, &kafka);
            let (key_bytes, value_bytes) = match measured.sizes {
                Some(sizes) => sizes,
                None => {
                    let topic = format!("{kafka_slot}.public.{table}");
                    let sizes = tokio::task::block_in_place(|| record_size(kafka_brokers, &topic))?;
                    measured.sizes = Some(sizes);
                    sizes
                }
            };
            let bare_topic = format!("bare_{}_{i}", width.name);
            create_topic(kafka_brokers, &bare_topic).await?;
            let bare = tokio::task::block_in_place(|| {
                bare_producer(kafka_brokers, &bare_topic, rows, key_bytes, value_bytes)
            })?;
            let bare_rate = rows as f64 / bare.as_secs_f64();
            measured
                .rates
                .entry("bare_kafka")
                .or_default()
                .push(bare_rate);
            let eos = drain_with_tidemark(
                cluster,
                &db.name,
                width,
                &eos_slot,
                Sink::Kafka {
                    brokers: kafka_brokers,
                    exactly_once: true,
                },
            )
            .await?;
            let eos_rate = measured.record("tidemark_eos", rows, &eos);
            line.push_str(&format!(
                ", bare→Kafka {bare_rate:.0}/s, tidemark→Kafka {kafka_rate:.0}/s, tidemark exactly-once→Kafka {eos_rate:.0}/s"
            ));
        }
        eprintln!("{line}");
    }
    Ok(measured)
}

fn print_width(width: &Width, rounds: u64, m: &Rounds, kafka: bool, debezium: bool) {
    let (key_bytes, value_bytes) = m.sizes.unwrap_or_default();
    println!(
        "{} rows: {} rows, 100 rows per transaction, {rounds} rounds (median rows/s; CPU µs per event of the draining process); Kafka records: {key_bytes} B keys, {value_bytes} B JSON values",
        width.name, width.rows
    );
    println!(
        "  pg_recvlogical (walsender ceiling)          {:>10.0}                                   CPU {:>5.1} µs/event",
        m.rate("pg_recvlogical"),
        m.cpu("pg_recvlogical")
    );
    println!(
        "  tidemark, JSON to null                      {:>10.0}  ratio to pg_recvlogical    {:.2}  CPU {:>5.1} µs/event",
        m.rate("tidemark_null"),
        m.rate("tidemark_null") / m.rate("pg_recvlogical"),
        m.cpu("tidemark_null")
    );
    println!(
        "  tidemark, Avro (Connect mapping) to null    {:>10.0}  ratio to pg_recvlogical    {:.2}  CPU {:>5.1} µs/event",
        m.rate("tidemark_avro_null"),
        m.rate("tidemark_avro_null") / m.rate("pg_recvlogical"),
        m.cpu("tidemark_avro_null")
    );
    if debezium {
        println!(
            "  Debezium {DEBEZIUM_VERSION}, JSON to a discarding consumer {:>10.0}  tidemark's rate ×{:.2}, per core ×{:.2}  CPU {:>5.1} µs/event",
            m.rate("debezium"),
            m.rate("tidemark_null") / m.rate("debezium"),
            m.cpu("debezium") / m.cpu("tidemark_null"),
            m.cpu("debezium")
        );
        println!(
            "    tidemark Avro (Connect mapping) against it: rate ×{:.2}, per core ×{:.2}",
            m.rate("tidemark_avro_null") / m.rate("debezium"),
            m.cpu("debezium") / m.cpu("tidemark_avro_null"),
        );
    }
    if kafka {
        let ceiling = m.rate("pg_recvlogical").min(m.rate("bare_kafka"));
        println!(
            "  bare producer → Apache Kafka (its ceiling)  {:>10.0}",
            m.rate("bare_kafka")
        );
        println!(
            "  tidemark → Apache Kafka, at-least-once      {:>10.0}  ratio to the lower ceiling {:.2}  CPU {:>5.1} µs/event",
            m.rate("tidemark_kafka"),
            m.rate("tidemark_kafka") / ceiling,
            m.cpu("tidemark_kafka")
        );
        println!(
            "  tidemark → Apache Kafka, exactly-once       {:>10.0}  ratio to at-least-once     {:.2}  CPU {:>5.1} µs/event",
            m.rate("tidemark_eos"),
            m.rate("tidemark_eos") / m.rate("tidemark_kafka"),
            m.cpu("tidemark_eos")
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds = env_number("DRAIN_ROUNDS", 3);
    let widths = [
        Width {
            name: "narrow",
            rows: env_number("DRAIN_ROWS", 500_000),
            columns: "customer text, amount numeric(12,2), at timestamptz",
            values: "'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now()",
        },
        Width {
            name: "wide",
            rows: env_number("DRAIN_WIDE_ROWS", 200_000),
            columns: "customer text, amount numeric(12,2), at timestamptz, note text",
            values: "'customer-' || lpad(g::text, 8, '0') || '-with-a-longer-name', g * 0.07, now(), repeat(md5(g::text), 28)",
        },
    ];
    let cluster = PgCluster::shared()?;
    let db = cluster.create_database("drain").await?;
    let brokers = if std::env::var("DRAIN_KAFKA").map_or(true, |v| v != "0") {
        Some(common::warm_broker().await?)
    } else {
        None
    };
    let with_debezium = std::env::var("DRAIN_DEBEZIUM").map_or(true, |v| v != "0");
    for width in &widths {
        let measured = run_width(
            cluster,
            &db,
            width,
            rounds,
            brokers.as_deref(),
            with_debezium,
        )
        .await?;
        print_width(width, rounds, &measured, brokers.is_some(), with_debezium);
    }
    Ok(())
}
