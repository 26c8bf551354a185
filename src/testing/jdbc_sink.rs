//! Debezium's JDBC sink connector in Kafka Connect's standalone worker, as a Debezium
//! consumer pointed at tidemark's topics: it reads Debezium's envelope itself (no unwrap
//! transform), and upserts and deletes into a PostgreSQL database.
//!
//! The worker reads keys and values either with `JsonConverter` and `schemas.enable=true`
//! (Kafka Connect's default) or, for Avro topics, with `RegistryAvroConverter`
//! (`tests/jvm/jdbc-sink/RegistryAvroConverter.java`, compiled with `javac` when the worker
//! starts): Confluent's wire framing and a schema fetched by id from a Confluent-compatible
//! registry, turned into Connect data by Kafka Connect's Avro translation (Apicurio's
//! `AvroData`, forked from Confluent's). It stands in for Confluent's `AvroConverter`,
//! which Maven Central does not serve.
//!
//! The jars come from `TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS` (a directory of jars); without it,
//! `~/.cache/tidemark/debezium-jdbc-<version>/libs`, where `scripts/ensure-deps.sh`
//! (`NEED_DEBEZIUM=1`) resolves `tests/jvm/jdbc-sink/pom.xml`. The worker keeps its offsets
//! in a scratch file and serves its REST API on a free local port; it is killed when the
//! [`JdbcSink`] is dropped.

use std::path::PathBuf;
use std::process::Stdio;

use super::TestDatabase;
use super::debezium::DebeziumError;

/// The version of `tests/jvm/jdbc-sink/pom.xml` (the newest Maven Central serves here).
pub const DEBEZIUM_JDBC_VERSION: &str = "3.5.0.Final";

/// How the worker reads records' keys and values.
#[derive(Debug, Clone, Copy)]
pub enum SinkConverter<'a> {
    /// `JsonConverter` with `schemas.enable=true`.
    JsonWithSchemas,
    /// Confluent-framed Avro, schemas from the registry at `registry_url`
    /// (`RegistryAvroConverter`, see the module docs).
    Avro {
        /// The registry's base URL.
        registry_url: &'a str,
    },
}

/// A running Kafka Connect standalone worker with Debezium's JDBC sink connector.
pub struct JdbcSink {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl JdbcSink {
    /// Starts the worker on `bootstrap`, reading with `converter` and sinking the topics
    /// matching `topics_regex` into `target` (tables named after the source table,
    /// `${source.table}`; upserts by the record key; deletes applied; tables created and
    /// evolved by the connector).
    pub fn start(
        bootstrap: &str,
        topics_regex: &str,
        target: &TestDatabase,
        converter: SinkConverter<'_>,
    ) -> Result<JdbcSink, DebeziumError> {
        let libs = libs()?;
        let java = super::process::java()
            .ok_or_else(|| DebeziumError::Missing("java is not in PATH or JAVA_HOME".into()))?;
        let dir = tempfile::tempdir()
            .map_err(|e| DebeziumError::Run(format!("a scratch directory: {e}")))?;
        let port = super::free_port().map_err(|e| DebeziumError::Run(format!("a port: {e}")))?;
        let (db_port, name) = (target.cluster.port, &target.name);
        let mut class_path = format!("{}/*", libs.display());
        let converters = match converter {
            SinkConverter::JsonWithSchemas => {
                "key.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 key.converter.schemas.enable=true\n\
                 value.converter.schemas.enable=true\n"
                    .to_owned()
            }
            SinkConverter::Avro { registry_url } => {
                let classes = dir.path().join("classes");
                let avro = super::debezium::avro_data_libs()?;
                class_path = format!("{}:{class_path}:{}/*", classes.display(), avro.display());
                compile_converter(&java, &class_path, &classes)?;
                format!(
                    "key.converter=dev.tidemark.tests.RegistryAvroConverter\n\
                     value.converter=dev.tidemark.tests.RegistryAvroConverter\n\
                     key.converter.schema.registry.url={registry_url}\n\
                     value.converter.schema.registry.url={registry_url}\n"
                )
            }
        };
        let worker = format!(
            "bootstrap.servers={bootstrap}\n\
             {converters}\
             offset.storage.file.filename={}\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:{port}\n\
             plugin.discovery=only_scan\n",
            dir.path().join("offsets").display()
        );
        let connector = format!(
            "name=tidemark-jdbc-sink\n\
             connector.class=io.debezium.connector.jdbc.JdbcSinkConnector\n\
             tasks.max=1\n\
             topics.regex={}\n\
             connection.url=jdbc:postgresql://127.0.0.1:{db_port}/{name}\n\
             connection.username=postgres\n\
             connection.password=postgres\n\
             insert.mode=upsert\n\
             delete.enabled=true\n\
             primary.key.mode=record_key\n\
             schema.evolution=basic\n\
             collection.name.format=${{source.table}}\n\
             use.time.zone=UTC\n",
            topics_regex.replace('\\', "\\\\")
        );
        let write = |file: &str, text: &str| {
            std::fs::write(dir.path().join(file), text)
                .map_err(|e| DebeziumError::Run(format!("writing {file}: {e}")))
        };
        write("worker.properties", &worker)?;
        write("connector.properties", &connector)?;
        let log = std::fs::File::create(dir.path().join("worker.log"))
            .map_err(|e| DebeziumError::Run(format!("the worker's log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| DebeziumError::Run(format!("the worker's log: {e}")))?;
        let child = std::process::Command::new(java)
            .arg("-cp")
            .arg(&class_path)
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .arg(dir.path().join("worker.properties"))
            .arg(dir.path().join("connector.properties"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| DebeziumError::Run(format!("starting java: {e}")))?;
        Ok(JdbcSink { child, dir })
    }

    /// Whether the worker is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the worker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Lines of the worker's log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("worker.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for JdbcSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compiles `RegistryAvroConverter.java` into `classes` with the JDK's `javac` (beside
/// `java`) on `class_path`.
fn compile_converter(
    java: &std::path::Path,
    class_path: &str,
    classes: &std::path::Path,
) -> Result<(), DebeziumError> {
    let javac = java.with_file_name("javac");
    if !javac.is_file() {
        return Err(DebeziumError::Missing(format!(
            "javac is not beside {} (the Avro converter is compiled when the worker starts; install a JDK, not only a JRE)",
            java.display()
        )));
    }
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jvm/jdbc-sink/RegistryAvroConverter.java");
    let out = std::process::Command::new(&javac)
        .arg("-cp")
        .arg(class_path)
        .arg("-d")
        .arg(classes)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DebeziumError::Run(format!("starting javac: {e}")))?;
    if !out.status.success() {
        return Err(DebeziumError::Run(format!(
            "javac {}: {}\n{}",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// The directory of the connector's jars (see the module docs).
fn libs() -> Result<PathBuf, DebeziumError> {
    super::debezium::jar_dir(
        "TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS",
        &format!("debezium-jdbc-{DEBEZIUM_JDBC_VERSION}"),
        &format!("debezium-connector-jdbc-{DEBEZIUM_JDBC_VERSION}.jar"),
        " (Debezium's JDBC sink: NEED_DEBEZIUM=1 source scripts/ensure-deps.sh resolves tests/jvm/jdbc-sink/pom.xml, or set TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS)",
    )
}
