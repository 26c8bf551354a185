//! Exactly-once delivery on Apache Kafka: run 1 is killed (task abort) once Kafka shows its transactions committed;
//! run 2 streams from a copy of the slot taken before run 1, which is exactly what PostgreSQL
//! does after a crash that came before the position was confirmed: it resends everything.
//! Run 2 must skip all of it, and a `read_committed` consumer sees every change once.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::{consume_until_isolated, drain, produce};
use common::*;
use tidemark::capture::reader::{ReaderError, ReaderStats, run_reader};
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::domain::lsn::Lsn;
use tidemark::kafka::KafkaOutput;
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
    let context = EnvelopeContext::new(&config.name, db_name);
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
    let config = set_up(&text).await;
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
    let context = EnvelopeContext::new("ksnap", &db.name);
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
        "__tidemark-offsets.ksnap",
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

/// A connector upgraded from a release that kept its offsets in `<prefix>.offsets` (inside
/// the change topics' namespace) resumes from there: the new `__tidemark-offsets.<prefix>`
/// holds nothing for it yet, so the old topic is read, for the position and the snapshot
/// progress.
#[tokio::test]
async fn an_upgraded_connector_resumes_from_the_offsets_topic_of_the_release_before() {
    use tidemark::output::OffsetStore;
    let bootstrap = KafkaBroker::shared()
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clone();
    let stored = Lsn(0x1_2345_6789);
    let value = serde_json::json!({ "end_lsn": stored.as_u64(), "position": stored.to_string() });
    let progress = br#"{"phase":"complete"}"#;
    produce(
        &bootstrap,
        "kupgrade.offsets",
        &[
            (br#"{"connector":"kupgrade"}"#, value.to_string().as_bytes()),
            (br#"{"snapshot":true,"connector":"kupgrade"}"#, progress),
        ],
    )
    .await;
    let text = format!(
        "name = \"kupgrade\"\n[source]\nurl = \"postgres://tidemark@localhost/unused\"\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\n"
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no kafka"));
    let mut output = KafkaOutput::connect(&kafka, EnvelopeContext::new("kupgrade", "db"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.resume_position(), stored);
    let loaded = output
        .load_snapshot_progress()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.as_deref(), Some(&progress[..]));
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
    let config = set_up(&text).await;
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

/// A node behind a proxy (so it can be made unreachable) whose coordinator looks for
/// timed-out transactions every second, a database with table `t`, and a config for an
/// exactly-once connector with the given `transaction.timeout.ms`.
async fn timeout_fixture(
    label: &str,
    timeout_ms: u64,
) -> (
    KafkaNode,
    TcpProxy,
    tempfile::TempDir,
    tidemark::testing::TestDatabase,
    tokio_postgres::Client,
    Config,
) {
    let broker_port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], broker_port)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options = KafkaOptions {
        advertised: Some(proxy.host_port()),
        listen_port: Some(broker_port),
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
    let (db, client) = database(label).await;
    exec(&client, "CREATE TABLE t (id int PRIMARY KEY, batch int)").await;
    let text = format!(
        "name = \"{label}\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\ndelivery = \"exactly_once\"\npartitions = 2\n\
         [kafka.properties]\n\"transaction.timeout.ms\" = \"{timeout_ms}\"\n",
        db.url()
    );
    let config = set_up(&text).await;
    (node, proxy, dir, db, client, config)
}

/// Inserts row 0 and waits until a `read_committed` consumer sees it (the topic exists);
/// returns the sum of the topic's partition ends then.
async fn first_row_visible(bootstrap: &str, topic: &str, client: &tokio_postgres::Client) -> i64 {
    exec(client, "INSERT INTO t VALUES (0, 0)").await;
    consume_until_isolated(bootstrap, topic, Duration::from_secs(60), true, |records| {
        distinct_ids(records).len() == 1
    })
    .await;
    partition_end_sum(bootstrap, topic).await
}

async fn partition_end_sum(bootstrap: &str, topic: &str) -> i64 {
    common::kafka::partition_ends(bootstrap, topic, 2)
        .await
        .iter()
        .map(|(_, end)| end)
        .sum()
}

/// A Kafka transaction the coordinator aborts because it outlived `transaction.timeout.ms`
/// (6 s) while the broker was unreachable: single-row transactions are written all along
/// (about 100/s), and a proxy is down for 12 s in the middle. The outage starts while a
/// source transaction of 20,000 rows is being produced (its first records are in the log,
/// uncommitted), so a Kafka transaction the coordinator knows of is surely open across it:
/// an outage that began between a commit and the next transaction's registration would
/// leave the coordinator nothing to time out. The coordinator's abort bumps
/// the producer's epoch, which librdkafka reports as fenced (fatal) or as an abortable
/// state; tidemark tells it from a second instance by how long the transaction was open,
/// aborts or makes a new producer, and sends the aborted transactions again. The run goes
/// on, and a `read_committed` consumer sees every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_coordinator_times_out_during_an_outage_is_sent_again_once() {
    let (node, proxy, _dir, db, client, config) = timeout_fixture("ktimeout", 6_000).await;
    let bootstrap = node.bootstrap().to_owned();
    let topic = "ktimeout.public.t";
    let (stop, run) = start(&config, &db.name).await;
    first_row_visible(&bootstrap, topic, &client).await;
    let writer_client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let (stop_writer, writer_stopped) = watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut id = 0;
        while !*writer_stopped.borrow() {
            id += 1;
            writer_client
                .execute("INSERT INTO t VALUES ($1, 1)", &[&id])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        id
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    const BIG: i32 = 20_000;
    let before = partition_end_sum(&bootstrap, topic).await;
    exec(
        &client,
        &format!(
            "INSERT INTO t SELECT g, 2 FROM generate_series(1000000, {}) g",
            1_000_000 + BIG - 1
        ),
    )
    .await;
    // Cut as soon as the big transaction's records reach the log: it is registered with the
    // coordinator and not committed (its last records are still on the way).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partition_end_sum(&bootstrap, topic).await < before + 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "the big transaction's records did not reach the log"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.set_down(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = stop_writer.send(true);
    let rows = writer.await.unwrap_or_else(|e| panic!("{e}")) as usize + BIG as usize;

    consume_until_isolated(
        &bootstrap,
        topic,
        Duration::from_secs(120),
        true,
        move |records| distinct_ids(records).len() == rows + 1,
    )
    .await;
    let committed = drain(&bootstrap, topic, true, Duration::from_secs(2)).await;
    assert_eq!(
        committed.len(),
        rows + 1,
        "a read_committed consumer saw each of the {rows} rows once"
    );
    assert!(
        !run.is_finished(),
        "the run went on after the timed-out transaction"
    );
    let _ = stop.send(true);
    let stats = run
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("the run: {e}"));
    assert!(
        stats.sessions >= 2,
        "the timed-out transaction interrupted the stream, which went on ({stats:?})"
    );
    drop(node);
}

/// A source transaction too large to deliver within `transaction.timeout.ms` (1.5 s for
/// 300,000 rows) would be timed out for ever: after the first time-out a new producer sends
/// it again, and the second time-out with nothing committed in between stops the run with
/// a definite error naming the setting. Nothing of it is visible to `read_committed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_transaction_that_always_outlives_the_transaction_timeout_stops_naming_it() {
    const ROWS: i64 = 300_000;
    let (node, _proxy, _dir, db, client, config) = timeout_fixture("ktoolong", 1_500).await;
    let bootstrap = node.bootstrap().to_owned();
    let topic = "ktoolong.public.t";
    let (_stop, run) = start(&config, &db.name).await;
    first_row_visible(&bootstrap, topic, &client).await;
    exec(
        &client,
        &format!("INSERT INTO t SELECT g, 1 FROM generate_series(1, {ROWS}) g"),
    )
    .await;
    let error = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("the run did not stop within 180 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .err()
        .unwrap_or_else(|| panic!("the run ended without an error"));
    let text = error.to_string();
    assert!(
        text.contains("twice") && text.contains("transaction.timeout.ms (1500 ms)"),
        "a definite error names the setting: {text}"
    );
    let committed = drain(&bootstrap, topic, true, Duration::from_secs(2)).await;
    assert_eq!(
        distinct_ids(&committed),
        BTreeSet::from([0]),
        "nothing of the timed-out transaction is visible"
    );
    drop(node);
}
