//! The operator's view of a running pipeline, through the binary: `tidemark run` (source,
//! Apache Kafka, embedded registry, sink into a PostgreSQL warehouse) with `[metrics]`
//! set by `--set`. `/metrics` carries the documented series, `/healthz` and `/readyz`
//! answer; then SIGTERM under a write load: the process exits 0 within a bound, the slot's
//! confirmed position covers only what Kafka holds, and after a restart the warehouse
//! equals the source and `tidemark status --json` shows every partition applied.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tidemark::domain::lsn::Lsn;
use tidemark::testing::KafkaBroker;

/// The bound on a graceful stop under load (the open transaction, flushes, the sink's
/// last commit).
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// The `tidemark run` process, killed if the test ends without stopping it.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path, metrics: &str, log: &std::path::Path) -> Running {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    Running(
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["run", "--config"])
            .arg(config)
            .args(["--set", &format!("metrics.listen={metrics}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// SIGTERM, then the exit status and how long the stop took.
fn terminate(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    let asked = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return (status, asked.elapsed());
        }
        if asked.elapsed() > STOP_WITHIN * 2 {
            let _ = child.kill();
            panic!(
                "tidemark did not stop within {:?} of SIGTERM",
                STOP_WITHIN * 2
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `GET url`: status and body, or `None` while nothing listens.
async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of the series line starting with `series` (name and labels), if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Count and md5 of `(id, v)` ordered by id.
async fn checksum(client: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    text_rows(
        client,
        "SELECT count(*), md5(coalesce(string_agg(a.id || ':' || a.v, ',' ORDER BY a.id), '')) FROM public.acct a",
    )
    .await
    // The warehouse's table appears with the sink's first flush.
    .unwrap_or_default()
}

/// Records on `topic` (every partition: high minus low watermark).
fn records_on(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{e}"));
            high - low
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_a_sigterm_under_load_that_loses_nothing() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let (db, client) = database("observed").await;
    let (warehouse, warehouse_client) = database("observed_wh").await;
    exec(
        &client,
        "CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO acct SELECT g, g FROM generate_series(1, 200) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("observed.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"observed\"\n[source]\nurl = \"{}\"\ntables = [\"public.acct\"]\nstatus_interval_ms = 500\n\
             [kafka]\nbrokers = \"{}\"\npartitions = 2\n[registry]\nlisten = \"127.0.0.1:0\"\n\
             [sink]\nkind = \"postgres\"\nurl = \"{}\"\nbatch_ms = 200\n",
            db.url(),
            broker.bootstrap,
            warehouse.url()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut child = start(&config, &listen, &dir.path().join("first.log"));
    // The snapshot first, so its count is exact.
    let asked = Instant::now();
    loop {
        let metrics = get(&format!("{base}/metrics")).await;
        let remaining = metrics.as_ref().and_then(|(_, body)| {
            value(
                body,
                "tidemark_snapshot_chunks_remaining{table=\"public.acct\"}",
            )
        });
        if remaining == Some(0.0) {
            break;
        }
        if asked.elapsed() > Duration::from_secs(60) || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
            panic!(
                "the snapshot was not read in 60 s (chunks remaining: {remaining:?}); metrics:\n{metrics:?}\nlog:\n{log}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A write load for the whole first run: each transaction inserts 3 rows, updates one
    // and deletes one; after each commit the writer notes the server's WAL insert
    // position, which lies at or after the transaction's end.
    let changes_before: Arc<Mutex<Vec<(Lsn, i64)>>> = Arc::default();
    let (stop_writing, mut writing) = tokio::sync::watch::channel(false);
    let writer_client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let noted = changes_before.clone();
    let writer = tokio::spawn(async move {
        let mut next = 1_000;
        while !*writing.borrow_and_update() {
            let sql = format!(
                "BEGIN; INSERT INTO acct VALUES ({a}, 1), ({b}, 2), ({c}, 3);
                 UPDATE acct SET v = v + 1 WHERE id = {a};
                 DELETE FROM acct WHERE id = {b}; COMMIT;",
                a = next,
                b = next + 1,
                c = next + 2
            );
            writer_client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let after: String = writer_client
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .get(0);
            let after: Lsn = after.parse().unwrap_or_else(|e| panic!("{e:?}"));
            noted
                .lock()
                .unwrap_or_else(|e| panic!("{e}"))
                .push((after, 5));
            next += 3;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // Health: live, and ready once the source streams and the sink has applied.
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        Some((200, "ok\n".into()))
    );
    wait_until("/readyz is 200", Duration::from_secs(90), || async {
        get(&format!("{base}/readyz"))
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    let (_, ready) = get(&format!("{base}/readyz")).await.unwrap_or_default();
    assert_eq!(
        ready,
        r#"{"source":{"state":"ready"},"sink":{"state":"ready"}}"#
    );
    let documented = [
        "tidemark_source_events_total{",
        "tidemark_source_transactions_total",
        "tidemark_source_lag_bytes",
        "tidemark_source_lag_seconds",
        "tidemark_source_confirmed_lsn",
        "tidemark_slot_retained_wal_bytes",
        "tidemark_snapshot_rows_total{table=\"public.acct\"}",
        "tidemark_snapshot_chunks_remaining{table=\"public.acct\"}",
        "tidemark_kafka_records_total",
        "tidemark_kafka_delivery_seconds_bucket",
        "tidemark_registry_calls_total{outcome=\"ok\"}",
        "tidemark_registry_call_seconds_bucket",
        "tidemark_sink_records_total",
        "tidemark_sink_batch_rows_bucket",
        "tidemark_sink_merge_seconds_bucket",
        "tidemark_sink_flushes_total",
        "tidemark_sink_consumer_lag{topic=\"observed.public.acct\"",
        "tidemark_build_info{version=",
    ];
    let started = Instant::now();
    let metrics = loop {
        let body = get(&format!("{base}/metrics")).await.unwrap_or_default().1;
        let missing: Vec<&str> = documented
            .iter()
            .copied()
            .filter(|series| !body.contains(series))
            .collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "series missing from /metrics after 60 s: {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        value(
            &metrics,
            "tidemark_snapshot_rows_total{table=\"public.acct\"}"
        ),
        Some(200.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "tidemark_source_events_total{table=\"public.acct\",op=\"r\"}"
        ),
        Some(200.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            "tidemark_source_events_total{table=\"public.acct\",op=\"c\"}"
        )
        .is_some_and(|inserts| inserts > 0.0),
        "{metrics}"
    );
    assert!(
        value(&metrics, "tidemark_sink_records_total").is_some_and(|records| records >= 200.0),
        "{metrics}"
    );

    // SIGTERM while the writer keeps writing.
    let (status, took) = terminate(&mut child);
    assert!(
        status.success(),
        "tidemark exited with {status} after SIGTERM"
    );
    assert!(
        took < STOP_WITHIN,
        "the graceful stop took {took:?}, more than {STOP_WITHIN:?}"
    );
    eprintln!("stopped {took:?} after SIGTERM, exit 0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_writing.send(true);
    writer.await.unwrap_or_else(|e| panic!("{e}"));

    // Nothing unacknowledged was confirmed: every change of a transaction that ended at
    // or before the confirmed position is in Kafka (no crash before: no redelivery).
    let confirmed = confirmed(&client, "tidemark_observed").await;
    let must_hold: i64 = 200
        + changes_before
            .lock()
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|(after, _)| *after <= confirmed)
            .map(|(_, changes)| changes)
            .sum::<i64>();
    let held = records_on(&broker.bootstrap, "observed.public.acct");
    assert!(
        held >= must_hold,
        "the slot confirmed {confirmed}, covering {must_hold} changes, but Kafka holds {held}"
    );

    // Restarted, it catches up: the warehouse equals the source, row for row.
    let mut child = start(&config, &listen, &dir.path().join("second.log"));
    let source = checksum(&client).await;
    wait_until(
        "the warehouse equals the source",
        Duration::from_secs(120),
        || async { checksum(&warehouse_client).await == source },
    )
    .await;

    // `tidemark status` shows the sink's progress per partition: once the sink has applied
    // everything, each partition's applied offset is the one after its last record (read
    // back from the topic), as is its end, and the lag is 0.
    let mut next_offsets = std::collections::BTreeMap::new();
    for record in common::kafka::drain(
        &broker.bootstrap,
        "observed.public.acct",
        false,
        Duration::from_secs(2),
    )
    .await
    {
        let next = next_offsets.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
    }
    let sink_status = || {
        let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("running tidemark status: {e}"));
        assert!(output.status.success(), "{output:?}");
        let status: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
        status["sink"].clone()
    };
    let asked = Instant::now();
    let sink = loop {
        let sink = sink_status();
        let partitions = sink["partitions"].as_array().cloned().unwrap_or_default();
        let applied = partitions.len() == 2
            && partitions.iter().all(|p| {
                let partition = p["partition"].as_i64().unwrap_or(-1) as i32;
                p["topic"] == "observed.public.acct"
                    && p["applied"].as_i64() == next_offsets.get(&partition).copied()
                    && p["end"].as_i64() == next_offsets.get(&partition).copied()
                    && p["lag"] == 0
            });
        if applied {
            break sink;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "status does not show every partition applied to {next_offsets:?} after 60 s: {sink:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(sink["group"], "tidemark-sink-observed", "{sink}");
    assert!(sink.get("problem").is_none(), "{sink}");
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "second run exited with {status}");
}
