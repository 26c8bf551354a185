//! Debezium's JDBC sink connector in Kafka Connect's standalone worker, as a Debezium
//! consumer pointed at tidemark's topics: it reads Debezium's envelope itself (no unwrap
//! transform) with `JsonConverter` and `schemas.enable=true`, and upserts and deletes into
//! a PostgreSQL database.
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

/// A running Kafka Connect standalone worker with Debezium's JDBC sink connector.
pub struct JdbcSink {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl JdbcSink {
    /// Starts the worker on `bootstrap`, sinking the topics matching `topics_regex` into
    /// `target` (tables named after the source table, `${source.table}`; upserts by the
    /// record key; deletes applied; tables created and evolved by the connector).
    pub fn start(
        bootstrap: &str,
        topics_regex: &str,
        target: &TestDatabase,
    ) -> Result<JdbcSink, DebeziumError> {
        let libs = libs()?;
        let java = super::process::java()
            .ok_or_else(|| DebeziumError::Missing("java is not in PATH or JAVA_HOME".into()))?;
        let dir = tempfile::tempdir()
            .map_err(|e| DebeziumError::Run(format!("a scratch directory: {e}")))?;
        let port = super::free_port().map_err(|e| DebeziumError::Run(format!("a port: {e}")))?;
        let (db_port, name) = (target.cluster.port, &target.name);
        let worker = format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=true\n\
             value.converter.schemas.enable=true\n\
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
            .arg(format!("{}/*", libs.display()))
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

/// The directory of the connector's jars (see the module docs).
fn libs() -> Result<PathBuf, DebeziumError> {
    super::debezium::jar_dir(
        "TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS",
        &format!("debezium-jdbc-{DEBEZIUM_JDBC_VERSION}"),
        &format!("debezium-connector-jdbc-{DEBEZIUM_JDBC_VERSION}.jar"),
        " (Debezium's JDBC sink: NEED_DEBEZIUM=1 source scripts/ensure-deps.sh resolves tests/jvm/jdbc-sink/pom.xml, or set TIDEMARK_TEST_DEBEZIUM_JDBC_LIBS)",
    )
}
