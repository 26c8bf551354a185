//! Events into Apache Kafka: topics, partitions, keys, envelopes,
//! tombstones, headers, routes, transaction metadata, per-key order, and refusals.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::consume;
use common::*;
use tidemark::capture::reader::{ReaderError, ReaderStats};
use tidemark::config::Config;
use tidemark::kafka::KafkaOutput;
use tidemark::kafka::murmur2::java_partition;
use tidemark::testing::{KafkaBroker, TestDatabase};
use tokio::sync::watch;

fn kafka_config(db: &TestDatabase, name: &str, kafka_extra: &str) -> Config {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"json\"\n{kafka_extra}\n",
        db.url(),
        broker.bootstrap
    );
    Config::from_toml_with_env(&text, "test", std::iter::empty()).unwrap_or_else(|e| panic!("{e}"))
}

struct KafkaRun {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<ReaderStats, ReaderError>>,
}

async fn start(config: Config, client: &tokio_postgres::Client) -> KafkaRun {
    // The configuration's own context: `[events]` and `kafka.transaction_metadata` decide
    // which blocks and headers the records carry.
    let context = config.envelope_context().unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.clone().unwrap_or_else(|| panic!("no [kafka]"));
    let output = KafkaOutput::connect(&kafka, context)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, task) = spawn_reader(config, output, client).await;
    KafkaRun { stop, task }
}

impl KafkaRun {
    async fn stop(self) -> Result<ReaderStats, ReaderError> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test]
async fn every_op_lands_on_its_topic_and_partition_with_key_envelope_tombstone_and_headers() {
    let (db, client) = database("kafka_ops").await;
    exec(&client, "CREATE TABLE orders (id int PRIMARY KEY, note text); CREATE TABLE plain (id int PRIMARY KEY);").await;
    let config = kafka_config(
        &db,
        "kops",
        "partitions = 3\ntransaction_metadata = true\n[[kafka.routes]]\ntables = [\"public.plain\"]\ntopic = \"custom.plain\"",
    );
    let run = start(config, &client).await;
    exec(
        &client,
        "INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 12) g",
    )
    .await;
    exec(&client, "BEGIN; UPDATE orders SET note = 'changed' WHERE id <= 4; DELETE FROM orders WHERE id > 10; INSERT INTO plain VALUES (1); COMMIT;").await;
    // 12 inserts, 4 updates, 2 deletes each followed by a tombstone.
    let bootstrap = KafkaBroker::shared()
        .map(|b| b.bootstrap.clone())
        .unwrap_or_default();
    let records = consume(&bootstrap, "kops.public.orders", 20).await;

    for record in &records {
        let key = record
            .key
            .as_ref()
            .unwrap_or_else(|| panic!("record without key: {record:?}"));
        assert_eq!(
            record.partition,
            java_partition(key, 3),
            "key {} on the wrong partition",
            String::from_utf8_lossy(key)
        );
    }
    let mut by_key: BTreeMap<i64, Vec<&common::kafka::Record>> = BTreeMap::new();
    for record in &records {
        by_key
            .entry(record.key_json()["id"].as_i64().unwrap_or(-1))
            .or_default()
            .push(record);
    }
    assert_eq!(by_key.len(), 12);
    for (id, history) in &by_key {
        let ops: Vec<&str> = history
            .iter()
            .map(|r| {
                r.value
                    .as_ref()
                    .map_or("tombstone", |v| v["op"].as_str().unwrap_or("?"))
            })
            .collect();
        let expected: &[&str] = match id {
            1..=4 => &["c", "u"],
            11 | 12 => &["c", "d", "tombstone"],
            _ => &["c"],
        };
        assert_eq!(ops, expected, "history of key {id}");
        assert!(
            history
                .windows(2)
                .all(|w| w[0].offset < w[1].offset && w[0].partition == w[1].partition)
        );
    }
    let update = by_key[&1][1].value.clone().unwrap_or_default();
    assert_eq!(
        update["after"],
        serde_json::json!({"id": 1, "note": "changed"})
    );
    assert_eq!(update["source"]["table"], "orders");
    assert_eq!(update["source"]["connector"], "postgresql");
    assert_eq!(
        by_key[&1][1].headers["tidemark.seq"],
        update["source"]["seq"].to_string()
    );
    assert_eq!(
        by_key[&1][1].headers["tidemark.commit_lsn"],
        update["source"]["commit_lsn"].to_string()
    );
    assert_eq!(
        by_key[&1][1].headers["tidemark.xid"],
        update["source"]["txId"].to_string()
    );
    // Debezium's context headers (`extended.headers.enabled`, on by default).
    let headers = &by_key[&1][1].headers;
    assert_eq!(
        headers["__debezium.context.connectorLogicalName"],
        update["source"]["name"].as_str().unwrap_or_default()
    );
    assert_eq!(headers["__debezium.context.connectorName"], "postgresql");
    assert_eq!(headers["__debezium.context.taskId"], "0");
    assert_eq!(
        headers["__debezium.context.runId"].len(),
        36,
        "a UUID: {headers:?}"
    );
    let delete = by_key[&11][1].value.clone().unwrap_or_default();
    assert_eq!(delete["before"]["id"], 11);
    assert_eq!(
        by_key[&11][2].key, by_key[&11][1].key,
        "the tombstone has the delete's key"
    );

    let plain = consume(&bootstrap, "custom.plain", 1).await;
    assert_eq!(plain[0].key_json(), serde_json::json!({"id": 1}));

    // Transaction metadata: BEGIN and END for both transactions, with per-table counts.
    let metadata = consume(&bootstrap, "kops.transaction", 4).await;
    let mut ends: Vec<&serde_json::Value> = metadata
        .iter()
        .filter_map(|r| r.value.as_ref())
        .filter(|v| v["status"] == "END")
        .collect();
    assert_eq!(ends.len(), 2);
    // Transactions are keyed by id, so with several partitions their records may arrive in
    // either order: sort by the commit position in the id ("xid:commit_lsn").
    let commit_position = |v: &serde_json::Value| -> u64 {
        v["id"]
            .as_str()
            .and_then(|id| id.split_once(':'))
            .and_then(|(_, lsn)| lsn.parse().ok())
            .unwrap_or(0)
    };
    ends.sort_by_key(|v| commit_position(v));
    assert_eq!(ends[0]["event_count"], 12);
    assert_eq!(ends[1]["event_count"], 7);
    let collections = ends[1]["data_collections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        collections
            .contains(&serde_json::json!({"data_collection": "public.orders", "event_count": 6})),
        "{collections:?}"
    );
    assert!(
        collections
            .contains(&serde_json::json!({"data_collection": "public.plain", "event_count": 1})),
        "{collections:?}"
    );
    assert_eq!(update["transaction"]["id"], ends[1]["id"]);

    let stats = run.stop().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.events, 19);
    // Everything was acknowledged by the broker, so the slot has confirmed past the last commit.
    let lag: i64 = client
        .query_one("SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = 'tidemark_kops'", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert!(
        lag < 1024,
        "slot still {lag} bytes behind after a graceful stop"
    );
}

#[tokio::test]
async fn order_per_key_holds_under_concurrent_writers() {
    let (db, client) = database("kafka_order").await;
    exec(&client, "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL); INSERT INTO counters SELECT g, 0 FROM generate_series(1, 8) g;").await;
    let run = start(kafka_config(&db, "korder", "partitions = 4"), &client).await;
    let mut writers = Vec::new();
    for writer in 0..4 {
        let conn = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                let id = (i + writer) % 8 + 1;
                conn.batch_execute(&format!("UPDATE counters SET n = n + 1 WHERE id = {id}"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let bootstrap = KafkaBroker::shared()
        .map(|b| b.bootstrap.clone())
        .unwrap_or_default();
    let records = consume(&bootstrap, "korder.public.counters", 200).await;
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for record in &records {
        let value = record.value.clone().unwrap_or_default();
        per_key
            .entry(value["after"]["id"].as_i64().unwrap_or(-1))
            .or_default()
            .push(value["after"]["n"].as_i64().unwrap_or(-1));
    }
    for (id, values) in per_key {
        let expected: Vec<i64> = (1..=values.len() as i64).collect();
        assert_eq!(values, expected, "key {id} arrived out of order");
    }
    run.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_record_too_large_stops_with_a_clear_error_and_is_not_confirmed() {
    let (db, client) = database("kafka_large").await;
    exec(
        &client,
        "CREATE TABLE blobs (id int PRIMARY KEY, body text)",
    )
    .await;
    let config = kafka_config(
        &db,
        "klarge",
        "[kafka.properties]\n\"message.max.bytes\" = \"20000\"",
    );
    let run = start(config, &client).await;
    exec(&client, "INSERT INTO blobs VALUES (1, 'small')").await;
    exec(&client, "INSERT INTO blobs VALUES (2, repeat('x', 50000))").await;
    let before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    let result = tokio::time::timeout(Duration::from_secs(30), run.task).await;
    let error = match result {
        Ok(Ok(Err(error))) => error.to_string(),
        other => panic!("expected the connector to stop with an error, got {other:?}"),
    };
    assert!(
        error.contains("more than Kafka accepts") && error.contains("max.message.bytes"),
        "{error}"
    );
    let confirmed = confirmed(&client, "tidemark_klarge").await;
    let before: tidemark::domain::lsn::Lsn = before.parse().unwrap_or_default();
    assert!(
        confirmed < before,
        "the failed transaction was confirmed ({confirmed} >= {before})"
    );
    drop(run.stop);
}

/// A topic deleted under a running connector: its next records cannot be delivered. The
/// producer never lets the broker recreate it with the broker's defaults; the connector
/// stops naming the topic and the remedy, with nothing after the last delivered
/// transaction confirmed. Started again, tidemark creates the topic and delivers the rest.
#[tokio::test]
async fn a_topic_deleted_under_a_running_connector_stops_it_and_nothing_after_is_confirmed() {
    let (db, client) = database("kafka_deleted").await;
    exec(&client, "CREATE TABLE gone (id int PRIMARY KEY)").await;
    let config = kafka_config(&db, "kdeleted", "partitions = 2");
    let bootstrap = config
        .kafka
        .as_ref()
        .map(|k| k.brokers.clone())
        .unwrap_or_default();
    let topic = "kdeleted.public.gone";
    let run = start(config.clone(), &client).await;
    exec(&client, "INSERT INTO gone VALUES (1)").await;
    consume(&bootstrap, topic, 1).await;
    common::kafka::delete_topic(&bootstrap, topic).await;
    let before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    exec(&client, "INSERT INTO gone VALUES (2)").await;
    let result = tokio::time::timeout(Duration::from_secs(120), run.task).await;
    let error = match result {
        Ok(Ok(Err(error))) => error.to_string(),
        other => panic!("expected the connector to stop with an error, got {other:?}"),
    };
    assert!(
        error.contains(topic) && error.contains("does not exist any more"),
        "{error}"
    );
    let confirmed = confirmed(&client, "tidemark_kdeleted").await;
    let before: tidemark::domain::lsn::Lsn = before.parse().unwrap_or_default();
    assert!(
        confirmed <= before,
        "the undelivered transaction (written after {before}) was confirmed ({confirmed})"
    );
    drop(run.stop);
    // Started again: the topic is created anew and the row sent again.
    let again = start(config, &client).await;
    let records = consume(&bootstrap, topic, 1).await;
    assert_eq!(
        records[0].value.as_ref().map(|v| v["after"]["id"].clone()),
        Some(serde_json::json!(2))
    );
    again.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A tmpfs of `mib` MiB mounted at `path` (unmounted when dropped): a disk that fills up.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("{e}"));
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap_or_else(|e| panic!("running mount: {e}"));
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed: this test needs root (CI runs as root) to give the broker a small disk",
            path.display()
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Fills the disk with 1 MiB files until it is full, then frees `keep_mib` of them.
    fn fill(&self, keep_mib: usize) {
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut files = Vec::new();
        loop {
            let file = self.path.join(format!("filler-{}", files.len()));
            if std::fs::write(&file, &chunk).is_err() {
                let _ = std::fs::remove_file(&file);
                break;
            }
            files.push(file);
        }
        for file in files.iter().rev().take(keep_mib) {
            std::fs::remove_file(file).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Removes the filler files.
    fn free(&self) {
        for entry in std::fs::read_dir(&self.path).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("filler-"))
            {
                std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A broker whose disk fills up under a running connector (at least once): Kafka takes
/// its only log directory offline and halts, which tidemark, like any client, sees as an
/// outage: it waits, with nothing confirmed past what Kafka acknowledged. Space freed and
/// the broker started again on its log directory, every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_disk_fills_up_is_waited_out_with_nothing_lost() {
    const ROWS: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let disk = SmallDisk::mount(&dir.path().join("disk"), 96);
    let node_dir = disk.path.join("kafka");
    let mut node = tokio::task::spawn_blocking(move || {
        tidemark::testing::KafkaNode::start(&node_dir, tidemark::testing::KafkaOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = node.bootstrap().to_owned();
    let (db, client) = database("kafka_disk_full").await;
    exec(
        &client,
        "CREATE TABLE filled (id int PRIMARY KEY, body text)",
    )
    .await;
    let text = format!(
        "name = \"kfull\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{bootstrap}\"\nformat = \"json\"\npartitions = 2\n",
        db.url()
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let topic = "kfull.public.filled";
    let run = start(config, &client).await;
    exec(&client, "INSERT INTO filled VALUES (0, 'first')").await;
    consume(&bootstrap, topic, 1).await;
    disk.fill(3);
    exec(
        &client,
        &format!("INSERT INTO filled SELECT g, repeat('x', 300) FROM generate_series(1, {ROWS}) g"),
    )
    .await;
    let written: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    let written: tidemark::domain::lsn::Lsn = written.parse().unwrap_or_default();
    let log = node.dir().join("kafka.log");
    wait_until(
        "the broker takes its full disk offline",
        Duration::from_secs(90),
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log).is_ok_and(|text| {
                    text.contains("No space left on device") || text.contains("have failed")
                })
            }
        },
    )
    .await;
    // Waiting it out: the run goes on, the transaction is not confirmed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !run.task.is_finished(),
        "the connector waits a full disk out"
    );
    let confirmed = confirmed(&client, "tidemark_kfull").await;
    assert!(
        confirmed < written,
        "a transaction Kafka could not store was confirmed ({confirmed} >= {written})"
    );
    disk.free();
    let node = tokio::task::spawn_blocking(move || {
        node.kill();
        node.start_again().unwrap_or_else(|e| panic!("{e}"));
        node
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    common::kafka::consume_until(&bootstrap, topic, Duration::from_secs(180), |records| {
        distinct_filled_ids(records) == ROWS as usize + 1
    })
    .await;
    run.stop().await.unwrap_or_else(|e| panic!("{e}"));
    drop(node);
}

fn distinct_filled_ids(records: &[common::kafka::Record]) -> usize {
    records
        .iter()
        .filter_map(|r| r.value.as_ref().and_then(|v| v["after"]["id"].as_i64()))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// A value its Avro type cannot hold (`NaN` in a `numeric(10,2)`, which maps to an Avro
/// decimal; PostgreSQL refuses infinities in a constrained numeric) never halts the stream: it is written as null (the field is nullable),
/// the rows around it arrive as they are, and the slot is confirmed past it. (Debezium's
/// default decimal handling stops the connector on it, at the same WAL position on every
/// restart.)
#[tokio::test]
async fn a_value_outside_its_avro_type_is_written_as_null_and_the_stream_goes_on() {
    let (db, client) = database("kafka_nan").await;
    exec(
        &client,
        "CREATE TABLE prices (id int PRIMARY KEY, price numeric(10,2))",
    )
    .await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"knan\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"avro\"\n[registry]\nlisten = \"127.0.0.1:0\"\n",
        db.url(),
        broker.bootstrap
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    // Avro needs the registry: the embedded one, kept for the whole test.
    let (output, _registry, registry_url) = common::sink::avro_output(&config, "test").await;
    let (stop, task) = spawn_reader(config, output, &client).await;
    let run = KafkaRun { stop, task };
    exec(&client, "INSERT INTO prices VALUES (1, 9.99)").await;
    exec(&client, "INSERT INTO prices VALUES (2, 'NaN')").await;
    exec(&client, "INSERT INTO prices VALUES (3, 1.25)").await;
    let end = current_wal(&client).await;
    let records = consume(&broker.bootstrap, "knan.public.prices", 3).await;
    let settings =
        schema_registry_converter::async_impl::schema_registry::SrSettings::new(registry_url);
    let decoder = schema_registry_converter::async_impl::avro::AvroDecoder::new(settings);
    let mut prices = Vec::new();
    for record in &records {
        let decoded = decoder
            .decode(record.raw.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let apache_avro::types::Value::Record(fields) = decoded.value else {
            panic!("not a record: {:?}", decoded.value)
        };
        let after = fields
            .into_iter()
            .find(|(name, _)| name == "after")
            .map(|(_, v)| v);
        let Some(apache_avro::types::Value::Union(1, after)) = after else {
            panic!("no after: {after:?}")
        };
        let apache_avro::types::Value::Record(columns) = *after else {
            panic!("after is not a record")
        };
        prices.push(columns[1].1.clone());
    }
    let null = apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null));
    assert_eq!(prices[1], null, "NaN");
    assert_ne!(prices[0], null, "9.99");
    assert_ne!(prices[2], null, "1.25");
    wait_until(
        "the slot confirmed past the values",
        Duration::from_secs(30),
        || async { confirmed(&client, "tidemark_knan").await >= end },
    )
    .await;
    run.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn heartbeats_reach_the_heartbeat_topic_and_move_the_slot() {
    let (db, client) = database("kafka_heartbeat").await;
    exec(&client, "CREATE TABLE quiet (id int PRIMARY KEY)").await;
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "name = \"kbeat\"\n[source]\nurl = \"{}\"\nsnapshot = \"never\"\nstatus_interval_ms = 200\nheartbeat_interval_ms = 200\n\
         [kafka]\nbrokers = \"{}\"\nformat = \"json\"\n",
        db.url(),
        broker.bootstrap
    );
    let config = Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let run = start(config, &client).await;
    let beats = consume(&broker.bootstrap, "__debezium-heartbeat.kbeat", 3).await;
    assert_eq!(
        beats[0].key_json(),
        serde_json::json!({"serverName": "kbeat"})
    );
    assert!(
        beats[2]
            .value
            .as_ref()
            .and_then(|v| v["lsn"].as_u64())
            .unwrap_or(0)
            > 0
    );
    let stats = run.stop().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.events, 0, "heartbeats are not change events");
    let lag: i64 = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = 'tidemark_kbeat'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert!(
        lag < 4096,
        "slot {lag} bytes behind on an idle database with heartbeats"
    );
}

#[tokio::test]
async fn json_with_schemas_wraps_keys_and_values_like_debeziums_json_converter() {
    let (db, client) = database("kafka_schemas").await;
    exec(
        &client,
        "CREATE TABLE s (id bigint PRIMARY KEY, at timestamptz, tags text[], price numeric(8,2))",
    )
    .await;
    let run = start(kafka_config(&db, "kschema", "json_schemas = true"), &client).await;
    exec(
        &client,
        "INSERT INTO s VALUES (7, '2024-01-01 00:00:00+00', '{a,NULL}', 1.50)",
    )
    .await;
    exec(&client, "ALTER TABLE s ADD COLUMN note text; INSERT INTO s VALUES (8, NULL, NULL, NULL, 'new column');").await;
    let bootstrap = KafkaBroker::shared()
        .map(|b| b.bootstrap.clone())
        .unwrap_or_default();
    let records = consume(&bootstrap, "kschema.public.s", 2).await;
    run.stop().await.unwrap_or_else(|e| panic!("{e}"));
    // The fixed records are wrapped too: the ALTER's schema change, with a Connect schema
    // describing every payload field.
    let changes = consume(&bootstrap, "__tidemark-schema-changes.kschema", 1).await;
    let change = changes[0].value.clone().unwrap_or_default();
    assert_eq!(change["payload"]["table"], "s");
    assert_eq!(change["schema"]["type"], "struct");
    let described: Vec<&str> = change["schema"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["field"].as_str())
        .collect();
    let written: Vec<&str> = change["payload"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys().map(String::as_str))
        .collect();
    let mut sorted = described.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, written,
        "schema fields {described:?}, payload {change}"
    );
    assert_eq!(changes[0].key_json()["payload"]["table"], "s");

    let key = records[0].key_json();
    assert_eq!(key["payload"], serde_json::json!({"id": 7}));
    assert_eq!(key["schema"]["name"], "kschema.public.s.Key");
    assert_eq!(
        key["schema"]["fields"][0],
        serde_json::json!({"type": "int64", "optional": false, "field": "id"})
    );
    // The bytes, in JsonConverter's member order: what the partitioner hashes
    // (`debezium_compat` compares them with Debezium's own).
    assert_eq!(
        String::from_utf8_lossy(records[0].key.as_deref().unwrap_or_default()),
        concat!(
            r#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],"#,
            r#""optional":false,"name":"kschema.public.s.Key"},"payload":{"id":7}}"#
        )
    );
    let value = records[0].value.clone().unwrap_or_default();
    assert_eq!(value["schema"]["name"], "kschema.public.s.Envelope");
    assert_eq!(value["payload"]["op"], "c");
    assert_eq!(value["payload"]["after"]["id"], 7);
    assert_eq!(
        value["payload"]["after"]["at"],
        "2024-01-01T00:00:00.000000Z"
    );
    // numeric(8,2) as Debezium's default (decimal.handling.mode=precise) writes it: a
    // Connect Decimal, 150 at scale 2 as base64 big-endian bytes.
    assert_eq!(value["payload"]["after"]["price"], "AJY=");
    assert_eq!(
        value["schema"]["fields"][1]["fields"][3]["name"],
        "org.apache.kafka.connect.data.Decimal"
    );
    assert_eq!(
        value["schema"]["fields"][1]["fields"][3]["parameters"]["scale"],
        "2"
    );
    // Every payload field of `after` is described by the schema, in order.
    let described: Vec<String> = value["schema"]["fields"][1]["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    let present: Vec<String> = value["payload"]["after"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(described, vec!["id", "at", "tags", "price"]);
    assert_eq!(present.len(), described.len());
    // After DDL the schema follows the new relation.
    let changed = records[1].value.clone().unwrap_or_default();
    let fields = changed["schema"]["fields"][1]["fields"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(fields, 5);
    assert_eq!(changed["payload"]["after"]["note"], "new column");
}

#[tokio::test]
async fn logical_messages_go_to_the_configured_topic() {
    let (db, client) = database("kafka_messages").await;
    exec(&client, "CREATE TABLE m (id int PRIMARY KEY)").await;
    let run = start(
        kafka_config(&db, "kmsg", "message_topic = \"app.events\""),
        &client,
    )
    .await;
    exec(&client, "SELECT pg_logical_emit_message(true, 'orders', 'paid'); SELECT pg_logical_emit_message(false, 'audit', 'login')").await;
    let bootstrap = KafkaBroker::shared()
        .map(|b| b.bootstrap.clone())
        .unwrap_or_default();
    let records = consume(&bootstrap, "app.events", 2).await;
    run.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<serde_json::Value> = records.iter().filter_map(|r| r.value.clone()).collect();
    assert!(values.iter().all(|v| v["op"] == "m"));
    // Both statements ran in one implicit transaction: the non-transactional message is
    // decoded at once, the transactional one at the commit, so "audit" comes first.
    let prefixes: Vec<&str> = values
        .iter()
        .filter_map(|v| v["message"]["prefix"].as_str())
        .collect();
    assert_eq!(prefixes, vec!["audit", "orders"]);
    assert_eq!(values[0]["message"]["transactional"], false);
    assert_eq!(values[1]["message"]["transactional"], true);
    // Both carry a real time: the commit's, or for the non-transactional one (which has no
    // commit) the time it was read, never 0 (1970).
    let year_2020_ms = 1_577_836_800_000_i64;
    for value in &values {
        let ts = value["source"]["ts_ms"].as_i64().unwrap_or(0);
        assert!(ts > year_2020_ms, "source.ts_ms {ts} in {value}");
    }
    assert_eq!(
        values[1]["message"]["content"], "cGFpZA==",
        "content is base64 of 'paid'"
    );
}
