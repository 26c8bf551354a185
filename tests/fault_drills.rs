//! Fault drills: pgbench's TPC-B-like workload on the source while one `tidemark run`
//! process (source and sink together, PostgreSQL as the warehouse) lives through, in turn:
//!
//! 1. the source PostgreSQL restarted with a fast shutdown, then with an immediate one
//!    (crash recovery at the next start);
//! 2. the broker (an Apache Kafka node of the test's own) unreachable for the outage time:
//!    every connection reset and new ones refused; then SIGKILLed and, after the outage
//!    time, started again on its log directory;
//! 3. the warehouse made read-only for the outage time (as a standby during a failover);
//! 4. the network to each of the three cut at the socket (every connection reset), and to
//!    the source and the warehouse down for the outage time (new connections reset as
//!    they arrive), through a [`TcpProxy`] in front of each service.
//!
//! The process must never stop. Afterwards every warehouse table equals its source table,
//! every committed transaction's history row is in Kafka, the slot's retained WAL is near
//! zero, and the outages showed in the metrics (`/metrics`: reconnects, warehouse retries,
//! brokers up at 0) and in the log.
//!
//! `TIDEMARK_FAULT_OUTAGE_SECS` sets the outage time (default 10; `scripts/drills.sh` runs
//! the long version with 60).

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::drill::*;
use common::*;
use tidemark::testing::{
    KafkaNode, KafkaOptions, PgCluster, Shutdown, TcpProxy, TestDatabase, free_port,
};

/// Accounts kept: a small snapshot, so the faults meet the stream.
const FAULT_ACCOUNTS: u32 = 2_000;

/// How long each phase of normal running between two faults lasts.
const RUNNING: Duration = Duration::from_secs(3);

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("TIDEMARK_FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn proxy_to(port: u16) -> TcpProxy {
    TcpProxy::start(local(port))
        .await
        .unwrap_or_else(|e| panic!("starting a proxy: {e}"))
}

/// `db` reached through `proxy`.
fn url_through(proxy: &TcpProxy, db: &TestDatabase) -> String {
    format!(
        "postgres://postgres@{}/{}?sslmode=disable",
        proxy.host_port(),
        db.name
    )
}

/// A new connection each time: the source's server restarts under the test.
async fn connect(db: &TestDatabase) -> tokio_postgres::Client {
    let started = Instant::now();
    loop {
        match db.connect().await {
            Ok(client) => return client,
            Err(e) if started.elapsed() > Duration::from_secs(60) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The value of a `/metrics` series with `labels` (exact text, e.g. `{client="producer"}`),
/// none if the series is not there yet.
async fn metric(port: u16, series: &str, labels: &str) -> Option<f64> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let name = format!("{series}{labels} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&name))
        .and_then(|value| value.trim().parse().ok())
}

/// Warehouse transactions that failed with a transient error so far.
async fn transient_flush_errors(port: u16) -> f64 {
    metric(
        port,
        "tidemark_sink_flush_errors_total",
        "{kind=\"transient\"}",
    )
    .await
    .unwrap_or(0.0)
}

/// The load, started again after the source's server went away under it.
struct Load<'a> {
    cluster: &'a PgCluster,
    url: String,
    dir: &'a Path,
    child: Child,
    starts: u32,
}

impl<'a> Load<'a> {
    fn start(cluster: &'a PgCluster, url: String, dir: &'a Path) -> Load<'a> {
        let child = start_load(cluster, &url, dir, 100, FAULT_ACCOUNTS);
        Load {
            cluster,
            url,
            dir,
            child,
            starts: 1,
        }
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = start_load(self.cluster, &self.url, self.dir, 100, FAULT_ACCOUNTS);
        self.starts += 1;
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Load<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `phase` (a blocking fault) off the runtime, so the proxies keep forwarding.
async fn blocking<T: Send + 'static>(phase: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(phase)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_outages_and_cut_connections_end_equal_with_nothing_lost() {
    let outage = outage();
    eprintln!("fault drills, outage {outage:?}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    // The source: a cluster of the test's own, which it restarts.
    let source_cluster = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    let db = source_cluster
        .create_database("faults")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pgbench_tables(source_cluster, &db, &connect(&db).await, FAULT_ACCOUNTS).await;
    let source_proxy = proxy_to(source_cluster.port).await;

    // The warehouse: a database of the shared cluster.
    let (warehouse, warehouse_admin) = database("faults_wh").await;
    let warehouse_proxy = proxy_to(warehouse.cluster.port).await;

    // tidemark's and the broker's logs, kept when the test fails, to read what they did.
    let logs = tempfile::Builder::new()
        .prefix("tidemark-faults-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"))
        .keep();
    eprintln!("logs in {}", logs.display());

    // The broker: Apache Kafka behind a proxy that it advertises, so that every connection,
    // not only the bootstrap one, passes through the proxy.
    let broker_port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let broker_proxy = proxy_to(broker_port).await;
    let options = KafkaOptions {
        advertised: Some(broker_proxy.host_port()),
        listen_port: Some(broker_port),
        ..KafkaOptions::default()
    };
    let broker_dir = logs.join("kafka");
    let mut broker =
        blocking(move || KafkaNode::start(&broker_dir, options).unwrap_or_else(|e| panic!("{e}")))
            .await;
    let bootstrap = broker.bootstrap().to_owned();

    let metrics_port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("faults.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"faults\"\n[source]\nurl = \"{}\"\ntables = [\"public.pgbench_accounts\", \"public.pgbench_branches\", \"public.pgbench_tellers\", \"public.pgbench_history\"]\n\
             status_interval_ms = 500\nheartbeat_interval_ms = 1000\n\
             [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\njson_schemas = true\npartitions = 3\n\
             [sink]\nkind = \"postgres\"\nurl = \"{}\"\nbatch_ms = 200\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            url_through(&source_proxy, &db),
            url_through(&warehouse_proxy, &warehouse),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config_path = config.display().to_string();
    let mut tidemark = Process::new("run", &["run", "--config", &config_path], &logs);
    tidemark.start();
    wait_until(
        "the source created its slot",
        Duration::from_secs(60),
        || async {
            text_rows(
                &connect(&db).await,
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'tidemark_faults'",
            )
            .await
            .is_ok_and(|rows| !rows.is_empty())
        },
    )
    .await;
    // The snapshot in the warehouse first: the faults are for the stream.
    wait_until(
        "the snapshot reached the warehouse",
        Duration::from_secs(120),
        || async {
            text_rows(
                &warehouse_admin,
                "SELECT count(*)::text FROM public.pgbench_accounts",
            )
            .await
            .is_ok_and(|rows| rows == vec![vec![Some(FAULT_ACCOUNTS.to_string())]])
        },
    )
    .await;
    // pgbench connects to the server directly, not through the proxy.
    let mut load = Load::start(source_cluster, db.url(), dir.path());
    tokio::time::sleep(RUNNING).await;

    // 1. The source's server restarted, fast and then immediate.
    for mode in [Shutdown::Fast, Shutdown::Immediate] {
        eprintln!("fault: source PostgreSQL restart ({mode:?})");
        blocking(move || {
            source_cluster
                .restart(mode, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await;
        load.restart();
        tokio::time::sleep(RUNNING).await;
        tidemark.assert_running();
    }

    // 2. The broker unreachable for the outage time.
    eprintln!("fault: broker unreachable for {outage:?}");
    broker_proxy.set_down(true);
    let mut brokers_up = Vec::new();
    let until = Instant::now() + outage;
    while Instant::now() < until {
        let up = metric(
            metrics_port,
            "tidemark_kafka_brokers_up",
            "{client=\"producer\"}",
        )
        .await;
        brokers_up.push(up);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    broker_proxy.set_down(false);
    tokio::time::sleep(RUNNING).await;
    tidemark.assert_running();
    assert!(
        brokers_up.contains(&Some(0.0)),
        "tidemark_kafka_brokers_up{{client=\"producer\"}} never showed 0 while the broker was unreachable: {brokers_up:?}\n{}",
        tidemark.tail()
    );

    // 2b. The broker SIGKILLed mid-stream and, after the outage time, started again on its
    //     log directory: records it acknowledged are on its disk, the rest is sent again.
    eprintln!("fault: broker SIGKILLed, started again after {outage:?}");
    broker = blocking(move || {
        broker.kill();
        std::thread::sleep(outage);
        broker
            .start_again()
            .unwrap_or_else(|e| panic!("the broker did not start again: {e}"));
        broker
    })
    .await;
    tokio::time::sleep(RUNNING).await;
    tidemark.assert_running();

    // 3. The warehouse read-only for the outage time: new sessions cannot write, and the
    //    sink's open session is ended so that it meets the change.
    eprintln!("fault: warehouse read-only for {outage:?}");
    let transient_before = transient_flush_errors(metrics_port).await;
    exec(
        &warehouse_admin,
        &format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{name}' AND pid <> pg_backend_pid();",
            name = warehouse.name
        ),
    )
    .await;
    // Read-only for the outage time, and at least until the sink has met it.
    let started = Instant::now();
    let mut transient_after = transient_before;
    while started.elapsed() < outage || transient_after <= transient_before {
        assert!(
            started.elapsed() < outage + Duration::from_secs(60),
            "no transient flush error counted while the warehouse was read-only ({transient_before} before, {transient_after} after)\n{}",
            tidemark.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        transient_after = transient_flush_errors(metrics_port).await;
    }
    exec(
        &warehouse_admin,
        &format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            warehouse.name
        ),
    )
    .await;
    tokio::time::sleep(RUNNING).await;
    tidemark.assert_running();

    // 4. The network to each service cut, then down for the outage time.
    //    (The broker's outage was step 2.)
    for (service, proxy) in [
        ("source", &source_proxy),
        ("broker", &broker_proxy),
        ("warehouse", &warehouse_proxy),
    ] {
        eprintln!("fault: every connection to the {service} reset");
        proxy.cut();
        tokio::time::sleep(RUNNING).await;
        tidemark.assert_running();
        if service == "broker" {
            continue;
        }
        eprintln!("fault: network to the {service} down for {outage:?}");
        proxy.set_down(true);
        tokio::time::sleep(outage).await;
        proxy.set_down(false);
        tokio::time::sleep(RUNNING).await;
        tidemark.assert_running();
    }
    load.stop();
    let stopped_at = Instant::now();

    // Caught up: every table equal, row for row.
    let source_client = connect(&db).await;
    wait_tables_equal(
        &source_client,
        &warehouse_admin,
        stopped_at,
        Duration::from_secs(180),
        &mut [&mut tidemark],
    )
    .await;

    // Kafka holds every committed transaction's history row.
    let (transactions, history_records) =
        assert_history_in_kafka(&source_client, &bootstrap, "faults.public.pgbench_history").await;

    wait_until(
        "the slot's retained WAL is near zero",
        Duration::from_secs(30),
        || async { retained_wal(&source_client, "tidemark_faults").await < NEAR_ZERO_WAL },
    )
    .await;

    // The outages in the metrics and the log.
    let reconnects = metric(metrics_port, "tidemark_source_reconnects_total", "")
        .await
        .unwrap_or(0.0);
    assert!(
        reconnects >= 4.0,
        "tidemark_source_reconnects_total is {reconnects} after two restarts, a cut and an outage of the source"
    );
    let log = std::fs::read_to_string(tidemark.log()).unwrap_or_default();
    for expected in [
        "replication interrupted; reconnecting",
        "warehouse transaction failed; retrying",
        "reconnecting to the warehouse",
        "Kafka consumer error; retrying",
        "Kafka consumer receiving again",
    ] {
        assert!(
            log.contains(expected),
            "the log does not say \"{expected}\"\n{}",
            tidemark.tail()
        );
    }
    eprintln!(
        "{} transactions, {} history records in Kafka, {reconnects} source reconnects, {} warehouse retries, {} load starts, {} + {} + {} connections reset by the proxies",
        transactions,
        history_records,
        transient_after,
        load.starts,
        source_proxy.resets(),
        broker_proxy.resets(),
        warehouse_proxy.resets()
    );
    tidemark.terminate();
    drop(broker);
    // Kept only when the drill fails.
    let _ = std::fs::remove_dir_all(&logs);
}
