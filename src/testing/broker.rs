//! Apache Kafka for tests, benches and drills: the real broker (KRaft, combined broker and
//! controller), run with `java` from jars resolved out of Maven Central.
//!
//! - [`KafkaBroker::shared`]: one node per test process, on free ports, with replication
//!   factor 1 for the internal topics so that transactions work on it.
//! - [`KafkaNode`]: a node of the caller's own, optionally advertising another address (a
//!   [`super::TcpProxy`] in front of it), that can be SIGKILLed and started again on the same
//!   log directory.
//! - [`KafkaCluster`]: three nodes, each a controller and a broker, with default replication
//!   factor 3 and `min.insync.replicas = 2`, for leader and coordinator failover drills.
//!
//! The jars come from `TIDEMARK_TEST_KAFKA_LIBS` (a directory of jars); `scripts/ensure-deps.sh`
//! resolves [`KAFKA_VERSION`] there (`~/.cache/tidemark/kafka-<version>/libs`) from
//! `tests/jvm/kafka/pom.xml`. `java` is taken from `JAVA_HOME` or `PATH`.
//! `TIDEMARK_TEST_KAFKA_BROKERS` points the shared broker at an existing cluster instead, and
//! `TIDEMARK_TEST_CONTAINERS=1` at a container ([`super::containers`]).
//!
//! Start-up cost is what matters in the test suite, where each test is a process with a
//! broker of its own: a node's log directory is formatted once per machine into a template
//! (`kafka-storage format` is a JVM start of its own) and copied, and test nodes run the JVM
//! with the client compiler only (about 2 s of CPU to start instead of 4).
//! [`KafkaOptions::for_throughput`] keeps the full JIT for benches.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

mod cluster;

pub use cluster::KafkaCluster;

/// The Apache Kafka version `scripts/ensure-deps.sh` resolves (`tests/jvm/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.4.0";

/// The cluster id every test node is formatted with (any 22-character base64 string).
const CLUSTER_ID: &str = "dGlkZW1hcmstdGVzdHMtMQ";

/// Partitions of the internal offsets and transaction-state topics of test nodes.
const INTERNAL_PARTITIONS: i32 = 8;

/// Where the shared brokers of test processes keep their directories.
const ROOT: &str = "/tmp/tidemark-test-kafka";

/// Why no broker could be provided.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Java or Apache Kafka's jars are not installed.
    #[error(
        "no Kafka broker for the tests: {0}; run `NEED_BROKER=1 source scripts/ensure-deps.sh` (it resolves Apache Kafka {KAFKA_VERSION} from Maven Central), or set TIDEMARK_TEST_KAFKA_LIBS to a directory of its jars, or TIDEMARK_TEST_KAFKA_BROKERS to a running cluster"
    )]
    Missing(String),
    /// It did not start, or a request about its state failed.
    #[error("the test broker: {0}")]
    Start(String),
}

/// A running broker shared by the tests of one process.
#[derive(Debug)]
pub struct KafkaBroker {
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
}

static BROKER: OnceLock<Result<KafkaBroker, BrokerError>> = OnceLock::new();

impl KafkaBroker {
    /// The broker of this process, started on first use.
    pub fn shared() -> Result<&'static KafkaBroker, BrokerError> {
        BROKER
            .get_or_init(|| start_shared(false))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The broker of this process for benches: the JVM with its full JIT and a 1 GiB heap
    /// ([`KafkaOptions::for_throughput`]) when this call starts it.
    pub fn shared_for_benches() -> Result<&'static KafkaBroker, BrokerError> {
        BROKER
            .get_or_init(|| start_shared(true))
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn start_shared(for_throughput: bool) -> Result<KafkaBroker, BrokerError> {
    if super::containers::requested() {
        let bootstrap = super::containers::kafka().map_err(BrokerError::Start)?;
        wait_for_brokers(&bootstrap, 1, Duration::from_secs(60))?;
        return Ok(KafkaBroker { bootstrap });
    }
    if let Ok(brokers) = std::env::var("TIDEMARK_TEST_KAFKA_BROKERS") {
        wait_for_brokers(&brokers, 1, Duration::from_secs(30))?;
        return Ok(KafkaBroker { bootstrap: brokers });
    }
    remove_stale_dirs();
    let dir = PathBuf::from(ROOT).join(std::process::id().to_string());
    let options = KafkaOptions {
        for_throughput,
        ..KafkaOptions::default()
    };
    let node = KafkaNode::start(&dir, options)?;
    let bootstrap = node.bootstrap().to_owned();
    // The node lives as long as the process (its JVM has the process's death signal).
    std::mem::forget(node);
    Ok(KafkaBroker { bootstrap })
}

/// Removes the directories of shared brokers whose test process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            // SAFETY: signal 0 only checks that the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// How a node is started.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    /// The address (`host:port`) the broker advertises to clients, for example a
    /// [`super::TcpProxy`] in front of it; its own listener when `None`.
    pub advertised: Option<String>,
    /// The port the broker listener binds on 127.0.0.1 (the one a proxy forwards to); a
    /// free one when `None`.
    pub listen_port: Option<u16>,
    /// Broker properties added to (or replacing) the defaults, e.g.
    /// `("transaction.max.timeout.ms", "10000")`.
    pub properties: Vec<(String, String)>,
    /// Run the JVM with its full JIT and a larger heap (benches), instead of the client
    /// compiler alone, which starts faster (tests).
    pub for_throughput: bool,
}

/// Java and the broker's jars.
#[derive(Debug, Clone)]
struct Distribution {
    java: PathBuf,
    classpath: String,
}

fn distribution() -> Result<Distribution, BrokerError> {
    let libs = match std::env::var_os("TIDEMARK_TEST_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(|home| {
                PathBuf::from(home).join(format!(".cache/tidemark/kafka-{KAFKA_VERSION}/libs"))
            })
            .ok_or_else(|| BrokerError::Missing("HOME is not set".into()))?,
    };
    let has_broker = std::fs::read_dir(&libs)
        .map_err(|e| BrokerError::Missing(format!("{}: {e}", libs.display())))?
        .flatten()
        .any(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with("kafka_2.13-") && name.ends_with(".jar"))
        });
    if !has_broker {
        return Err(BrokerError::Missing(format!(
            "no kafka_2.13-*.jar in {}",
            libs.display()
        )));
    }
    let java = super::process::java()
        .ok_or_else(|| BrokerError::Missing("java is not in PATH or JAVA_HOME".into()))?;
    Ok(Distribution {
        java,
        classpath: format!("{}/*", libs.display()),
    })
}

/// One Apache Kafka node (broker and controller in one JVM), stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct KafkaNode {
    id: u32,
    port: u16,
    advertised: String,
    dir: PathBuf,
    options: KafkaOptions,
    distribution: Distribution,
    pid: Option<u32>,
}

impl KafkaNode {
    /// Starts a single node in `dir` (created; its log directory is `dir/data`), on free
    /// ports, with replication factor 1 everywhere, and waits until it answers metadata
    /// requests through its advertised address.
    pub fn start(dir: &Path, options: KafkaOptions) -> Result<KafkaNode, BrokerError> {
        let controller_port = free_port()?;
        let mut node = Self::prepare(1, dir, &[(1, controller_port)], 1, options)?;
        node.start_again()?;
        Ok(node)
    }

    /// Writes the node's configuration and log directory without starting it.
    fn prepare(
        id: u32,
        dir: &Path,
        voters: &[(u32, u16)],
        replication: usize,
        options: KafkaOptions,
    ) -> Result<KafkaNode, BrokerError> {
        let distribution = distribution()?;
        let port = match options.listen_port {
            Some(port) => port,
            None => free_port()?,
        };
        let controller_port = voters
            .iter()
            .find(|(voter, _)| *voter == id)
            .map(|(_, port)| *port)
            .ok_or_else(|| BrokerError::Start(format!("node {id} is not among the voters")))?;
        let advertised = options
            .advertised
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{port}"));
        std::fs::create_dir_all(dir)
            .map_err(|e| BrokerError::Start(format!("creating {}: {e}", dir.display())))?;
        let quorum: Vec<String> = voters
            .iter()
            .map(|(voter, port)| format!("{voter}@127.0.0.1:{port}"))
            .collect();
        let min_isr = replication.min(2);
        let mut properties: Vec<(String, String)> = [
            ("process.roles", "broker,controller".to_owned()),
            ("node.id", id.to_string()),
            ("controller.quorum.voters", quorum.join(",")),
            (
                "listeners",
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
            ),
            ("advertised.listeners", format!("PLAINTEXT://{advertised}")),
            ("controller.listener.names", "CONTROLLER".to_owned()),
            ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
            ),
            ("log.dirs", dir.join("data").display().to_string()),
            ("num.partitions", "1".to_owned()),
            ("default.replication.factor", replication.to_string()),
            ("min.insync.replicas", min_isr.to_string()),
            ("offsets.topic.replication.factor", replication.to_string()),
            (
                "offsets.topic.num.partitions",
                INTERNAL_PARTITIONS.to_string(),
            ),
            (
                "transaction.state.log.replication.factor",
                replication.to_string(),
            ),
            ("transaction.state.log.min.isr", min_isr.to_string()),
            (
                "transaction.state.log.num.partitions",
                INTERNAL_PARTITIONS.to_string(),
            ),
            (
                "share.coordinator.state.topic.replication.factor",
                replication.to_string(),
            ),
            ("share.coordinator.state.topic.min.isr", min_isr.to_string()),
            ("group.initial.rebalance.delay.ms", "0".to_owned()),
            ("unclean.leader.election.enable", "false".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        for (key, value) in &options.properties {
            match properties.iter_mut().find(|(existing, _)| existing == key) {
                Some(entry) => entry.1 = value.clone(),
                None => properties.push((key.clone(), value.clone())),
            }
        }
        let text: String = properties
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        write(&dir.join("server.properties"), &text)?;
        write(
            &dir.join("log4j2.properties"),
            &format!(
                "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=FILE\n\
                 appender.file.type=File\nappender.file.name=FILE\n\
                 appender.file.fileName={}\nappender.file.append=true\n\
                 appender.file.layout.type=PatternLayout\n\
                 appender.file.layout.pattern=[%d] %p %m (%c)%n\n\
                 logger.state.name=state.change.logger\nlogger.state.level=WARN\n",
                dir.join("kafka.log").display()
            ),
        )?;
        let node = KafkaNode {
            id,
            port,
            advertised,
            dir: dir.to_owned(),
            options,
            distribution,
            pid: None,
        };
        node.format()?;
        Ok(node)
    }

    /// Formats the log directory (KRaft needs it before the first start): a copy of a
    /// template formatted once per machine for this node id, Kafka version and cluster id.
    fn format(&self) -> Result<(), BrokerError> {
        let data = self.dir.join("data");
        if data.join("meta.properties").is_file() {
            return Ok(());
        }
        let template = std::env::temp_dir().join(format!(
            "tidemark-kafka-format-{KAFKA_VERSION}-{CLUSTER_ID}-node{}",
            self.id
        ));
        if !template.join("meta.properties").is_file() {
            let partial = template.with_extension(format!("partial{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&partial);
            let config = self.dir.join("format.properties");
            let server = std::fs::read_to_string(self.dir.join("server.properties"))
                .map_err(|e| BrokerError::Start(format!("reading server.properties: {e}")))?;
            let with_partial: String = server
                .lines()
                .map(|line| {
                    if line.starts_with("log.dirs=") {
                        format!("log.dirs={}\n", partial.display())
                    } else {
                        format!("{line}\n")
                    }
                })
                .collect();
            write(&config, &with_partial)?;
            let out = Command::new(&self.distribution.java)
                .arg("-cp")
                .arg(&self.distribution.classpath)
                .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
                .args([
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                ])
                .arg(CLUSTER_ID)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| BrokerError::Start(format!("running kafka-storage format: {e}")))?;
            if !out.status.success() {
                return Err(BrokerError::Start(format!(
                    "kafka-storage format failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            // Another process may have made the template meanwhile; either copy is good.
            if std::fs::rename(&partial, &template).is_err() {
                let _ = std::fs::remove_dir_all(&partial);
            }
        }
        let _ = std::fs::remove_dir_all(&data);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .map_err(|e| BrokerError::Start(format!("copying the formatted log dir: {e}")))?;
        if !status.success() {
            return Err(BrokerError::Start(format!(
                "cp -a {} {} failed",
                template.display(),
                data.display()
            )));
        }
        Ok(())
    }

    /// Starts the node's JVM (again, after [`Self::kill`]) on the same ports and log
    /// directory, and waits until it answers metadata requests.
    pub fn start_again(&mut self) -> Result<(), BrokerError> {
        self.launch()?;
        wait_for_brokers(&self.advertised, 1, Duration::from_secs(60))
            .map_err(|e| BrokerError::Start(format!("{e}\n{}", self.log_tail())))
    }

    /// Starts the JVM without waiting for it to serve.
    fn launch(&mut self) -> Result<(), BrokerError> {
        if self.pid.is_some() {
            return Err(BrokerError::Start(format!(
                "node {} is already running",
                self.id
            )));
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("java.out"))
            .map_err(|e| BrokerError::Start(format!("java.out: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        let mut command = Command::new(&self.distribution.java);
        if self.options.for_throughput {
            command.args(["-Xms1g", "-Xmx1g", "-XX:+UseG1GC"]);
        } else {
            command.args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ]);
        }
        command
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(&self.distribution.classpath)
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let pid = super::process::spawn_for_process_lifetime(
            command,
            libc::SIGKILL,
            &format!("kafka-{}", self.id),
        )
        .map_err(BrokerError::Start)?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Kills the JVM with SIGKILL (no controlled shutdown: partitions it leads lose their
    /// leader until the controller notices) and waits until it is gone.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// Stops the JVM with SIGTERM (a controlled shutdown: leadership moves first) and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&mut self, signal: i32) {
        if let Some(pid) = self.pid.take()
            && !super::process::stop_process(pid, signal, Duration::from_secs(60))
        {
            super::process::stop_process(pid, libc::SIGKILL, Duration::from_secs(10));
        }
    }

    /// Freezes the JVM (SIGSTOP): its connections stay open and nothing is answered, as an
    /// overloaded broker. [`Self::resume`] lets it go on.
    pub fn pause(&self) {
        self.send_signal(libc::SIGSTOP);
    }

    /// Lets a paused JVM go on (SIGCONT).
    pub fn resume(&self) {
        self.send_signal(libc::SIGCONT);
    }

    fn send_signal(&self, signal: i32) {
        if let Some(pid) = self.pid {
            // SAFETY: a plain signal to the JVM this node started (reaped only by its thread).
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Whether its JVM is running (started and not killed).
    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }

    /// The node id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The address clients bootstrap from (the advertised one).
    pub fn bootstrap(&self) -> &str {
        &self.advertised
    }

    /// The port its broker listener binds on 127.0.0.1 (the one a proxy forwards to).
    pub fn listen_port(&self) -> u16 {
        self.port
    }

    /// Its directory: `server.properties`, the log directory `data/`, the broker's log
    /// `kafka.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        let path = self.dir.join("kafka.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        let java = std::fs::read_to_string(self.dir.join("java.out")).unwrap_or_default();
        format!("last lines of {}:\n{tail}\n{java}", path.display())
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on 127.0.0.1, as a [`BrokerError`].
fn free_port() -> Result<u16, BrokerError> {
    super::process::free_port().map_err(|e| BrokerError::Start(format!("finding a free port: {e}")))
}

fn write(path: &Path, text: &str) -> Result<(), BrokerError> {
    std::fs::write(path, text)
        .map_err(|e| BrokerError::Start(format!("writing {}: {e}", path.display())))
}

/// Waits until metadata through `bootstrap` lists at least `brokers` brokers.
fn wait_for_brokers(bootstrap: &str, brokers: usize, limit: Duration) -> Result<(), BrokerError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let started = Instant::now();
    loop {
        let seen = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(metadata) if metadata.brokers().len() >= brokers => return Ok(()),
            Ok(metadata) => format!("{} of {brokers} brokers", metadata.brokers().len()),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > limit {
            return Err(BrokerError::Start(format!(
                "no metadata with {brokers} brokers from {bootstrap} after {limit:?}: {seen}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::cluster::coordinator_partition;

    #[test]
    fn coordinator_partition_follows_java_string_hash_code() {
        // Java: "tidemark-crash".hashCode() is -838691107, and 838691107 % 8 is 3;
        // "tidemark-failover".hashCode() is 1626656252, % 8 is 4.
        assert_eq!(coordinator_partition("tidemark-crash"), 3);
        assert_eq!(coordinator_partition("tidemark-failover"), 4);
        assert_eq!(coordinator_partition(""), 0);
    }
}
