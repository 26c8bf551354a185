//! The failover drill: a primary and a streaming standby, a write load, the primary killed
//! (SIGKILL) and the standby promoted, with tidemark given both hosts
//! (`target_session_attrs=read-write`).
//!
//! - PostgreSQL 17 and later, `source.failover = true` and slot synchronization
//!   (`sync_replication_slots` on the standby, `synchronized_standby_slots` on the primary):
//!   tidemark reconnects to the new primary, continues from the synced slot, and its
//!   changes, through Apache Kafka and tidemark's sink, leave a PostgreSQL warehouse (a
//!   server of its own) equal to the new primary's table (changes delivered twice only where
//!   at-least-once allows; nothing lost).
//! - `TIDEMARK_FAILOVER_LOAD_SECS` (default 0) keeps the load on that long before the kill
//!   and after the promotion (`scripts/drills.sh` runs it for minutes).
//! - Before 17 there are no failover slots: the new primary has no copy of the slot, and
//!   tidemark stops with a definite error that says so and what to do.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::kafka::drain;
use common::sink::{spawn_sink, stop_sink};
use common::*;
use tidemark::capture::reader::ReaderError;
use tidemark::config::Config;
use tidemark::domain::event::EnvelopeContext;
use tidemark::kafka::KafkaOutput;
use tidemark::testing::{KafkaBroker, PgCluster};

/// Writes transactions (an insert and an update each) until `stop`, on whichever host
/// accepts them; counts the commits acknowledged.
fn write_load(
    url: String,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 1_000_i64;
        while !stop.load(Ordering::Relaxed) {
            let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            tokio::spawn(connection);
            while !stop.load(Ordering::Relaxed) {
                let sql = format!(
                    "BEGIN; INSERT INTO acct VALUES ({next}, 0); UPDATE acct SET v = v + 1 WHERE id = {}; COMMIT;",
                    next % 100 + 1
                );
                if client.batch_execute(&sql).await.is_err() {
                    break;
                }
                next += 1;
                commits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_carries_the_slot_on_17_and_says_it_is_gone_before() {
    let primary = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    let version = primary.major().unwrap_or(0);
    let failover = version >= 17;
    let db = primary
        .create_database("failover")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(
        &client,
        "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL)",
    )
    .await;
    let standby = primary
        .start_standby("standby1", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let standby_admin = standby.admin().await.unwrap_or_else(|e| panic!("{e}"));
    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?sslmode=disable&connect_timeout=2&target_session_attrs=read-write",
        primary.port, standby.port, db.name
    );
    // On 17+ the changes go through Apache Kafka and tidemark's sink into a PostgreSQL
    // warehouse on a server of its own, which must end equal to the new primary.
    let warehouse = if failover {
        let cluster = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
        let wh = cluster
            .create_database("failover_wh")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let wh_client = wh.connect().await.unwrap_or_else(|e| panic!("{e}"));
        Some((wh, wh_client))
    } else {
        None
    };
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let sink_section = warehouse.as_ref().map_or(String::new(), |(wh, _)| {
        format!(
            "[sink]\nkind = \"postgres\"\nurl = \"{}\"\ngroup = \"{}-sink\"\nbatch_rows = 500\nbatch_ms = 200\n",
            wh.url(),
            db.name
        )
    });
    // The topics' prefix is the database's name, unique per run (the broker outlives it).
    let text = format!(
        "name = \"failover\"\n[source]\nurl = \"{both}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         failover = {failover}\n[kafka]\nbrokers = \"{}\"\ntopic_prefix = \"{}\"\nformat = \"json\"\n\
         partitions = 2\n{sink_section}",
        broker.bootstrap, db.name
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    if failover {
        // `check` reads both sides: the primary lacks synchronized_standby_slots, the
        // standby sync_replication_slots; set, the standby waits for the slot to appear.
        let rendered = tidemark::ops::check::check(&config).await.render();
        assert!(
            rendered.contains("synchronized_standby_slots is empty")
                && rendered.contains("sync_replication_slots = on"),
            "{rendered}"
        );
        exec(
            &client,
            "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'",
        )
        .await;
        exec(&client, "SELECT pg_reload_conf()").await;
        exec(
            &standby_admin,
            "ALTER SYSTEM SET sync_replication_slots = on",
        )
        .await;
        exec(&standby_admin, "SELECT pg_reload_conf()").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = tidemark::ops::check::check(&config).await;
        let rendered = report.render();
        assert!(
            report.passed() && rendered.contains("holds no copy of slot tidemark_failover yet"),
            "{rendered}"
        );
    }
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no [kafka]"));
    let output = KafkaOutput::connect(&kafka, EnvelopeContext::new(&config.name, &db.name))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop_source, source) = spawn_reader(config.clone(), output, &client).await;
    // JSON needs no registry: the sink is given an address it never calls.
    let sink = warehouse
        .as_ref()
        .map(|_| spawn_sink(config.clone(), "http://127.0.0.1:9"));

    // The rows the load updates, written after the slot exists (snapshot = "never").
    exec(
        &client,
        "INSERT INTO acct SELECT g, 0 FROM generate_series(1, 100) g",
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let load = write_load(both.clone(), stop.clone(), commits.clone());
    // Load until the standby holds a synchronized copy of the slot that has moved.
    let standby_db =
        tokio_postgres::connect(&standby.url("postgres", &db.name), tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| {
                tokio::spawn(connection);
                client
            })
            .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    if failover {
        wait_until(
            "the slot synchronized to the standby",
            Duration::from_secs(90),
            || async {
                standby_admin
                    .query_opt(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND synced \
                     AND NOT temporary AND confirmed_flush_lsn IS NOT NULL",
                        &[&config.source.slot],
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            },
        )
        .await;
    }
    if failover {
        let rendered = tidemark::ops::check::check(&config).await.render();
        assert!(
            rendered.contains("holds a synchronized copy of slot tidemark_failover"),
            "{rendered}"
        );
    }
    let load_for = Duration::from_secs(
        std::env::var("TIDEMARK_FAILOVER_LOAD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    tokio::time::sleep(load_for).await;
    let before_kill = commits.load(Ordering::Relaxed);
    primary.kill().unwrap_or_else(|e| panic!("{e}"));
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    standby_admin
        .execute("SELECT pg_promote()", &[])
        .await
        .unwrap_or_else(|e| panic!("promote: {e}"));
    let promoted = killed.elapsed();

    if !failover {
        stop.store(true, Ordering::Relaxed);
        let _ = load.await;
        let error = tokio::time::timeout(Duration::from_secs(120), source)
            .await
            .unwrap_or_else(|_| panic!("the source did not stop within 120 s"))
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("the slot is gone");
        assert!(matches!(error, ReaderError::SlotLost { .. }), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("failover") && text.contains("when_needed"),
            "{text}"
        );
        println!(
            "PostgreSQL {version}: no failover slots; the reader stopped naming the way on: {text}"
        );
        return;
    }

    // The load goes on against the new primary, then stops; tidemark catches up.
    let resumed = Instant::now();
    wait_until(
        "commits on the new primary",
        Duration::from_secs(60),
        || async { commits.load(Ordering::Relaxed) > before_kill + 200 },
    )
    .await;
    tokio::time::sleep(load_for.saturating_sub(resumed.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let load_stopped = Instant::now();
    let expected = acct_table(&standby_db).await;
    let (_, wh_client) = warehouse
        .as_ref()
        .unwrap_or_else(|| panic!("a warehouse on 17+"));
    let sink = sink.unwrap_or_else(|| panic!("a sink on 17+"));
    wait_until(
        "the warehouse equal to the new primary",
        Duration::from_secs(180),
        || async {
            assert!(!sink.1.is_finished(), "the sink ended early");
            assert!(!source.is_finished(), "the source ended early");
            try_acct_table(wh_client).await.unwrap_or_default() == expected
        },
    )
    .await;
    let (caught_up, after_load) = (resumed.elapsed(), load_stopped.elapsed());
    let stats = stop_background((stop_source, source)).await;
    stop_sink(sink).await;
    assert!(stats.sessions >= 2, "the source reconnected: {stats:?}");
    let records = drain(
        &broker.bootstrap,
        &format!("{}.public.acct", db.name),
        false,
        Duration::from_secs(2),
    )
    .await;
    // Each commit is an insert and an update, after 100 inserted rows: the rest are
    // changes delivered again from the synced slot's position (at least once).
    let total = commits.load(Ordering::Relaxed);
    let once = 2 * total + 100;
    println!(
        "PostgreSQL {version} failover drill: {total} commits ({before_kill} before the kill), 1 kill, standby promoted {:.1} s after it, the warehouse equal to the new primary ({} rows) {:.1} s after the load resumed ({:.1} s after it stopped); {} records for {once} changes acknowledged ({} again), {} source sessions",
        promoted.as_secs_f64(),
        expected.len(),
        caught_up.as_secs_f64(),
        after_load.as_secs_f64(),
        records.len(),
        records.len().saturating_sub(once as usize),
        stats.sessions
    );
}
