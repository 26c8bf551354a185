//! Debezium itself, as the oracle of the compatibility tests and the baseline of the
//! benches: its PostgreSQL connector in its embedded engine, on a test database, writing
//! every record it produces to a file, or counting them.
//!
//! The jars come from `TIDEMARK_TEST_DEBEZIUM_LIBS` (a directory of jars); without it,
//! `~/.cache/tidemark/debezium-<version>/libs`, where `scripts/ensure-deps.sh` resolves
//! [`DEBEZIUM_VERSION`] from `tests/jvm/debezium/pom.xml`. The harness,
//! `tests/jvm/debezium/DebeziumRecords.java`, runs with Java's single-file source launcher.
//! It keeps its offsets in memory: every run starts with the connector's snapshot (unless
//! the settings say `snapshot.mode=no_data`). [`drain_debezium`] runs the benches'
//! baseline, `tests/jvm/debezium/DebeziumDrain.java`: the same connector, its records
//! serialised and discarded, timed in the JVM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;

use serde_json::Value as Json;

use super::TestDatabase;

/// The Debezium version of `tests/jvm/debezium/pom.xml`.
pub const DEBEZIUM_VERSION: &str = "3.6.1.Final";

/// Why Debezium could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DebeziumError {
    /// The jars or `java` are not there.
    #[error(
        "no Debezium for the compatibility tests: {0}; run `NEED_DEBEZIUM=1 source scripts/ensure-deps.sh` (it resolves Debezium {DEBEZIUM_VERSION} from Maven Central), or set TIDEMARK_TEST_DEBEZIUM_LIBS to a directory of its jars"
    )]
    Missing(String),
    /// The engine failed, or did not go quiet in time.
    #[error("Debezium's engine: {0}")]
    Run(String),
}

/// One record Debezium produced.
#[derive(Debug, Clone)]
pub struct DebeziumRecord {
    /// Topic.
    pub topic: String,
    /// The key as Kafka Connect's `JsonConverter` writes it with `schemas.enable=true`.
    pub key: Json,
    /// That key's bytes, as the text `JsonConverter` wrote (`None` without a key): what
    /// Kafka's partitioner hashes and compaction compares.
    pub key_text: Option<String>,
    /// The value likewise (`null` for a tombstone).
    pub value: Json,
    /// The key with `schemas.enable=false`.
    pub key_plain: Json,
    /// That key's bytes, as the text `JsonConverter` wrote (`None` without a key).
    pub key_plain_text: Option<String>,
    /// The value with `schemas.enable=false`.
    pub value_plain: Json,
    /// Headers, in order: name, and the value's text as Kafka Connect's default header
    /// converter (`SimpleHeaderConverter`) writes it: strings as they are, a struct (the
    /// key-change headers) as compact JSON without a schema.
    pub headers: Vec<(String, String)>,
}

/// Runs Debezium's PostgreSQL connector on `db` with `settings` over the defaults (the
/// database's connection, `plugin.name=pgoutput`, offsets in memory), until it has produced
/// records and then none for `idle`, or `timeout` has passed. `during` runs once the
/// connector is up (after its first record), so a workload can be streamed.
pub async fn run_debezium<F, Fut>(
    db: &TestDatabase,
    settings: &BTreeMap<String, String>,
    idle: Duration,
    timeout: Duration,
    during: F,
) -> Result<Vec<DebeziumRecord>, DebeziumError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (mut command, dir) = harness("DebeziumRecords.java", db, settings)?;
    let out = dir.path().join("records.jsonl");
    let mut child = command
        .arg(&out)
        .arg(idle.as_millis().to_string())
        .arg(timeout.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DebeziumError::Run(format!("starting java: {e}")))?;
    // The workload runs once the connector has produced its first record.
    let started = std::time::Instant::now();
    while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
        if started.elapsed() > timeout {
            return Err(DebeziumError::Run("no record before the timeout".into()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DebeziumError::Run(format!(
                "exited with {status} before its first record"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    during().await;
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| DebeziumError::Run(e.to_string()))?;
    if let Some(error) = failure("the harness", &output) {
        return Err(error);
    }
    let text = std::fs::read_to_string(&out).map_err(|e| DebeziumError::Run(e.to_string()))?;
    text.lines()
        .map(|line| {
            let mut record: Json = serde_json::from_str(line)
                .map_err(|e| DebeziumError::Run(format!("a line of the harness: {e}")))?;
            let take = |record: &mut Json, name: &str| {
                record.get_mut(name).map(Json::take).unwrap_or(Json::Null)
            };
            let headers = match take(&mut record, "headers") {
                Json::Array(items) => items
                    .into_iter()
                    .map(|mut h| {
                        let key = take(&mut h, "key").as_str().unwrap_or_default().to_owned();
                        let value = take(&mut h, "value")
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        (key, value)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok(DebeziumRecord {
                topic: take(&mut record, "topic")
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                key: take(&mut record, "key"),
                key_text: take(&mut record, "key_text").as_str().map(str::to_owned),
                value: take(&mut record, "value"),
                key_plain: take(&mut record, "key_plain"),
                key_plain_text: take(&mut record, "key_plain_text")
                    .as_str()
                    .map(str::to_owned),
                value_plain: take(&mut record, "value_plain"),
                headers,
            })
        })
        .collect()
}

/// The command that runs the harness `tests/jvm/debezium/<file>` on Debezium's jars with
/// the connector's properties (written to a scratch directory, returned to be kept while
/// the command runs) as its first argument.
fn harness(
    file: &str,
    db: &TestDatabase,
    settings: &BTreeMap<String, String>,
) -> Result<(tokio::process::Command, tempfile::TempDir), DebeziumError> {
    let (mut command, dir) = java_harness(file)?;
    let properties = dir.path().join("connector.properties");
    write_properties(&properties, db, settings)?;
    command.arg(properties);
    Ok((command, dir))
}

/// The command that runs the harness `tests/jvm/debezium/<file>` on Debezium's jars, and a
/// scratch directory for its files.
fn java_harness(file: &str) -> Result<(tokio::process::Command, tempfile::TempDir), DebeziumError> {
    java_harness_with(file, &[])
}

/// [`java_harness`] with more jar directories on the class path.
fn java_harness_with(
    file: &str,
    more: &[PathBuf],
) -> Result<(tokio::process::Command, tempfile::TempDir), DebeziumError> {
    let libs = libs()?;
    let java = super::process::java()
        .ok_or_else(|| DebeziumError::Missing("java is not in PATH or JAVA_HOME".into()))?;
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jvm/debezium")
        .join(file);
    let dir =
        tempfile::tempdir().map_err(|e| DebeziumError::Run(format!("a scratch directory: {e}")))?;
    let mut command = tokio::process::Command::new(java);
    command
        .arg("-cp")
        .arg(
            std::iter::once(&libs)
                .chain(more)
                .map(|dir| format!("{}/*", dir.display()))
                .collect::<Vec<_>>()
                .join(":"),
        )
        .arg(source)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok((command, dir))
}

/// A record after Debezium's `ExtractNewRecordState` ([`unwrap_with_debezium`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrapped {
    /// Topic.
    pub topic: String,
    /// The key, as `JsonConverter` writes it with schemas (`null`: none).
    pub key: Json,
    /// The flattened value likewise (`null`: a tombstone).
    pub value: Json,
    /// Whether the transform dropped the record.
    pub dropped: bool,
}

/// Passes `records` (topic, key, value; key and value as `JsonConverter` writes them with
/// schemas, `null` for none) through Debezium's own `ExtractNewRecordState` transform with
/// its default settings (`tests/jvm/debezium/Unwrap.java`), as a Kafka Connect sink using
/// it would read them.
pub async fn unwrap_with_debezium(
    records: &[(String, Json, Json)],
) -> Result<Vec<Unwrapped>, DebeziumError> {
    let lines = run_jsonl(
        "Unwrap.java",
        &[],
        &[],
        "ExtractNewRecordState",
        record_lines(records),
    )
    .await?;
    Ok(lines
        .into_iter()
        .map(|mut record| {
            let mut take = |name: &str| record.get_mut(name).map(Json::take).unwrap_or(Json::Null);
            Unwrapped {
                topic: take("topic").as_str().unwrap_or_default().to_owned(),
                key: take("key"),
                value: take("value"),
                dropped: take("dropped").as_bool().unwrap_or(false),
            }
        })
        .collect())
}

/// `{"topic", "key", "value"}` lines of `records` (topic, key, value).
fn record_lines(records: &[(String, Json, Json)]) -> Vec<Json> {
    records
        .iter()
        .map(|(topic, key, value)| serde_json::json!({"topic": topic, "key": key, "value": value}))
        .collect()
}

/// Runs the harness `file` (on Debezium's jars and `more`, with `args` after its input and
/// output files) on `lines`, one JSON line each in a file, and returns the lines it wrote;
/// `what` names it in errors.
async fn run_jsonl(
    file: &str,
    more: &[PathBuf],
    args: &[&str],
    what: &str,
    lines: Vec<Json>,
) -> Result<Vec<Json>, DebeziumError> {
    let (mut command, dir) = java_harness_with(file, more)?;
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let mut text = String::new();
    for line in lines {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&input, text).map_err(|e| DebeziumError::Run(e.to_string()))?;
    let output = command
        .arg(&input)
        .arg(&out)
        .args(args)
        .output()
        .await
        .map_err(|e| DebeziumError::Run(format!("starting java: {e}")))?;
    if let Some(error) = failure(what, &output) {
        return Err(error);
    }
    let text = std::fs::read_to_string(&out).map_err(|e| DebeziumError::Run(e.to_string()))?;
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .map_err(|e| DebeziumError::Run(format!("a line of {file}: {e}")))
        })
        .collect()
}

/// A record as a Kafka Connect worker with an Avro converter would register and write it
/// ([`avro_with_connect`]): Avro schemas (JSON) and Avro binary without framing.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectAvro {
    /// Topic.
    pub topic: String,
    /// The key's Avro schema (`null`: no key).
    pub key_schema: Json,
    /// The key's Avro binary.
    pub key: Option<Vec<u8>>,
    /// The value's Avro schema (`null`: a tombstone).
    pub value_schema: Json,
    /// The value's Avro binary.
    pub value: Option<Vec<u8>>,
}

/// Passes `records` (topic, key, value as `JsonConverter` writes them with schemas) through
/// Kafka Connect's Avro translation (Apicurio Registry's `AvroData`, forked from
/// Confluent's, defaults; `tests/jvm/debezium/ConnectToAvro.java`): what a worker with an
/// Avro converter registers and writes for them. Its jars: `TIDEMARK_TEST_AVRO_DATA_LIBS`,
/// else `~/.cache/tidemark/avro-data-<version>/libs` (`scripts/ensure-deps.sh` with
/// `NEED_DEBEZIUM=1`).
pub async fn avro_with_connect(
    records: &[(String, Json, Json)],
) -> Result<Vec<ConnectAvro>, DebeziumError> {
    let lines = run_jsonl(
        "ConnectToAvro.java",
        &[avro_data_libs()?],
        &[],
        "Kafka Connect's Avro translation",
        record_lines(records),
    )
    .await?;
    let binary = |value: Json| -> Result<Option<Vec<u8>>, DebeziumError> {
        value
            .as_str()
            .map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| DebeziumError::Run(format!("ConnectToAvro.java's base64: {e}")))
            })
            .transpose()
    };
    lines
        .into_iter()
        .map(|mut record| {
            let mut take = |name: &str| record.get_mut(name).map(Json::take).unwrap_or(Json::Null);
            Ok(ConnectAvro {
                topic: take("topic").as_str().unwrap_or_default().to_owned(),
                key_schema: take("key_schema"),
                key: binary(take("key"))?,
                value_schema: take("value_schema"),
                value: binary(take("value"))?,
            })
        })
        .collect()
}

/// Reads Avro records as a Kafka Connect sink with an Avro converter would: each record's
/// key and value (Avro schema JSON and Avro binary, no framing; `None`: absent) through
/// Kafka Connect's Avro translation (Apicurio's `AvroData`) into Connect data, returned as
/// `JsonConverter` writes it with schemas (topic, key, value; `null` where absent). A record
/// the translation refuses is an error: a Connect Avro consumer could not read it.
pub async fn connect_from_avro(
    records: &[ConnectAvro],
) -> Result<Vec<(String, Json, Json)>, DebeziumError> {
    let b64 = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_deref()
            .map(|b| Json::String(base64::engine::general_purpose::STANDARD.encode(b)))
            .unwrap_or(Json::Null)
    };
    let lines = records
        .iter()
        .map(|r| {
            serde_json::json!({"topic": r.topic, "key_schema": r.key_schema, "key": b64(&r.key),
                "value_schema": r.value_schema, "value": b64(&r.value)})
        })
        .collect();
    let lines = run_jsonl(
        "ConnectToAvro.java",
        &[avro_data_libs()?],
        &["back"],
        "Kafka Connect's Avro translation, reading",
        lines,
    )
    .await?;
    Ok(lines
        .into_iter()
        .map(|mut record| {
            let mut take = |name: &str| record.get_mut(name).map(Json::take).unwrap_or(Json::Null);
            (
                take("topic").as_str().unwrap_or_default().to_owned(),
                take("key"),
                take("value"),
            )
        })
        .collect())
}

/// The jars of Apicurio's `AvroData` and Apache Avro (`tests/jvm/avro-data/pom.xml`).
pub(crate) fn avro_data_libs() -> Result<PathBuf, DebeziumError> {
    jar_dir(
        "TIDEMARK_TEST_AVRO_DATA_LIBS",
        &format!("avro-data-{AVRO_DATA_VERSION}"),
        &format!("apicurio-registry-utils-converter-{AVRO_DATA_VERSION}.jar"),
        "; run scripts/ensure-deps.sh with NEED_DEBEZIUM=1",
    )
}

/// The version of Apicurio Registry's `AvroData` [`avro_with_connect`] runs
/// (`tests/jvm/avro-data/pom.xml`).
pub const AVRO_DATA_VERSION: &str = "2.6.13.Final";

/// Writes the connector's properties to `path`: `settings` over the defaults (the
/// database's connection, `plugin.name=pgoutput`, offsets in memory).
fn write_properties(
    path: &std::path::Path,
    db: &TestDatabase,
    settings: &BTreeMap<String, String>,
) -> Result<(), DebeziumError> {
    let url = url::Url::parse(&db.url()).map_err(|e| DebeziumError::Run(e.to_string()))?;
    let mut all: BTreeMap<String, String> = [
        ("name", "tidemark-oracle".to_string()),
        (
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector".into(),
        ),
        (
            "offset.storage",
            "org.apache.kafka.connect.storage.MemoryOffsetBackingStore".into(),
        ),
        ("offset.flush.interval.ms", "60000".into()),
        (
            "database.hostname",
            url.host_str().unwrap_or("127.0.0.1").into(),
        ),
        ("database.port", url.port().unwrap_or(5432).to_string()),
        ("database.user", url.username().into()),
        ("database.password", "unused".into()),
        ("database.dbname", url.path().trim_start_matches('/').into()),
        ("plugin.name", "pgoutput".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    all.extend(settings.clone());
    let text: String = all
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\")))
        .collect();
    std::fs::write(path, text).map_err(|e| DebeziumError::Run(e.to_string()))
}

/// How Debezium drained a backlog ([`drain_debezium`]).
#[derive(Debug, Clone, Copy)]
pub struct DebeziumDrained {
    /// Change records it produced.
    pub records: u64,
    /// From the engine's start (the JVM already up) to the last record.
    pub start_to_last: Duration,
    /// From the first record to the last.
    pub first_to_last: Duration,
    /// The JVM's CPU time (every thread) from the first record to the last.
    pub cpu_first_to_last: Duration,
    /// The JVM's CPU time from its start to the last record (start-up and JIT included).
    pub cpu_total: Duration,
}

/// Runs Debezium's PostgreSQL connector on `db` with `settings` (as [`run_debezium`]) until
/// it has produced `records` change records, each serialised by Kafka Connect's
/// `JsonConverter` without schemas and discarded (`tests/jvm/debezium/DebeziumDrain.java`),
/// and returns its timings: the baseline of the drain and snapshot benches.
pub async fn drain_debezium(
    db: &TestDatabase,
    settings: &BTreeMap<String, String>,
    records: u64,
    timeout: Duration,
) -> Result<DebeziumDrained, DebeziumError> {
    let (mut command, _dir) = harness("DebeziumDrain.java", db, settings)?;
    let output = command
        .arg(records.to_string())
        .arg(timeout.as_millis().to_string())
        .output()
        .await
        .map_err(|e| DebeziumError::Run(format!("starting java: {e}")))?;
    if let Some(error) = failure("the drain harness", &output) {
        return Err(error);
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let timings: Json = serde_json::from_str(line.trim())
        .map_err(|e| DebeziumError::Run(format!("the harness's timings {line:?}: {e}")))?;
    let seconds = |name: &str| -> Result<Duration, DebeziumError> {
        timings
            .get(name)
            .and_then(Json::as_f64)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| DebeziumError::Run(format!("no {name} in {line:?}")))
    };
    Ok(DebeziumDrained {
        records: timings
            .get("records")
            .and_then(Json::as_u64)
            .unwrap_or_default(),
        start_to_last: seconds("start_to_last_s")?,
        first_to_last: seconds("first_to_last_s")?,
        cpu_first_to_last: seconds("cpu_first_to_last_s")?,
        cpu_total: seconds("cpu_total_s")?,
    })
}

/// The error of a harness run that failed: `what`, its exit status and its last 30 lines
/// of stderr; none when it succeeded.
fn failure(what: &str, output: &std::process::Output) -> Option<DebeziumError> {
    if output.status.success() {
        return None;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
    Some(DebeziumError::Run(format!(
        "{what} exited with {}: {}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

fn libs() -> Result<PathBuf, DebeziumError> {
    jar_dir(
        "TIDEMARK_TEST_DEBEZIUM_LIBS",
        &format!("debezium-{DEBEZIUM_VERSION}"),
        &format!("debezium-connector-postgres-{DEBEZIUM_VERSION}.jar"),
        "",
    )
}

/// A directory of jars: `env` when set, else `~/.cache/tidemark/<cached>/libs`, where
/// `scripts/ensure-deps.sh` resolves them; it must hold `jar`. `remedy` is added to the
/// error's own when it does not.
pub(super) fn jar_dir(
    env: &str,
    cached: &str,
    jar: &str,
    remedy: &str,
) -> Result<PathBuf, DebeziumError> {
    let libs = match std::env::var_os(env) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(format!(".cache/tidemark/{cached}/libs")))
            .ok_or_else(|| DebeziumError::Missing("HOME is not set".into()))?,
    };
    if !libs.join(jar).is_file() {
        return Err(DebeziumError::Missing(format!(
            "no {jar} in {}{remedy}",
            libs.display()
        )));
    }
    Ok(libs)
}
