//! Exactly-once delivery on Apache Kafka: run 1 is killed (task abort) once Kafka shows its transactions committed;
//! run 2 streams from a copy of the slot taken before run 1, which is exactly what PostgreSQL
//! does after a crash that came before the position was confirmed: it resends everything.
//! Run 2 must skip all of it, and a `read_committed` consumer sees every change once.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::{consume_until_isolated, drain};
use common::*;
use tidemark::config::Config;
use tidemark::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::lsn::Lsn;
use tidemark::source::reader::{ReaderError, ReaderStats, run_reader};
use tidemark::testing::{KafkaBroker, KafkaNode, KafkaOptions, TcpProxy, free_port};
use tokio::sync::watch;
use tokio::task::JoinHandle;

async fn lsn(client: &tokio_postgres::Client, sql: &str) -> Lsn {
    let text: String = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    text.parse().unwrap_or_default()
}

async fn start(
    config: &Config,
    db_name: &str,
) -> (
    watch::Sender<bool>,
    JoinHandle<Result<ReaderStats, ReaderError>>,
) {
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no kafka"));
    let context = EnvelopeContext {
        prefix: config.name.clone(),
        connector_name: config.name.clone(),
        database: db_name.into(),
    };
    let mut output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let config = config.clone();
    let (stop, stopped) = watch::channel(false);
    (
        stop,
        tokio::spawn(async move { run_reader(&config, &mut output, stopped).await }),
    )
}

fn distinct_ids(records: &[common::kafka::Record]) -> BTreeSet<i64> {
    records
        .iter()
        .filter_map(|r| r.value.as_ref().and_then(|v| v["after"]["id"].as_i64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_kafka_commit_and_postgres_confirmation_duplicates_nothing() {
    let bootstrap = KafkaBroker::shared()
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clone();
    let (db, client) = database("kafka_eos").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, batch int)").await;
    let text = format!(
        "name = \"keos\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 600000\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = 2\n\
         [kafka.properties]\n\"transaction.timeout.ms\" = \"10000\"\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A copy of the slot at its start: run 2 streams from it, so PostgreSQL certainly resends
    // everything run 1 delivered, as after a crash before the position was confirmed.
    exec(
        &client,
        "SELECT pg_copy_logical_replication_slot('tidemark_keos', 'keos_rewound')",
    )
    .await;
    let mut rewound = config.clone();
    rewound.source.slot = "keos_rewound".into();

    let began = std::time::Instant::now();
    // Run 1: 30 transactions, then a crash as soon as Kafka shows them committed.
    let (_stop1, run1) = start(&config, &db.name).await;
    for batch in 0..30 {
        exec(
            &client,
            &format!(
                "INSERT INTO t SELECT g, {batch} FROM generate_series({}, {}) g",
                batch * 10 + 1,
                batch * 10 + 10
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = lsn(&client, "SELECT pg_current_wal_lsn()::text").await;
    consume_until_isolated(
        &bootstrap,
        "keos.public.t",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 300,
    )
    .await;
    run1.abort();
    let _ = run1.await;
    let rewound_at = lsn(&client, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'keos_rewound'").await;
    assert!(
        rewound_at < written,
        "the copied slot must precede run 1's changes"
    );

    eprintln!("run 1 and crash: {:?}", began.elapsed());
    // Run 2: PostgreSQL resends all of run 1's transactions; tidemark must skip them.
    let (stop2, run2) = start(&rewound, &db.name).await;
    eprintln!("run 2 connected: {:?}", began.elapsed());
    exec(
        &client,
        "INSERT INTO t SELECT g, 99 FROM generate_series(301, 310) g",
    )
    .await;
    consume_until_isolated(
        &bootstrap,
        "keos.public.t",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 310,
    )
    .await;
    eprintln!("run 2 delivered: {:?}", began.elapsed());
    let _ = stop2.send(true);
    let stats = run2
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.events, 10,
        "run 2 delivered only the new rows: {stats:?}"
    );

    eprintln!("run 2 stopped: {:?}", began.elapsed());
    let committed = drain(&bootstrap, "keos.public.t", true, Duration::from_secs(2)).await;
    assert_eq!(
        distinct_ids(&committed),
        (1..=310).collect::<BTreeSet<i64>>()
    );
    assert_eq!(
        committed.len(),
        310,
        "a read_committed consumer saw duplicates"
    );
    let after = lsn(&client, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'keos_rewound'").await;
    assert!(
        after >= written,
        "the slot did not move past the skipped transactions"
    );
}

/// The initial snapshot in exactly-once mode: read events committed in Kafka transactions
/// together with the snapshot progress, each row once for a `read_committed` consumer, and
/// the progress stored in the offsets topic as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_is_delivered_once_with_its_progress_in_the_transactions() {
    let bootstrap = KafkaBroker::shared()
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clone();
    let (db, client) = database("kafka_eos_snap").await;
    exec(
        &client,
        "CREATE TABLE s (id int PRIMARY KEY, batch int); \
         INSERT INTO s SELECT g, 0 FROM generate_series(1, 5000) g;",
    )
    .await;
    let text = format!(
        "name = \"ksnap\"\n[source]\nurl = \"{}\"\nstatus_interval_ms = 200\nsnapshot_chunk_pages = 2\n\
         snapshot_checkpoint_ms = 50\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = 2\n\
         [kafka.properties]\n\"transaction.timeout.ms\" = \"10000\"\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no kafka"));
    let context = EnvelopeContext {
        prefix: "ksnap".into(),
        connector_name: "ksnap".into(),
        database: db.name.clone(),
    };
    let mut output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run_config = config.clone();
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(async move { run_reader(&run_config, &mut output, stopped).await });
    let records = consume_until_isolated(
        &bootstrap,
        "ksnap.public.s",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 5000,
    )
    .await;
    let reads: Vec<&common::kafka::Record> = records
        .iter()
        .filter(|r| r.value.as_ref().is_some_and(|v| v["op"] == "r"))
        .collect();
    assert_eq!(reads.len(), 5000, "each row once");
    assert_eq!(
        reads
            .iter()
            .filter(|r| r
                .value
                .as_ref()
                .is_some_and(|v| v["source"]["snapshot"] == "last"))
            .count(),
        1
    );
    let _ = stop.send(true);
    let stats = run
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.snapshot_rows, 5000);
    let offsets = consume_until_isolated(
        &bootstrap,
        "ksnap.offsets",
        Duration::from_secs(30),
        true,
        |records| {
            records.iter().any(|r| {
                r.key_json()["snapshot"] == true
                    && r.value.as_ref().is_some_and(|v| v["phase"] == "complete")
            })
        },
    )
    .await;
    assert!(offsets.iter().any(|r| r.key_json()["connector"] == "ksnap" && r.key_json().get("snapshot").is_none()));
    drop(db);
}

/// A second instance with the same connector name (so the same `transactional.id`) fences
/// the first when it initializes transactions: the first stops at its next Kafka
/// transaction with a definite error naming the cause and the remedy, the second goes on
/// from what Kafka committed, and a `read_committed` consumer sees every change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_fences_the_first_which_stops_naming_the_cause() {
    let bootstrap = KafkaBroker::shared()
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clone();
    let (db, client) = database("kafka_eos_fence").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, batch int)").await;
    let text = format!(
        "name = \"kfence\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = 2\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The second instance reads its own copy of the slot (the first holds the slot).
    exec(
        &client,
        "SELECT pg_copy_logical_replication_slot('tidemark_kfence', 'kfence_second')",
    )
    .await;
    let mut second_config = config.clone();
    second_config.source.slot = "kfence_second".into();

    let (_stop1, run1) = start(&config, &db.name).await;
    exec(
        &client,
        "INSERT INTO t SELECT g, 1 FROM generate_series(1, 10) g",
    )
    .await;
    consume_until_isolated(
        &bootstrap,
        "kfence.public.t",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 10,
    )
    .await;

    // The second instance starts: its init_transactions fences the first.
    let (stop2, run2) = start(&second_config, &db.name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    exec(
        &client,
        "INSERT INTO t SELECT g, 2 FROM generate_series(11, 20) g",
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(60), run1)
        .await
        .unwrap_or_else(|_| panic!("the fenced instance did not stop within 60 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    let error = match first {
        Ok(stats) => panic!("the fenced instance ended without an error: {stats:?}"),
        Err(error) => error,
    };
    let message = error.to_string();
    eprintln!("the fenced instance stopped: {message}");
    assert!(
        !error.is_transient(),
        "a fenced producer is definite: {message}"
    );
    assert!(
        message.contains("transactional.id tidemark-kfence")
            && message.contains("one instance per connector"),
        "the error names the cause and the remedy: {message}"
    );

    consume_until_isolated(
        &bootstrap,
        "kfence.public.t",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 20,
    )
    .await;
    let _ = stop2.send(true);
    run2.await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("the second instance: {e}"));
    let committed = drain(&bootstrap, "kfence.public.t", true, Duration::from_secs(2)).await;
    assert_eq!(
        distinct_ids(&committed),
        (1..=20).collect::<BTreeSet<i64>>()
    );
    assert_eq!(
        committed.len(),
        20,
        "a read_committed consumer saw duplicates"
    );
}

/// A Kafka transaction the coordinator aborts because it outlived `transaction.timeout.ms`
/// (5 s) while the broker was unreachable (a proxy down for 12 s in the middle of one
/// 100,000-row source transaction). The producer then either goes on cleanly (the aborted
/// transaction is sent again) or stops with a definite, named error, and a second run goes
/// on from what Kafka committed. Either way a `read_committed` consumer sees every row once.
///
/// Ignored: its first run (2026-12-03) found an open problem. After the 12 s outage the
/// first run went on without an error, but 120 s later a `read_committed` consumer saw only
/// 16,088 of the 100,001 rows: part of the source transaction became visible and the rest
/// never arrived (17,477 in a second run with exactly-once delivery failures definite, as
/// before this change: the problem is older). Until that is understood and fixed, a coordinator-aborted transaction is
/// not shown to be handled; run it with `cargo nextest run --run-ignored all --test
/// kafka_exactly_once coordinator_aborts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "finds an open problem: rows missing after a coordinator abort (see the doc comment)"]
async fn a_transaction_the_coordinator_aborts_during_an_outage_is_sent_again_once() {
    const ROWS: i64 = 100_000;
    let broker_port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], broker_port)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options = KafkaOptions {
        advertised: Some(proxy.host_port()),
        listen_port: Some(broker_port),
        // The coordinator looks for timed-out transactions every second.
        properties: vec![(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms".into(),
            "1000".into(),
        )],
        ..KafkaOptions::default()
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node_dir = dir.path().join("kafka");
    let node = tokio::task::spawn_blocking(move || {
        KafkaNode::start(&node_dir, options).unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = node.bootstrap().to_owned();
    let (db, client) = database("kafka_eos_timeout").await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, batch int)").await;
    let text = format!(
        "name = \"ktimeout\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = 2\n\
         [kafka.properties]\n\"transaction.timeout.ms\" = \"5000\"\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    tidemark::source::setup::setup(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_stop1, run1) = start(&config, &db.name).await;
    // A first row, so the topic exists before the big transaction.
    exec(&client, "INSERT INTO t VALUES (0, 0)").await;
    consume_until_isolated(
        &bootstrap,
        "ktimeout.public.t",
        Duration::from_secs(60),
        true,
        |records| distinct_ids(records).len() == 1,
    )
    .await;
    let before: i64 = common::kafka::partition_ends(&bootstrap, "ktimeout.public.t", 2)
        .await
        .iter()
        .map(|(_, end)| end)
        .sum();
    exec(
        &client,
        &format!("INSERT INTO t SELECT g, 1 FROM generate_series(1, {ROWS}) g"),
    )
    .await;
    // The broker goes away once records of the big transaction are on it (uncommitted).
    wait_until(
        "records of the big transaction reached the broker",
        Duration::from_secs(60),
        || async {
            let now: i64 = common::kafka::partition_ends(&bootstrap, "ktimeout.public.t", 2)
                .await
                .iter()
                .map(|(_, end)| end)
                .sum();
            now > before + 1_000
        },
    )
    .await;
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.set_down(false);

    // Either the run goes on, or it stops naming the cause; then a second run goes on.
    let all = |records: &[common::kafka::Record]| distinct_ids(records).len() == ROWS as usize + 1;
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if run1.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let mut second = None;
    if outcome.is_ok() {
        let error = match run1.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok(stats) => panic!("the first run ended without an error: {stats:?}"),
            Err(error) => error,
        };
        eprintln!("the first run stopped: {error}");
        assert!(
            error
                .to_string()
                .contains("transactional.id tidemark-ktimeout"),
            "a definite error names the producer: {error}"
        );
        second = Some(start(&config, &db.name).await);
    } else {
        eprintln!("the first run went on after the abort");
    }
    consume_until_isolated(
        &bootstrap,
        "ktimeout.public.t",
        Duration::from_secs(120),
        true,
        all,
    )
    .await;
    let committed = drain(
        &bootstrap,
        "ktimeout.public.t",
        true,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        committed.len(),
        ROWS as usize + 1,
        "a read_committed consumer saw every row once"
    );
    if let Some((stop2, run2)) = second {
        let _ = stop2.send(true);
        run2.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("the second run: {e}"));
    }
    drop(node);
}
