//! Broker failover on a three-node Apache Kafka cluster (each node a controller and a
//! broker; replication factor 3, `min.insync.replicas = 2`), under pgbench's TPC-B-like
//! load, with the source (`tidemark run` without a sink) and two `tidemark sink` instances
//! of one consumer group applying to a PostgreSQL warehouse. In turn:
//!
//! 1. the leader of the busiest change partition is SIGKILLed, and started again on its
//!    log directory after `DOWN`;
//! 2. the coordinator is SIGKILLed and started again the same way: the source's
//!    transaction coordinator in exactly-once mode, the sink group's coordinator in
//!    at-least-once mode;
//! 3. one sink instance is SIGKILLed and started again at once: the group rebalances (the
//!    broker evicts the dead member when its session times out).
//!
//! No tidemark process may stop. Afterwards the warehouse equals the source (count and md5
//! of every row), the slot's retained WAL is near zero, and Kafka holds every change: at
//! least once (no gap), or exactly once (every change once for a `read_committed`
//! consumer, and a keyless table whose rows the sink appends equals the source's, with no
//! extra row).

use crate::common;

use std::time::{Duration, Instant};

use common::drill::*;
use common::kafka::partition_ends;
use common::*;
use tidemark::testing::{KafkaCluster, KafkaOptions, PgCluster};

/// How long a killed node stays down.
const DOWN: Duration = Duration::from_secs(8);

/// How long the pipeline runs between two faults.
const RUNNING: Duration = Duration::from_secs(4);

/// Partitions of the change topics.
const PARTITIONS: i32 = 4;

/// Runs `phase` (a blocking step on the cluster) off the runtime.
async fn blocking<T: Send + 'static>(phase: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(phase)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// SIGKILLs node `id`, waits `DOWN`, and starts it again on its log directory.
async fn kill_and_restart(cluster: KafkaCluster, id: u32) -> KafkaCluster {
    blocking(move || {
        let mut cluster = cluster;
        let node = cluster.node(id).unwrap_or_else(|| panic!("no node {id}"));
        node.kill();
        std::thread::sleep(DOWN);
        node.start_again()
            .unwrap_or_else(|e| panic!("node {id} did not start again: {e}"));
        cluster
    })
    .await
}

/// The change partition with the most records, as `(topic, partition)`.
async fn busiest_partition(bootstrap: &str, prefix: &str) -> (String, i32) {
    let mut busiest = (String::new(), 0, -1);
    for table in TABLES {
        let topic = format!("{prefix}.public.{table}");
        for (partition, end) in partition_ends(bootstrap, &topic, PARTITIONS).await {
            if end > busiest.2 {
                busiest = (topic.clone(), partition, end);
            }
        }
    }
    (busiest.0, busiest.1)
}

async fn failover_drill(delivery: &str, prefix: &str) {
    let dir = LogDir::new(&format!("failover-{delivery}"));
    let logs = dir.path().to_owned();
    let kafka_dir = logs.join("kafka");
    let mut cluster = blocking(move || {
        KafkaCluster::start(3, &kafka_dir, KafkaOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await;
    let bootstrap = cluster.bootstrap();
    let exactly_once = delivery == "exactly_once";

    let pg = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database(prefix).await;
    let (warehouse, warehouse_client) = database(&format!("{prefix}_wh")).await;
    pgbench_tables(pg, &db, &client, ACCOUNTS).await;
    keyless_history_copy(&client).await;
    let snapshot_rows = snapshot_counts(&client).await;

    let common_part = format!(
        "name = \"{prefix}\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\", \"public.history_copy\"]\n\
         status_interval_ms = 500\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\njson_schemas = true\ndelivery = \"{delivery}\"\n\
         partitions = {PARTITIONS}\nreplication_factor = 3\n",
        db.url()
    );
    let (source_path, sink_path) =
        write_source_and_sink_configs(&logs, &common_part, &warehouse.url());
    let mut source = Process::new("source", &["run", "--config", &source_path], &logs);
    let mut sink_a = Process::new("sink-a", &["sink", "--config", &sink_path], &logs);
    let mut sink_b = Process::new("sink-b", &["sink", "--config", &sink_path], &logs);
    source.start();
    sink_a.start();
    sink_b.start();
    wait_for_snapshot(&mut source).await;
    let mut load = start_load(pg, &db.url(), &logs, 100, ACCOUNTS);
    tokio::time::sleep(RUNNING).await;

    // 1. The leader of the busiest partition.
    let (topic, partition) = busiest_partition(&bootstrap, prefix).await;
    let leader = cluster
        .leader_of(&topic, partition)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("fault: node {leader}, leader of {topic}[{partition}], SIGKILLed for {DOWN:?}");
    cluster = kill_and_restart(cluster, leader).await;
    tokio::time::sleep(RUNNING).await;
    for process in [&mut source, &mut sink_a, &mut sink_b] {
        process.assert_running();
    }

    // 2. The coordinator of the source's transactions, or of the sink group.
    let coordinator = if exactly_once {
        cluster.transaction_coordinator(&format!("tidemark-{prefix}"))
    } else {
        cluster.group_coordinator(&format!("tidemark-sink-{prefix}"))
    }
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("fault: node {coordinator}, the coordinator, SIGKILLed for {DOWN:?}");
    cluster = kill_and_restart(cluster, coordinator).await;
    tokio::time::sleep(RUNNING).await;
    for process in [&mut source, &mut sink_a, &mut sink_b] {
        process.assert_running();
    }

    // 3. A rebalance: one sink instance killed and started again at once.
    eprintln!("fault: sink-b SIGKILLed and started again");
    sink_b.kill();
    sink_b.start();
    tokio::time::sleep(RUNNING).await;

    let _ = load.kill();
    let _ = load.wait();
    let stopped_at = Instant::now();
    wait_tables_equal(
        &client,
        &warehouse_client,
        stopped_at,
        Duration::from_secs(240),
        &mut [&mut source, &mut sink_a, &mut sink_b],
    )
    .await;
    if exactly_once {
        assert_keyless_copy_in_kafka_once(&client, &bootstrap, prefix).await;
        assert_keyless_copy_equal(&client, &warehouse_client).await;
    }
    wait_until(
        "the slot's retained WAL is near zero",
        Duration::from_secs(60),
        || async { retained_wal(&client, &format!("tidemark_{prefix}")).await < NEAR_ZERO_WAL },
    )
    .await;
    let transactions = if exactly_once {
        assert_each_change_once(&client, &bootstrap, prefix, &snapshot_rows).await
    } else {
        let topic = format!("{prefix}.public.pgbench_history");
        assert_history_in_kafka(&client, &bootstrap, &topic).await.0
    };
    eprintln!(
        "{delivery}: {transactions} transactions, nothing lost{}, warehouse equal",
        if exactly_once {
            ", nothing duplicated"
        } else {
            ""
        }
    );
    source.terminate();
    sink_a.terminate();
    sink_b.terminate();
    drop(cluster);
    dir.passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_coordinator_failover_at_least_once_loses_nothing() {
    failover_drill("at_least_once", "failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_coordinator_failover_exactly_once_loses_and_duplicates_nothing() {
    failover_drill("exactly_once", "failovereos").await;
}
